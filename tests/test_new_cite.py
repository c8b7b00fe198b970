"""`actadd-notes new NAME --cite CITEKEY`: a spec that cites the paper and carries its open
questions, and the literature note listing the spec as planned. Real files in a copy of the
example vault; its Better BibTeX export (zotero/library.json) is the Zotero source."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from vaults import EXAMPLE_VAULT, KONEN, TURNER, body, example_vault, experiment_lines, props

from actadd_notes.cli import cli
from actadd_notes.errors import ZoteroError
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.notes import Note
from actadd_notes.vault.planning import experiment_line, open_questions, scaffold_spec

DATA = Path(__file__).parent / "data"
NOW = datetime(2025, 3, 4, 10, 30, 15, 123456)
QUESTIONS = [
    "the method is used on the relatively small model GPT-2-XL -> is it feasible on larger models such as Llama3? "
    "And can I access and manipulate the activations?",
    "the parameters (layer l and intervention strength c) where found with grid search -> could bayesian "
    "optimization be better?",
]


def invoke(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args])


def literature_note(vault: Path, citekey: str = TURNER) -> Path:
    return vault / "Literature" / f"@{citekey}.md"


# ------------------------------------------------------------------------- the questions
def test_the_open_questions_are_the_bullets_of_the_notes_block_that_end_in_a_question_mark():
    # the literature-note format our users have (Zotero Integration), as they wrote it
    assert open_questions(Note.read(DATA / "literature-note-reference.md")) == QUESTIONS


def test_questions_at_any_depth_in_any_list_style_and_nothing_outside_the_block(tmp_path):
    text = (
        "Is this a question outside the block?\n"
        "%% begin notes %%\n"
        "- a statement.\n"
        "- does layer 6 work?  \n"
        "\t- nested: and layer 8?\n"
        "* starred?\n"
        "1. numbered?\n"
        "- [ ] already a task?\n"
        "- [x] a done one?\n"
        "not a bullet?\n"
        "- a question? then more text\n"
        "%% end notes %%\n"
        "- after the block?\n"
    )
    note = Note.parse(text, tmp_path / "@x.md")
    assert open_questions(note) == [
        "does layer 6 work?",
        "nested: and layer 8?",
        "starred?",
        "numbered?",
        "already a task?",
        "a done one?",
    ]
    assert open_questions(Note.parse("# no notes block\n- why?\n", tmp_path / "@y.md")) == []


# ---------------------------------------------------------------------------- new --cite
def test_new_cite_scaffolds_a_spec_citing_the_paper_with_its_questions_as_a_checklist(example_vault):
    paper = literature_note(example_vault)
    before = Note.read(paper)

    result = invoke("new", "bayes vs grid", "--vault", example_vault, "--cite", TURNER)

    assert result.exit_code == 0, result.output
    spec = example_vault / "Experiments" / "bayes vs grid.md"
    assert result.stdout == f"{spec}\n"
    assert result.stderr == f"cites [[@{TURNER}]]: {paper}, 2 open questions\n"
    p = props(spec)
    assert (p["type"], p["status"], p["literature"]) == ("actadd-experiment", "draft", [f"[[@{TURNER}]]"])
    assert (
        f"\n## Open questions from [[@{TURNER}]]\n\n"
        f"The questions in [[@{TURNER}]]'s notes, to tick off as runs of this spec answer them:\n\n"
        f"- [ ] {QUESTIONS[0]}\n"
        f"- [ ] {QUESTIONS[1]}\n"
        "\n## Prompts\n"
    ) in body(spec)
    assert experiment_lines(example_vault) == ["- [[Experiments/bayes vs grid]] — planned"]
    # only the experiments region of the literature note changed
    after = Note.read(paper)
    assert after.text().replace(after.region("experiments"), "") == before.text().replace(
        before.region("experiments"), ""
    )


@pytest.mark.parametrize("written", [f"@{TURNER}", f"[[@{TURNER}]]"])
def test_cite_takes_a_citekey_as_obsidian_writes_it(example_vault, written):
    assert invoke("new", "love", "--vault", example_vault, "--cite", written).exit_code == 0
    assert props(example_vault / "Experiments" / "love.md")["literature"] == [f"[[@{TURNER}]]"]


def test_a_paper_without_a_note_is_imported_from_zotero_first(example_vault):
    assert not literature_note(example_vault, KONEN).exists()

    result = invoke("new", "style vectors", "--vault", example_vault, "--cite", KONEN, "--cite", TURNER)

    assert result.exit_code == 0, result.output
    imported = literature_note(example_vault, KONEN)
    assert result.stderr.splitlines() == [
        f"cites [[@{KONEN}]]: {imported} (imported from Zotero), 0 open questions",
        f"cites [[@{TURNER}]]: {literature_note(example_vault)}, 2 open questions",
    ]
    assert props(imported)["citekey"] == KONEN
    spec = example_vault / "Experiments" / "style vectors.md"
    assert props(spec)["literature"] == [f"[[@{KONEN}]]", f"[[@{TURNER}]]"]
    assert (
        f"[[@{KONEN}]]'s notes hold no open questions yet: its bullets that end in a question mark become a "
        "checklist here.\n"
    ) in body(spec)
    for citekey in (KONEN, TURNER):
        assert experiment_lines(example_vault, citekey) == ["- [[Experiments/style vectors]] — planned"]


def test_an_unknown_citekey_is_a_clear_error_and_nothing_is_written(example_vault):
    experiments = sorted((example_vault / "Experiments").iterdir())
    literature = sorted((example_vault / "Literature").iterdir())

    result = invoke("new", "ghost", "--vault", example_vault, "--cite", "nobodyGhostPaper2099")

    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # a message, no traceback
    assert result.stderr.startswith(
        "Error: [[@nobodyGhostPaper2099]]: no literature note Literature/@nobodyGhostPaper2099.md, "
        "and it could not be imported: nobodyGhostPaper2099: no Zotero source has it:\n"
    )
    assert sorted((example_vault / "Experiments").iterdir()) == experiments
    assert sorted((example_vault / "Literature").iterdir()) == literature


def test_the_zotero_error_comes_from_the_library_too(example_vault):
    with pytest.raises(ZoteroError, match=r"^\[\[@nobodyGhostPaper2099\]\]: no literature note"):
        scaffold_spec(VaultConfig.load(example_vault), "ghost", cite=["nobodyGhostPaper2099"], now=NOW)


def test_new_without_cite_is_as_before(example_vault):
    result = invoke("new", "wedding topic", "--vault", example_vault)
    assert result.exit_code == 0 and result.stderr == ""
    spec = example_vault / "Experiments" / "wedding topic.md"
    assert props(spec)["literature"] == []
    assert "literature: []\n---\n" in spec.read_text(encoding="utf-8")
    assert "Open questions" not in body(spec) and "- [ ]" not in body(spec)
    assert [line for line in body(spec).splitlines() if line.startswith("#")] == ["## Prompts", "## Notes"]
    assert experiment_lines(example_vault) == []


# ------------------------------------------------------------- the literature note's list
def test_each_spec_gets_its_own_line_next_to_the_runs(example_vault):
    config = VaultConfig.load(example_vault)
    paper = literature_note(example_vault)
    run = "- [[Results/love 20250304-103015-ab12|love 20250304-103015-ab12]] — sentiment +0.41"
    paper.write_text(paper.read_text().replace("%% begin experiments %%\n", f"%% begin experiments %%\n{run}\n"))

    love = scaffold_spec(config, "love", cite=[TURNER], now=NOW).path
    scaffold_spec(config, "love-hate", cite=[TURNER], now=NOW)
    assert experiment_lines(example_vault) == [
        run,
        "- [[Experiments/love]] — planned",
        "- [[Experiments/love-hate]] — planned",
    ]
    assert experiment_line(config, love) == ("[[Experiments/love]]", "- [[Experiments/love]] — planned")
    assert props(love)["created"] == datetime(2025, 3, 4, 10, 30, 15)


def test_a_vault_template_without_papers_still_gets_a_citing_spec(example_vault):
    shipped = (EXAMPLE_VAULT.parent / "templates" / "experiment-spec.md.j2").read_text(encoding="utf-8")
    old_style = shipped.split("literature: [")[0] + "literature: []  # papers\n---\n{{ name }}\n"
    (example_vault / "Templates" / "actadd-notes" / "experiment-spec.md.j2").write_text(old_style)

    planned = scaffold_spec(VaultConfig.load(example_vault), "old template", cite=[TURNER], now=NOW)

    assert props(planned.path)["literature"] == [f"[[@{TURNER}]]"]
    assert planned.path.read_text(encoding="utf-8").endswith(
        f'literature:  # papers\n  - "[[@{TURNER}]]"\n---\nold template\n'  # the template's comment kept
    )


def test_a_literature_note_that_cannot_take_the_line_is_a_warning_and_the_spec_stays(example_vault):
    paper = literature_note(example_vault)
    paper.write_text(paper.read_text().replace("%% end experiments %%", ""))

    result = invoke("new", "love", "--vault", example_vault, "--cite", TURNER)

    assert result.exit_code == 0, result.output
    assert (example_vault / "Experiments" / "love.md").is_file()
    assert f"warning: [[@{TURNER}]]: the spec was not listed in its literature note: " in result.stderr
    assert "has no `%% end experiments %%` after it" in result.stderr
