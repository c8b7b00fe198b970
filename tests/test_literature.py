"""Literature notes: the rendered format against a real user's note, refreshes that keep the
user's words, experiment links, and creating notes for many citekeys at once."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from zotero_server import serve_zotero

from actadd_notes.errors import VaultError, ZoteroError
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.literature import (
    RefreshWouldDropText,
    citekeys_from_links,
    ensure_literature_notes,
    link_experiment,
    literature_link,
    literature_note_path,
    obsidian_tag,
    render_literature_note,
    write_literature_note,
)
from actadd_notes.vault.notes import Note
from actadd_notes.vault.templates import TemplateRenderer
from actadd_notes.zotero import Annotation, BetterBibTexSource, LocalApiSource, ZoteroItem

DATA = Path(__file__).parent / "data"
REFERENCE = (DATA / "literature-note-reference.md").read_text(encoding="utf-8")
TURNER = "turnerActivationAdditionSteering2024"
KONEN = "konenStyleVectorsSteering2024"
EXAMPLE_NOTE = Path(__file__).parent.parent / "vault_example" / "Literature" / f"@{TURNER}.md"
# The reference note was imported at this instant, in a CET/CEST zone (its annotations are CEST).
NOW = datetime(2024, 11, 25, 13, 54, 58, 603000, tzinfo=ZoneInfo("Europe/Berlin"))
LATER = datetime(2024, 12, 2, 9, 0, 0, 0, tzinfo=ZoneInfo("Europe/Berlin"))
EXPERIMENTS_BLOCK = ["## Experiments", "%% begin experiments %%", "", "%% end experiments %%", ""]
USER_NOTES = Note.parse(REFERENCE, Path("reference.md")).region("notes")
# what a user may also type in the persist block: headings there are not sections
USER_NOTES_WITH_HEADING = USER_NOTES + "\n\n## Inside the persist block\n```\n## in a code block\n```"


@pytest.fixture(scope="module")
def zotero_items() -> dict[str, ZoteroItem]:
    """Both papers as the local API serves them (the reference note's data, annotations included)."""
    with serve_zotero(prefix="/api") as server:
        source = LocalApiSource(base_url=server.url)
        return {citekey: source.find(citekey) for citekey in (TURNER, KONEN)}


@pytest.fixture
def turner(zotero_items) -> ZoteroItem:
    return zotero_items[TURNER]


@pytest.fixture
def config(tmp_path) -> VaultConfig:
    (tmp_path / ".obsidian").mkdir()
    return VaultConfig(root=tmp_path)


@pytest.fixture
def renderer() -> TemplateRenderer:
    return TemplateRenderer()


def _without_experiments(text: str) -> list[str]:
    lines = text.split("\n")
    at = lines.index("## Experiments")
    assert lines[at : at + len(EXPERIMENTS_BLOCK)] == EXPERIMENTS_BLOCK
    assert lines[at - 2 : at] == ["%% end notes %%", ""]  # right after the notes
    return lines[:at] + lines[at + len(EXPERIMENTS_BLOCK) :]


# ---------------------------------------------------------------------------- the format


def test_rendered_note_is_the_reference_note_line_for_line(renderer, turner):
    text = render_literature_note(renderer, turner, now=NOW, notes=USER_NOTES)

    assert _without_experiments(text) == REFERENCE.split("\n")


def test_new_note_has_empty_regions_and_parses_as_properties(renderer, turner):
    note = Note.parse(render_literature_note(renderer, turner, now=NOW), Path("n.md"))

    assert dict(note.properties) == {
        "category": "literaturenote",
        "tags": [
            "Computer_Science/Computation_and_Language",
            "Computer_Science/Machine_Learning",
            "recommended",
            "reading_complete",
            "generation_steering",
        ],
        "citekey": TURNER,
    }
    assert note.region("notes") == "" and note.region("experiments") == ""
    assert note.text().endswith("\n%% Import Date: 2024-11-25T13:54:58.603+01:00 %%\n")


def test_annotation_comments_multiline_text_and_group_links(renderer, zotero_items):
    konen = dataclasses.replace(zotero_items[KONEN], library_type="group", library_id="4242")
    two_lines = Annotation(
        key="X",
        type="underline",
        text="first line\nsecond line",
        color="#a28ae5",
        page_label="iv",
        attachment_key="P4R7T2V9",
        date_modified=datetime(2024, 1, 15, 12, 0, tzinfo=UTC),
    )
    image = Annotation(key="Y", type="image", color="#ffd400", page_label="7", attachment_key="P4R7T2V9")
    konen = dataclasses.replace(konen, annotations=(*konen.annotations, two_lines, image))

    text = render_literature_note(renderer, konen, now=NOW)

    annotations = text[text.index("## Annotations\n") :]
    assert annotations == (
        "## Annotations\n"
        '<mark style="background-color: #5fb236">Quote</mark>\n'
        "> layers 18-20 to work best\n"
        "> [Page 5](zotero://open-pdf/groups/4242/items/P4R7T2V9?page=5) 2024-10-01#14:25\n"
        "\n"
        "compare with ActAdd's choice of layer\n"
        "see [[@turnerActivationAdditionSteering2024]]\n"
        "\n"
        '<mark style="background-color: #a28ae5">Quote</mark>\n'
        "> first line\n"
        "> second line\n"
        "> [Page iv](zotero://open-pdf/groups/4242/items/P4R7T2V9?page=iv) 2024-01-15#13:00\n"
        "\n"
        '<mark style="background-color: #ffd400">Image</mark>\n'
        "> [Page 7](zotero://open-pdf/groups/4242/items/P4R7T2V9?page=7)\n"
        "\n"
        "\n\n\n"
        "%% Import Date: 2024-11-25T13:54:58.603+01:00 %%\n"
    )


def test_an_item_from_a_bbt_export_renders_without_annotations(renderer):
    item = BetterBibTexSource(DATA / "bbt-library.csl.json").find(KONEN)

    lines = render_literature_note(renderer, item, now=NOW).split("\n")

    assert lines[lines.index("> [!info]-") + 1] == "> **FirstAuthor**:: Konen, Kai  "
    assert "> **Author**:: Diallo, Diaoulé  " in lines
    after_annotations = lines[lines.index("## Annotations") + 1 :]
    assert after_annotations == ["", "", "", "%% Import Date: 2024-11-25T13:54:58.603+01:00 %%", ""]


def test_example_vault_note_is_what_the_template_renders(renderer, turner):
    """The shipped example is regenerated, not hand-edited: it cannot drift from the template."""
    assert EXAMPLE_NOTE.read_text(encoding="utf-8") == render_literature_note(
        renderer, turner, now=NOW, notes=USER_NOTES
    )


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("Computer Science - Computation and Language", "Computer_Science/Computation_and_Language"),
        ("reading_complete", "reading_complete"),
        ("#to read", "to_read"),
        ("Künstliche Intelligenz, KI", "Künstliche_Intelligenz_KI"),
        ("2024", ""),
        ("???", ""),
    ],
)
def test_zotero_tags_become_obsidian_tags(tag, expected):
    assert obsidian_tag(tag) == expected


