"""Notes keep the user's words byte for byte: frontmatter, regions, atomic and racing writes."""

from __future__ import annotations

import difflib
import os
import stat
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path, PurePosixPath

import pytest
from ruamel.yaml import YAML
from vaults import vault

from actadd_notes.errors import ConflictError, VaultError
from actadd_notes.vault.notes import (
    Note,
    UnreadableProperties,
    atomic_write_bytes,
    create_note,
    create_note_if_missing,
    dump_yaml_value,
    update_note,
)

# Frontmatter as people really write it, by hand and through plugins.
UGLY = """\
---
# Written by hand, then by Templater, then by Obsidian's property editor.
title: 'It''s a "note"'   # single quotes, doubled quote inside
status: queued  # queued | running | done
# ---- everything below is mine ----

aliases: [Love vs Hate,  "steering: ActAdd" ,'x']
tags:
- research/steering
- "ml/interpretability"
-   todo
created: 2024-01-02
updated: 2024-01-02T10:30:00
up: "[[Experiments index]]"
related:
  - "[[@turnerActivationAdditionSteering2024|Turner et al.]]"
  - '[[Some note#Heading]]'
abstract: >
  We steer language models
  by adding activation differences.
method: |
  1. pick a prompt pair
  2. add the difference

     (blank line kept above)
plain multi: this plain scalar
  continues here
quoted multi: "first line
  second line"
empty:
nothing: ~
yes_no: yes
number: 1.50
hex: 0x1F
nested:
    deep: {a: 1, b: [2, 3]}
    odd spacing:      kept
weird key with spaces: value
"quoted key": 1
last: end   # trailing comment on the last key
# and a comment before the closing fence

---
"""

BODY = """\
Intro the user wrote. %% not a region %%

## Results
%% begin results %%
tool text, version 0
%% end results %%

User text between the blocks, with a [[link]] and a #tag.

## My notes
%% begin notes %%
The user's own persist block: never touched.
%% end notes %%

Trailing user text, no newline at the end"""


def parse(text: str, name: str = "note.md") -> Note:
    return Note.parse(text, Path(name))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


# --- parsing and round trips --------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        UGLY + BODY,
        BODY,
        "",
        "---\n---\n",
        "---\n---",
        "---\n# only a comment\n---\nbody\n",
        "---\nnot: closed\n",
        "\ufeff---\na: 1\n---\nbody",
        "---\r\na: 1\r\nb: [1, 2]\r\n---\r\nbody\r\n",
        "text\n---\na: 1\n---\n",
    ],
)
def test_untouched_note_is_byte_identical(text):
    assert parse(text).text() == text


def test_frontmatter_and_body_split():
    note = parse(UGLY + BODY)
    assert note.body == BODY
    assert note.original == UGLY + BODY
    assert note.properties["title"] == 'It\'s a "note"'
    assert note.properties["tags"] == ["research/steering", "ml/interpretability", "todo"]
    assert note.properties["created"] == date(2024, 1, 2)
    assert note.properties["related"][0] == "[[@turnerActivationAdditionSteering2024|Turner et al.]]"
    assert note.properties["nested"]["deep"]["b"] == [2, 3]
    assert note.properties["empty"] is None


def test_no_frontmatter_means_empty_properties_and_the_whole_text_as_body():
    for text in (BODY, "---\nnot: closed\n", "text\n---\na: 1\n---\n"):
        note = parse(text)
        assert dict(note.properties) == {}
        assert note.body == text


def test_frontmatter_is_added_only_when_a_property_is_set():
    note = parse(BODY)
    note.set_region("results", "tool text, version 0")
    assert note.text() == BODY
    note.set("status", "done")
    assert note.text() == "---\nstatus: done\n---\n" + BODY


def test_invalid_yaml_names_note_and_line():
    text = "---\ntitle: fine\nbad: a: b\nok: 1\n---\nbody\n"
    with pytest.raises(VaultError, match=r"Experiments/x\.md:3: invalid YAML") as caught:
        Note.parse(text, Path("Experiments/x.md"))
    assert caught.value.path == Path("Experiments/x.md")


def test_duplicate_key_names_the_line():
    with pytest.raises(VaultError, match=r"x\.md:4:"):
        parse("---\na: 1\nb: 2\na: 3\n---\n", "x.md")


