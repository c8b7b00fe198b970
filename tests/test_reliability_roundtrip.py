"""Property-based round trips (hypothesis): whatever properties, body text and file name a note
has, every byte outside the tool's regions survives every write the tool makes.

The notes are real files with names drawn from unicode, brackets and spaces; the writes are the
tool's own (`update_note`: a property set, a region filled, then rewritten).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from actadd_notes.vault.notes import Note, update_note
from actadd_notes.vault.templates import yaml_str

SETTINGS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
MARKER = re.compile(r"%%[ \t]*(?:begin|end)[ \t]")

keys = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True).filter(lambda k: k not in ("status", "type"))
scalars = st.one_of(
    st.text(max_size=30),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
)
values = st.one_of(scalars, st.lists(st.text(max_size=12), max_size=4))
properties = st.dictionaries(keys, values, max_size=6)
bodies = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300).filter(lambda b: not MARKER.search(b))
names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\x00"), min_size=1, max_size=40
).filter(lambda n: not n.startswith(".") and n.strip() == n and len(n.encode()) < 200)


def scalar_text(value: object) -> str:
    """A value as a user (or Obsidian) might have typed it."""
    if isinstance(value, str):
        return yaml_str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def frontmatter(props: dict[str, object]) -> str:
    lines = []
    for key, value in props.items():
        if isinstance(value, list):
            lines.append(f"{key}:" + "".join(f"\n  - {yaml_str(item)}" for item in value) if value else f"{key}: []")
        else:
            lines.append(f"{key}: {scalar_text(value)}  # the user's comment")
    return "".join(line + "\n" for line in lines)


@SETTINGS
@given(props=properties, body=bodies, name=names, content=st.text(max_size=80), later=st.text(max_size=80))
def test_every_byte_outside_the_tools_regions_survives_every_write(props, body, name, content, later):
    assume(not body.startswith("---"))
    root = Path(tempfile.mkdtemp())
    try:
        folder = root / "Experiments [v2] ü"
        folder.mkdir()
        path = folder / f"{name}.md"
        head = f"---\ntype: actadd-experiment\n{frontmatter(props)}status: queued\n---\n"
        path.write_text(head + body, encoding="utf-8", newline="")
        original = Note.read(path)
        assert dict(original.properties) == {"type": "actadd-experiment", **props, "status": "queued"}

        def first(note: Note) -> None:
            note.set("status", "running")
            note.set_region("results", content, heading="Results")

        update_note(path, first, vault=root)
        update_note(path, lambda note: note.set_region("results", later), vault=root)

        text = path.read_bytes().decode("utf-8")
        written = Note.read(path)
        user_head = head.replace("status: queued\n", "status: running\n")
        assert text.startswith(user_head + body)  # every key line, comment and body byte as typed
        assert dict(written.properties) == {"type": "actadd-experiment", **props, "status": "running"}
        assert written.region("results") == re.sub(r"\r\n?", "\n", later)  # CR, CRLF: a line break
        tail = text[len(user_head + body) :]
        assert tail.count("%% begin results %%") == tail.count("%% end results %%") == 1
    finally:
        shutil.rmtree(root)


@SETTINGS
@given(value=st.text())
def test_yaml_str_reads_back_as_exactly_the_text(value):
    from ruamel.yaml import YAML

    assert YAML(typ="safe").load(f"key: {yaml_str(value)}\n") == {"key": value}