# ---------------------------------------------------------------------------- names and links


def test_note_path_and_link(config):
    assert literature_note_path(config, TURNER) == config.root / "Literature" / f"@{TURNER}.md"
    assert literature_link(TURNER) == f"[[@{TURNER}]]"


@pytest.mark.parametrize("citekey", ["", "a|b", "a/b", "key#1", "a:b"])
def test_citekeys_that_cannot_name_a_note_are_refused(config, citekey):
    with pytest.raises(VaultError, match="cannot name a note"):
        literature_note_path(config, citekey)


def test_citekeys_from_links_accepts_every_spelling():
    values = [
        f"[[@{TURNER}]]",
        f"@{KONEN}",
        "plainKey2020",
        f"[[@{TURNER}|ActAdd]]",
        "[[Literature/@pathKey2021#Notes]]",
        "  ",
        None,
    ]

    assert citekeys_from_links(values) == [TURNER, KONEN, "plainKey2020", "pathKey2021"]
    assert citekeys_from_links(f"[[@{KONEN}|Style vectors]]") == [KONEN]
    assert citekeys_from_links(None) == []


# ---------------------------------------------------------------------------- writing and refreshing


def test_write_creates_the_note_once(config, renderer, turner):
    path = write_literature_note(config, renderer, turner, now=NOW)

    assert path == literature_note_path(config, TURNER)
    assert path.read_text(encoding="utf-8") == render_literature_note(renderer, turner, now=NOW)
    path.write_text(path.read_text(encoding="utf-8") + "my words\n", encoding="utf-8")

    write_literature_note(config, renderer, turner, now=LATER)  # no refresh: left alone

    assert path.read_text(encoding="utf-8").endswith("%% Import Date: 2024-11-25T13:54:58.603+01:00 %%\nmy words\n")