def test_frontmatter_that_is_not_a_mapping_is_refused():
    with pytest.raises(VaultError, match="mapping"):
        parse("---\n- a\n- b\n---\nbody\n")


def test_read_keeps_crlf_and_refuses_non_utf8(tmp_path):
    crlf = write(tmp_path / "crlf.md", "---\r\na: 1\r\n---\r\nbody\r\n")
    assert Note.read(crlf).original == "---\r\na: 1\r\n---\r\nbody\r\n"
    latin = tmp_path / "latin.md"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(VaultError, match="not UTF-8"):
        Note.read(latin)
    with pytest.raises(VaultError, match="no such note"):
        Note.read(tmp_path / "missing.md")


# --- changing properties --------------------------------------------------------------


def test_changing_a_value_touches_only_its_line():
    note = parse(UGLY + BODY)
    note.set("status", "done")
    expected = (UGLY + BODY).replace("status: queued  # queued", "status: done  # queued")
    assert note.text() == expected


def test_changing_a_block_list_keeps_the_comment_lines_after_it():
    text = "---\nlayer:\n- 2\n- 4  # inside the old value\n# about coeff\n\ncoeff: [1,2]\n---\n"
    note = parse(text)
    note.set("layer", [6, 8])
    assert note.text() == "---\nlayer:\n  - 6\n  - 8\n# about coeff\n\ncoeff: [1,2]\n---\n"


def test_mutating_a_list_in_place_rewrites_only_that_key():
    note = parse(UGLY + BODY)
    note.properties["tags"].append("new/tag")
    expected = (UGLY + BODY).replace(
        'tags:\n- research/steering\n- "ml/interpretability"\n-   todo\n',
        'tags:\n  - research/steering\n  - "ml/interpretability"\n  - todo\n  - new/tag\n',
    )
    assert note.text() == expected


def test_new_keys_go_at_the_end_of_the_frontmatter():
    note = parse(UGLY + BODY)
    note.set("result", "[[Results/love-hate-sweep 2024-01-02]]")
    note.set("best_layer", 6)
    expected = UGLY.removesuffix("---\n") + 'result: "[[Results/love-hate-sweep 2024-01-02]]"\nbest_layer: 6\n---\n'
    assert note.text() == expected + BODY


@pytest.mark.parametrize("key", list(parse(UGLY).properties))
def test_changing_any_key_leaves_every_other_line_alone(key):
    note = parse(UGLY + BODY)
    keys = list(note.properties)
    before = {k: v for k, v in note.properties.items() if k != key}
    first = note.properties.lc.key(key)[0] + 1  # +1: the opening fence
    index = keys.index(key)
    last = note.properties.lc.key(keys[index + 1])[0] + 1 if index + 1 < len(keys) else UGLY.count("\n") - 1
    note.set(key, "changed")
    out = note.text()
    reread = parse(out).properties
    assert reread[key] == "changed"
    assert {k: v for k, v in reread.items() if k != key} == before
    removed = [line[2:] for line in difflib.ndiff(UGLY.splitlines(), out.splitlines()) if line.startswith("- ")]
    assert all(line in UGLY.splitlines()[first:last] for line in removed), removed
    assert out.endswith("---\n" + BODY)


def test_removing_a_key_keeps_the_comments_that_follow_it():
    note = parse(UGLY + BODY)
    del note.properties["status"]
    expected = (UGLY + BODY).replace("status: queued  # queued | running | done\n", "")
    assert note.text() == expected


def test_equal_value_leaves_the_text_as_written():
    note = parse(UGLY + BODY)
    note.set("number", 1.5)  # written `1.50`
    note.set("status", "queued")
    note.set("created", date(2024, 1, 2))
    note.set("tags", ["research/steering", "ml/interpretability", "todo"])
    assert note.text() == UGLY + BODY


def test_set_keeps_the_users_quoting_and_flow_style():
    note = parse(UGLY + BODY)
    note.set("title", "Renamed")
    note.set("aliases", ["Love vs Hate"])
    text = note.text()
    assert "\ntitle: 'Renamed'   # single quotes, doubled quote inside\n" in text
    assert "\naliases: [Love vs Hate]\n" in text
    assert text.replace("title: 'Renamed'", "title: 'It''s a \"note\"'").replace(
        "aliases: [Love vs Hate]", "aliases: [Love vs Hate,  \"steering: ActAdd\" ,'x']"
    ) == (UGLY + BODY)


