"""Templates: the vault's overrides win, the sandbox holds, and every failure names file and line."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path, PurePosixPath

import pytest
from ruamel.yaml import YAML

from actadd_notes._resources import shipped_dir
from actadd_notes.errors import TemplateError
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.notes import Note
from actadd_notes.vault.templates import TemplateRenderer, fmt, md_cell, wikilink, yaml_str

SHIPPED = ("journal-entry.md.j2", "daily-note.md.j2", "experiment-spec.md.j2", "sweep-comparison.md.j2")


@pytest.fixture
def overrides(tmp_path):
    folder = tmp_path / "Templates" / "actadd-notes"
    folder.mkdir(parents=True)
    return folder


def test_shipped_templates_exist():
    for name in SHIPPED:
        assert (shipped_dir("templates") / name).is_file()


def test_journal_entry_is_one_line():
    renderer = TemplateRenderer()
    line = renderer.render(
        "journal-entry.md.j2",
        time="14:05",
        spec_link="Experiments/love-hate-sweep.md",
        result_link="[[Results/love-hate-sweep 2024-01-02|results]]",
        outcome="best: layer 6, coeff 4 (sentiment 0.83 vs 0.21)",
    )
    assert line == (
        "- 14:05 [[Experiments/love-hate-sweep]] → [[Results/love-hate-sweep 2024-01-02|results]]: "
        "best: layer 6, coeff 4 (sentiment 0.83 vs 0.21)\n"
    )
    failed = renderer.render("journal-entry.md.j2", time="14:05", spec_link="x", result_link=None, outcome="failed")
    assert failed == "- 14:05 [[x]]: failed\n"


def test_daily_note_template():
    text = TemplateRenderer().render(
        "daily-note.md.j2", date=date(2024, 1, 2), title="2024-01-02", journal_heading="Lab journal"
    )
    note = Note.parse(text, Path("2024-01-02.md"))
    assert note.properties["date"] == date(2024, 1, 2)
    assert "## Lab journal" in note.body


def test_experiment_spec_scaffold_is_a_valid_spec():
    text = TemplateRenderer().render(
        "experiment-spec.md.j2", name="my sweep", model="embedded", created=date(2024, 1, 2)
    )
    note = Note.parse(text, Path("Experiments/my sweep.md"))
    props = note.properties
    assert props["type"] == "actadd-experiment"
    assert props["created"] == date(2024, 1, 2)
    assert (props["prompt_add"], props["prompt_sub"], props["model"]) == ("Love", "Hate", "embedded")
    assert props["prompts"] == ["I hate you because"]
    assert "## Prompts" in note.body and "## Notes" in note.body
    explained = {line.split("`")[1] for line in note.body.splitlines() if line.startswith("- `")}
    assert set(props) - {"temperature", "top_p", "freq_penalty", "prompt_sub"} <= explained | {"prompt_add"}
    from actadd_notes.experiments.spec import parse_spec

    spec, _ = parse_spec(props, note.body)
    assert spec.layers == (2, 4, 6, 8, 10) and spec.prompts == ("I hate you because",)


def test_experiment_spec_quotes_an_awkward_model_id():
    text = TemplateRenderer().render(
        "experiment-spec.md.j2", name="n", model='org/model: "v2" # x', created=date.today()
    )
    assert Note.parse(text, Path("n.md")).properties["model"] == 'org/model: "v2" # x'


def test_sweep_comparison_table():
    runs = [
        dict(
            link="Results/love-hate-sweep 2024-01-02.md",
            model="embedded",
            method="actadd",
            best_layer=6,
            best_coeff=4.0,
            objective="sentiment",
            baseline_value=0.2,
            search_value=0.834567,
            confirmed_difference=0.41,
            confirmed_ci_low=0.2,
            confirmed_ci_high=0.62,
            control_difference=0.35,
            effect="detected",
            scope="held-out prompts",
            prompts=40,
            versus_prompting="steering better",
            date=date(2024, 1, 2),
        ),
        dict(
            link="[[Results/other|other]]",
            model="a|b",
            method=None,
            best_layer=None,
            best_coeff=None,
            objective="toxicity",
            baseline_value=0.1,
            search_value=None,
            confirmed_difference=None,
            confirmed_ci_low=None,
            confirmed_ci_high=None,
            control_difference=None,
            effect="none",
            scope=None,
            prompts=1,
            versus_prompting=None,
            date="2024-01-03",
        ),
    ]
    text = TemplateRenderer().render("sweep-comparison.md.j2", runs=runs, runs_view="![[Results/Steering runs.base]]")
    rows = [line for line in text.splitlines() if line.startswith("| [[")]
    assert rows == [
        "| [[Results/love-hate-sweep 2024-01-02]] | embedded | actadd | 6 | 4 | sentiment | 0.2 | 0.8346 "
        "| +0.410 [+0.200, +0.620] | +0.350 | detected | held-out prompts | 40 | steering better | 2024-01-02 |",
        r"| [[Results/other\|other]] | a\|b | — | — | — | toxicity | 0.1 | — | — | — | none | — | 1 | — | 2024-01-03 |",
    ]
    note = Note.parse(text, Path("c.md"))
    assert note.properties["type"] == "actadd-comparison"
    assert note.body.lstrip().startswith("![[Results/Steering runs.base]]")
    assert "|\n\n## Notes\n%% begin notes %%\n\n%% end notes %%\n" in text  # the user's region, empty
    assert text.endswith("%% end notes %%\n")
    assert "![[" not in TemplateRenderer().render("sweep-comparison.md.j2", runs=runs)  # no view, no embed


def test_override_wins_and_others_fall_back(overrides):
    (overrides / "journal-entry.md.j2").write_text("* {{ time }} {{ outcome }}\n")
    renderer = TemplateRenderer(overrides)
    assert renderer.render("journal-entry.md.j2", time="09:00", outcome="ok", spec_link="x") == "* 09:00 ok\n"
    assert "## Lab journal" in renderer.render("daily-note.md.j2", date=date(2024, 1, 2), journal_heading="Lab journal")


def test_missing_override_folder_uses_shipped(tmp_path):
    renderer = TemplateRenderer(tmp_path / "does-not-exist")
    assert renderer.render("journal-entry.md.j2", time="1", spec_link="a", result_link=None, outcome="o")


def test_for_vault_uses_the_configured_folder(tmp_path):
    (tmp_path / ".obsidian").mkdir()
    (tmp_path / "actadd-notes.yaml").write_text("templates_folder: My templates\n")
    (tmp_path / "My templates").mkdir()
    (tmp_path / "My templates" / "daily-note.md.j2").write_text("custom {{ date }}\n")
    renderer = TemplateRenderer.for_vault(VaultConfig.load(tmp_path))
    assert renderer.render("daily-note.md.j2", date=date(2024, 1, 2)) == "custom 2024-01-02\n"


def test_example_vault_override_renders():
    renderer = TemplateRenderer.for_vault(VaultConfig.load(shipped_dir("vault_example")))
    line = renderer.render(
        "journal-entry.md.j2", time="14:05", spec_link="Experiments/love-hate-sweep", result_link=None, outcome="ok"
    )
    assert line.startswith("- 14:05 [[Experiments/love-hate-sweep]]") and line.count("\n") == 1
    assert line != TemplateRenderer().render(
        "journal-entry.md.j2", time="14:05", spec_link="Experiments/love-hate-sweep", result_link=None, outcome="ok"
    )


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ runs.__len__() }}",
        "{% set x = runs.append(1) %}{{ runs }}",
        "{{ runs.clear() }}",
    ],
)
def test_sandbox_blocks_python_internals_and_mutation(overrides, source):
    (overrides / "evil.md.j2").write_text(source)
    runs = [1, 2]
    with pytest.raises(TemplateError, match=r"evil\.md\.j2"):
        TemplateRenderer(overrides).render("evil.md.j2", runs=runs)
    assert runs == [1, 2]


def test_syntax_error_names_file_and_line(overrides):
    (overrides / "broken.md.j2").write_text("line one\nline two\n{{ x + }}\nline four\n")
    with pytest.raises(TemplateError) as caught:
        TemplateRenderer(overrides).render("broken.md.j2", x=1)
    assert f"{overrides / 'broken.md.j2'}:3:" in str(caught.value)


def test_undefined_variable_names_file_and_line(overrides):
    (overrides / "undef.md.j2").write_text("fine {{ a }}\n{{ missing }}\n")
    with pytest.raises(TemplateError, match="'missing' is undefined") as caught:
        TemplateRenderer(overrides).render("undef.md.j2", a=1)
    assert f"{overrides / 'undef.md.j2'}:2:" in str(caught.value)


def test_error_in_an_included_template_names_the_included_file(overrides):
    (overrides / "outer.md.j2").write_text("outer\n{% include 'inner.md.j2' %}\n")
    (overrides / "inner.md.j2").write_text("a\nb\n{{ 1 // 0 }}\n")
    with pytest.raises(TemplateError, match="ZeroDivisionError") as caught:
        TemplateRenderer(overrides).render("outer.md.j2")
    assert f"{overrides / 'inner.md.j2'}:3:" in str(caught.value)


def test_filter_error_names_file_and_line(overrides):
    (overrides / "link.md.j2").write_text("\n{{ target | wikilink }}\n")
    with pytest.raises(TemplateError, match=r"link\.md\.j2:2: ValueError: cannot link"):
        TemplateRenderer(overrides).render("link.md.j2", target="a|b")


def test_missing_template():
    with pytest.raises(TemplateError, match=r"nope\.md\.j2: no such template"):
        TemplateRenderer().render("nope.md.j2")


@pytest.mark.parametrize(
    ("target", "alias", "expected"),
    [
        ("Experiments/x.md", None, "[[Experiments/x]]"),
        (PurePosixPath("Results/run 1.md"), None, "[[Results/run 1]]"),
        ("Results/run", "best | run [1]", "[[Results/run|best run 1]]"),
        ("[[already|linked]]", "ignored", "[[already|linked]]"),
        ("@turner2024#Method", None, "[[@turner2024#Method]]"),
    ],
)
def test_wikilink(target, alias, expected):
    assert wikilink(target, alias) == expected


@pytest.mark.parametrize(
    "value",
    ["plain", "yes", "no", "null", "~", "1.0", "0x1F", "2024-01-02", "[[Note|alias]]", "a: b # c", "- item",
     '"quoted" and \\ backslash', "line\nbreak\ttab", "bell\x07 nel\x85 ls\u2028 bom\ufeff", "'single'", "", "é 日本"],
)  # fmt: skip
def test_yaml_str_round_trips_as_a_string(value):
    assert YAML(typ="safe").load(f"key: {yaml_str(value)}\n") == {"key": value}
    assert YAML(typ="rt").load(f"key: {yaml_str(value)}\n")["key"] == value


def test_fmt_and_md_cell():
    assert fmt(0.123456) == "0.1235"
    assert fmt(4.0) == "4"
    assert fmt(12345.6, ".1f") == "12345.6"
    assert fmt(None) == "—"
    assert fmt(True) == "True"
    assert fmt("text") == "text"
    assert md_cell("[[a|b]]\nsecond  line") == r"[[a\|b]] second line"


def test_render_takes_datetime_values():
    line = TemplateRenderer().render(
        "journal-entry.md.j2", time=datetime(2024, 1, 2, 9, 5).strftime("%H:%M"), spec_link="x", outcome="o"
    )
    assert line == "- 09:05 [[x]]: o\n"