def _user_edits(text: str) -> str:
    """What a user does to a literature note in Obsidian."""
    text = text.replace("citekey: ", "aliases:\n  - ActAdd  # the paper's short name\nstatus: reading\ncitekey: ", 1)
    text = text.replace("generation_steering]", "generation_steering, to_reread]", 1)
    text = text.replace("%% begin notes %%\n\n", f"%% begin notes %%\n{USER_NOTES_WITH_HEADING}\n", 1)
    text = text.replace(
        "## Experiments\n",
        "## Summary\nSteer with the difference of two prompts.\n\n"
        "### Open questions\n- which layer?\n\n## Experiments\n",
        1,
    )
    return text


def test_refresh_with_unchanged_data_changes_nothing(config, renderer, turner):
    path = write_literature_note(config, renderer, turner, now=NOW)
    path.write_text(_user_edits(path.read_text(encoding="utf-8")), encoding="utf-8")
    link_experiment(config, TURNER, run_link="[[Results/love-1]]", line="- [[Results/love-1]]: layer 6, c=4")
    edited = path.read_bytes()

    write_literature_note(config, renderer, turner, refresh=True, now=NOW)

    assert path.read_bytes() == edited


def test_refresh_takes_zotero_changes_and_keeps_the_users(config, renderer, turner):
    path = write_literature_note(config, renderer, turner, now=NOW)
    follow_ups = "## Follow-ups\n- try layer 6\n```md\n## Notes\n```\n"  # a heading in code is not one
    path.write_text(_user_edits(path.read_text(encoding="utf-8")) + follow_ups, encoding="utf-8")
    link_experiment(config, TURNER, run_link="[[Results/love-1]]", line="- [[Results/love-1]]: layer 6, c=4")
    updated = dataclasses.replace(
        turner,
        abstract="A new abstract.",
        tags=(*turner.tags, "Computer Science - Artificial Intelligence"),
        annotations=turner.annotations[:1],
    )

    before = path.read_bytes()
    with pytest.raises(RefreshWouldDropText) as refused:  # the old abstract and annotations would go
        write_literature_note(config, renderer, updated, refresh=True, now=LATER)
    assert path.read_bytes() == before
    assert any("Reliably controlling" in line for line in refused.value.lines)
    assert "--force" in str(refused.value)

    write_literature_note(config, renderer, updated, refresh=True, force=True, now=LATER)

    text = path.read_text(encoding="utf-8")
    note = Note.parse(text, path)
    assert text.startswith(
        "---\ncategory: literaturenote\n"
        "tags: [Computer_Science/Computation_and_Language, Computer_Science/Machine_Learning, recommended, "
        "reading_complete, generation_steering, to_reread, Computer_Science/Artificial_Intelligence]\n"
        "aliases:\n  - ActAdd  # the paper's short name\nstatus: reading\n"
        f'citekey: "{TURNER}"\n---\n'
    )
    assert note.region("notes") == USER_NOTES_WITH_HEADING
    assert note.region("experiments") == "- [[Results/love-1]]: layer 6, c=4"
    assert "> ---\n> A new abstract.\n\n## Notes\n" in text
    assert text.count("<mark ") == 1
    assert "%% end notes %%\n\n## Summary\nSteer with the difference of two prompts.\n\n### Open questions\n" in text
    assert text.endswith(f"\n{follow_ups}%% Import Date: 2024-12-02T09:00:00.000+01:00 %%\n")
    assert text.count("%% Import Date") == 1