def test_two_rewrites_keep_everything_else_byte_identical():
    """Tool keys and the tool's region rewritten twice; user text before, between and after
    the regions (including the user's own persist block) comes back byte for byte."""
    original = UGLY + BODY
    text = original
    for version in (1, 2):
        note = parse(text)
        note.set("status", "done" if version == 2 else "running")
        note.set("progress", version / 2)
        note.set_region("results", f"| layer | coeff |\n|---|---|\n| {version} | {version * 2} |")
        text = note.text()
    expected = original.replace("status: queued  # queued", "status: done  # queued")
    expected = expected.replace(
        "# and a comment before the closing fence\n\n---\n",
        "# and a comment before the closing fence\n\nprogress: 1.0\n---\n",
    )
    expected = expected.replace("tool text, version 0", "| layer | coeff |\n|---|---|\n| 2 | 4 |")
    assert text == expected


def test_crlf_note_stays_crlf():
    text = "---\r\ntitle: x  # c\r\ntags:\r\n- a\r\n---\r\nBody\r\n%% begin r %%\r\nold\r\n%% end r %%\r\nafter\r\n"
    note = parse(text)
    note.set("title", "y")
    note.set("tags", ["a", "b"])
    note.set("new", [1])
    note.set_region("r", "new\nlines")
    note.set_region("other", "x", heading="Other")
    out = note.text()
    assert out.count("\n") == out.count("\r\n")
    assert out.startswith("---\r\ntitle: y  # c\r\ntags:\r\n  - a\r\n  - b\r\nnew:\r\n  - 1\r\n---\r\nBody\r\n")
    assert "%% begin r %%\r\nnew\r\nlines\r\n%% end r %%\r\nafter\r\n" in out
    assert parse(out).region("r") == "new\r\nlines"


def test_comment_only_frontmatter_keeps_its_comments_when_a_key_is_added():
    note = parse("---\n# keep me\n---\nbody\n")
    note.set("a", 1)
    assert note.text() == "---\n# keep me\na: 1\n---\nbody\n"


def test_aliases_in_properties_are_refused_with_their_line():
    """An alias can expand exponentially (a few hundred bytes to gigabytes): it is never expanded."""
    with pytest.raises(UnreadableProperties, match=r"^note\.md:3: .*aliases"):
        parse("---\nbase: &b [1, 2]\ncopy: *b\nother: x  # c\n---\nbody\n")


# --- Obsidian's way of writing values -------------------------------------------------------


def test_dump_yaml_value_writes_obsidian_style():
    note = parse("")
    note.set("link", "[[Results/run 1|run 1]]")
    note.set("links", ["[[a]]", "[[b]]"])
    note.set("day", date(2024, 1, 2))
    note.set("when", datetime(2024, 1, 2, 10, 30, 5, 123456))
    note.set("layers", (2, 4))
    note.set("path", PurePosixPath("Results/artifacts/plot.png"))
    note.set("error", "line one\nline two")
    note.set("word", "yes")
    note.set("nothing", None)
    assert note.text() == (
        "---\n"
        'link: "[[Results/run 1|run 1]]"\n'
        'links:\n  - "[[a]]"\n  - "[[b]]"\n'
        "day: 2024-01-02\n"
        "when: 2024-01-02T10:30:05\n"
        "layers:\n  - 2\n  - 4\n"
        "path: Results/artifacts/plot.png\n"
        "error: |-\n  line one\n  line two\n"
        "word: yes\n"
        "nothing:\n"
        "---\n"
    )
    reread = parse(note.text()).properties
    assert reread["when"] == datetime(2024, 1, 2, 10, 30, 5)
    assert reread["error"] == "line one\nline two"


def test_aware_datetimes_are_written_in_local_time():
    aware = datetime(2024, 1, 2, 10, 30, tzinfo=timezone(timedelta(hours=5)))
    assert dump_yaml_value(aware) == aware.astimezone().replace(tzinfo=None)


def test_dump_yaml_value_refuses_what_yaml_cannot_hold():
    with pytest.raises(TypeError, match="set"):
        dump_yaml_value({1, 2})


# --- regions ----------------------------------------------------------------------------


def test_region_reads_between_markers():
    note = parse(UGLY + BODY)
    assert note.region("results") == "tool text, version 0"
    assert note.region("notes") == "The user's own persist block: never touched."
    assert note.region("missing") is None
    assert parse("%% begin r %%\n%% end r %%").region("r") == ""
    assert parse("%%begin  r%%inline%%  end r %%").region("r") == "inline"


def test_region_names_match_whole():
    note = parse("%% begin results2 %%\nx\n%% end results2 %%\n")
    assert note.region("results") is None
    assert note.region("results2") == "x"


def test_set_region_appends_a_missing_region_under_a_heading():
    note = parse("Body\n")
    note.set_region("results", "a\nb", heading="Results")
    assert note.body == "Body\n\n## Results\n%% begin results %%\na\nb\n%% end results %%\n"
    note = parse("Body without newline")
    note.set_region("results", "x")
    assert note.body == "Body without newline\n\n%% begin results %%\nx\n%% end results %%\n"


def test_set_region_round_trips_its_content():
    note = parse("a\n%% begin r %%\nold\n%% end r %%\nb\n")
    for content in ("", "one", "two\nlines", "trailing newline\n", "\nleading"):
        note.set_region("r", content)
        assert parse(note.text()).region("r") == content
        assert note.body.startswith("a\n%% begin r %%\n") and note.body.endswith("%% end r %%\nb\n")


def test_begin_without_end_is_an_error_not_a_guess():
    note = parse("%% begin r %%\nuser deleted the end marker\n")
    with pytest.raises(VaultError, match="no `%% end r %%`"):
        note.region("r")
    with pytest.raises(VaultError):
        note.set_region("r", "x")
    assert note.text() == "%% begin r %%\nuser deleted the end marker\n"


# --- sections -----------------------------------------------------------------------------


def test_append_to_section_skips_headings_in_code_blocks():
    body = "## Log\n- one\n```bash\n# not a heading\n```\n\n## Next\nx\n"
    note = parse(body)
    note.append_to_section("log", "- two")
    assert note.body == "## Log\n- one\n```bash\n# not a heading\n```\n- two\n\n## Next\nx\n"


# --- files --------------------------------------------------------------------------------


def test_atomic_write_replaces_keeps_mode_and_leaves_no_temp_files(vault):
    target = write(vault / "Results" / "data.csv", "old")
    target.chmod(0o640)
    atomic_write_bytes(Path("Results/data.csv"), b"new,text\r\n", vault=vault)
    assert target.read_bytes() == b"new,text\r\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    atomic_write_bytes(vault / "Results" / "artifacts" / "plot.png", b"\x89PNG", vault=vault)
    assert (vault / "Results" / "artifacts" / "plot.png").read_bytes() == b"\x89PNG"
    assert sorted(p.name for p in (vault / "Results").iterdir()) == ["artifacts", "data.csv"]


@pytest.mark.parametrize("path", ["../outside.md", ".obsidian/app.json", "/tmp/x.md"])
def test_writes_outside_the_vault_or_into_obsidian_are_refused(vault, path):
    for call in (
        lambda: atomic_write_bytes(Path(path), b"x", vault=vault),
        lambda: create_note(Path(path), "x", vault=vault),
        lambda: update_note(Path(path), lambda note: None, vault=vault),
    ):
        with pytest.raises(VaultError):
            call()
    assert sorted(p.name for p in vault.iterdir()) == [".obsidian"]
    assert list((vault / ".obsidian").iterdir()) == []


def test_create_note_picks_a_free_name_like_obsidian(vault):
    first = create_note(Path("Results/run.md"), "one", vault=vault)
    second = create_note(Path("Results/run.md"), "two", vault=vault)
    third = create_note(vault / "Results" / "run.md", "three", vault=vault)
    assert [first.name, second.name, third.name] == ["run.md", "run 1.md", "run 2.md"]
    assert [p.read_text() for p in (first, second, third)] == ["one", "two", "three"]


def test_create_note_if_missing_never_touches_an_existing_note(vault):
    note = write(vault / "Journal" / "2024-01-02.md", "mine")
    assert create_note_if_missing(Path("Journal/2024-01-02.md"), "tool", vault=vault) is False
    assert note.read_text() == "mine"
    assert create_note_if_missing(Path("Journal/2024-01-03.md"), "tool", vault=vault) is True
    assert (vault / "Journal" / "2024-01-03.md").read_text() == "tool"