def test_refresh_after_renaming_the_notes_heading_keeps_one_notes_block(config, renderer, turner):
    path = write_literature_note(config, renderer, turner, now=NOW)
    text = _user_edits(path.read_text(encoding="utf-8")).replace("## Notes\n", "## My reading notes\n")
    path.write_text(text, encoding="utf-8")

    write_literature_note(config, renderer, turner, refresh=True, now=LATER)

    text = path.read_text(encoding="utf-8")
    assert text.count("%% begin notes %%") == text.count("%% end notes %%") == 1
    assert Note.parse(text, path).region("notes") == USER_NOTES_WITH_HEADING
    # the renamed heading is the user's now: it stays where it was, after the callout
    assert "size.\n\n## My reading notes\n\n## Summary\n" in text
    assert text.index("## Summary") < text.index("## Notes\n%% begin notes %%")


def test_refresh_restores_a_region_the_users_template_lacks(config, tmp_path, turner):
    overrides = tmp_path / "overrides"
    overrides.mkdir()
    (overrides / "literature-note.md.j2").write_text("---\ncitekey: {{ item.citekey }}\n---\n# {{ item.title }}\n")
    path = write_literature_note(config, TemplateRenderer(), turner, now=NOW)
    path.write_text(_user_edits(path.read_text(encoding="utf-8")), encoding="utf-8")

    write_literature_note(config, TemplateRenderer(overrides), turner, refresh=True, force=True, now=NOW)

    note = Note.read(path)
    assert note.region("notes") == USER_NOTES_WITH_HEADING
    assert note.body.startswith(f"# {turner.title}\n\n## Notes\n%% begin notes %%\n")


def test_refresh_never_overwrites_an_edit_saved_meanwhile(config, turner):
    path = write_literature_note(config, TemplateRenderer(), turner, now=NOW)

    class EditDuringRender(TemplateRenderer):
        """Obsidian saves the user's typing while the tool is re-rendering the note."""

        calls = 0

        def render(self, name: str, /, **context: object) -> str:
            self.calls += 1
            if self.calls == 1:  # the first render inside the compare-and-swap
                text = path.read_text(encoding="utf-8")
                path.write_text(text.replace("%% begin notes %%\n\n", "%% begin notes %%\n- typed meanwhile\n"))
            return super().render(name, **context)

    renderer = EditDuringRender()
    write_literature_note(config, renderer, turner, refresh=True, now=LATER)

    assert renderer.calls == 2  # re-read and re-rendered once
    assert Note.read(path).region("notes") == "- typed meanwhile"
    assert "2024-12-02T09:00:00.000+01:00" in path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "typed",
    [
        (
            "%% Import Date: 2024-11-25T13:54:58.603+01:00 %%\n",
            "%% Import Date: 2024-11-25T13:54:58.603+01:00 %%\nafter the date\n",
        ),
        ("## Annotations\n", "## Annotations\nmy remark among the annotations\n"),
        ("> **Type**:: preprint\n", "> **Type**:: preprint\n> **Status**:: read twice\n"),
    ],
    ids=["after the import date", "in annotations", "in the info callout"],
)
def test_refresh_refuses_to_drop_text_typed_outside_the_persist_blocks(config, renderer, turner, typed):
    path = write_literature_note(config, renderer, turner, now=NOW)
    old, new = typed
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    before = path.read_bytes()

    with pytest.raises(RefreshWouldDropText, match="--force"):
        write_literature_note(config, renderer, turner, refresh=True, now=LATER)

    assert path.read_bytes() == before
    write_literature_note(config, renderer, turner, refresh=True, force=True, now=LATER)
    assert new.splitlines()[-1] not in path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------- experiments