# --- update_note: compare and swap --------------------------------------------------------


def test_update_note_writes_the_change(vault):
    path = write(vault / "Experiments" / "x.md", UGLY + BODY)
    path.chmod(0o600)
    note = update_note(path, lambda n: n.set("status", "running"), vault=vault)
    assert path.read_text() == note.text() == (UGLY + BODY).replace("status: queued  #", "status: running  #")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.md"]


def test_update_without_a_change_does_not_write(vault):
    path = write(vault / "x.md", UGLY + BODY)
    before = path.stat()
    update_note(path, lambda n: n.set("status", "queued"), vault=vault)
    after = path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_update_racing_a_user_edit_keeps_both(vault):
    """The user saves in Obsidian between our read and our replace: the change is re-applied
    to the new text, and neither the user's words nor the tool's change is lost."""
    path = write(vault / "x.md", UGLY + BODY)
    user_text = "\nA sentence the user typed while the tool was working.\n"
    seen = []

    def change(note: Note) -> None:
        seen.append(note.original)
        if len(seen) == 1:  # Obsidian saves right now
            path.write_bytes((UGLY + BODY + user_text).encode())
        note.set("status", "done")
        note.set_region("results", "fresh results")

    update_note(path, change, vault=vault)
    final = path.read_text()
    assert len(seen) == 2 and seen[1] == UGLY + BODY + user_text
    assert final.endswith(BODY.replace("tool text, version 0", "fresh results") + user_text)
    assert "status: done  # queued" in final


def test_update_waits_out_a_save_in_progress(vault):
    """Obsidian truncates, then writes: a change must never be applied to the empty file."""
    path = write(vault / "x.md", UGLY + BODY)
    saved = UGLY + BODY + "\nsaved by Obsidian\n"
    seen = []

    def change(note: Note) -> None:
        seen.append(note.original)
        if len(seen) == 1:
            path.write_bytes(b"")  # truncated; the rest arrives a moment later
            threading.Timer(0.05, lambda: path.write_bytes(saved.encode())).start()
        note.set("status", "done")

    update_note(path, change, vault=vault)
    assert "" not in seen
    assert seen[-1] == saved
    assert path.read_text() == saved.replace("status: queued  #", "status: done  #")


def test_update_gives_up_rather_than_overwrite_newer_text(vault):
    path = write(vault / "x.md", "---\nstatus: queued\n---\nbody\n")
    edits = []

    def change(note: Note) -> None:
        edits.append(f"user edit {len(edits)}\n")
        path.write_text(note.original + edits[-1])  # the user never stops typing
        note.set("status", "done")

    with pytest.raises(ConflictError, match="nothing was written"):
        update_note(path, change, vault=vault, attempts=3)
    assert len(edits) == 3
    assert path.read_text() == "---\nstatus: queued\n---\nbody\n" + "".join(edits)


def test_update_of_a_note_deleted_meanwhile_does_not_recreate_it(vault):
    path = write(vault / "x.md", "body\n")

    def change(note: Note) -> None:
        path.unlink()
        note.set("status", "done")

    with pytest.raises(VaultError, match="no such note"):
        update_note(path, change, vault=vault)
    assert not path.exists()
    assert list(vault.iterdir()) == [vault / ".obsidian"]


def test_update_of_an_empty_note(vault):
    path = write(vault / "empty.md", "")
    update_note(path, lambda n: n.set_region("r", "x"), vault=vault)
    assert path.read_text() == "\n%% begin r %%\nx\n%% end r %%\n"


def test_update_writes_through_a_symlink_inside_the_vault(vault):
    real = write(vault / "Notes" / "real.md", "body\n")
    (vault / "alias.md").symlink_to(real)
    update_note(Path("alias.md"), lambda n: n.set("a", 1), vault=vault)
    assert os.path.islink(vault / "alias.md")
    assert real.read_text() == "---\na: 1\n---\nbody\n"


def test_change_that_raises_writes_nothing(vault):
    path = write(vault / "x.md", "body\n")

    def change(note: Note) -> None:
        note.set("a", 1)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        update_note(path, change, vault=vault)
    assert path.read_text() == "body\n"