def test_link_experiment_is_idempotent_per_run(config, renderer, turner):
    path = write_literature_note(config, renderer, turner, now=NOW)

    link_experiment(config, TURNER, run_link="[[Results/love-1]]", line="- [[Results/love-1]]: running")
    link_experiment(config, TURNER, run_link="[[Results/love-2]]", line="- [[Results/love-2]]: layer 8")
    once = path.read_bytes()
    link_experiment(config, TURNER, run_link="[[Results/love-2]]", line="- [[Results/love-2]]: layer 8")
    assert path.read_bytes() == once
    link_experiment(config, TURNER, run_link="[[Results/love-1]]", line="- [[Results/love-1]]: layer 6, c=4")

    assert Note.read(path).region("experiments") == "- [[Results/love-1]]: layer 6, c=4\n- [[Results/love-2]]: layer 8"
    assert (
        "## Experiments\n%% begin experiments %%\n- [[Results/love-1]]: layer 6, c=4\n- [[Results/love-2]]: layer 8\n"
        "%% end experiments %%\n\n## Annotations\n"
    ) in path.read_text(encoding="utf-8")


def test_link_experiment_readds_a_deleted_region(config, renderer, turner):
    path = write_literature_note(config, renderer, turner, now=NOW)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("## Experiments\n%% begin experiments %%\n\n%% end experiments %%\n\n", ""))

    link_experiment(config, TURNER, run_link="[[Results/love-1]]", line="- [[Results/love-1]]")

    assert path.read_text(encoding="utf-8").endswith(
        "\n## Experiments\n%% begin experiments %%\n- [[Results/love-1]]\n%% end experiments %%\n"
    )


def test_link_experiment_needs_the_note(config):
    with pytest.raises(VaultError, match="no literature note for"):
        link_experiment(config, TURNER, run_link="[[Results/love-1]]", line="- [[Results/love-1]]")


def test_link_experiment_line_must_name_the_run(config):
    with pytest.raises(ValueError, match="containing it"):
        link_experiment(config, TURNER, run_link="[[Results/love-1]]", line="- another run")


# ---------------------------------------------------------------------------- many citekeys


class RecordingSource:
    """Wraps a real source and records what was asked of it."""

    def __init__(self, source: BetterBibTexSource) -> None:
        self.name = source.name
        self.source = source
        self.asked: list[str] = []

    def find(self, citekey: str) -> ZoteroItem:
        self.asked.append(citekey)
        return self.source.find(citekey)


def test_ensure_creates_missing_notes_and_reports_each_failure(config, renderer):
    source = RecordingSource(BetterBibTexSource(DATA / "bbt-library.json"))
    existing = literature_note_path(config, KONEN)
    existing.parent.mkdir(parents=True)
    existing.write_text("my own note\n", encoding="utf-8")

    results = ensure_literature_notes(config, renderer, [TURNER, "nobody2099", KONEN, "bad|key", TURNER], [source])

    assert list(results) == [TURNER, "nobody2099", KONEN, "bad|key"]
    assert results[TURNER] == literature_note_path(config, TURNER) and results[TURNER].is_file()
    assert results[KONEN] == existing and existing.read_text(encoding="utf-8") == "my own note\n"
    assert isinstance(results["nobody2099"], ZoteroError) and results["nobody2099"].item == "nobody2099"
    assert "bbt:bbt-library.json nobody2099: not in" in str(results["nobody2099"])
    assert isinstance(results["bad|key"], VaultError)
    assert source.asked == [TURNER, "nobody2099"]  # existing notes are not looked up
