"""The compare-and-swap under fault injection: a concurrent writer saves the note as an editor
or a script would (by rename, and in place), each save adding one line of the user's, while the
tool updates a property over and over. Not one user line may be lost.

Before the atomic exchange, 1 of 900 lines was lost over 216 updates (rename) and 6 of 900 in
place. The writer re-reads the note before each save, so a line the tool dropped even for an
instant would stay lost: the strictest writer there is.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from actadd_notes.errors import ConflictError
from actadd_notes.vault.notes import Note, update_note

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the atomic exchange is Linux's"),
]
UPDATES = 1_000


def writer(path: Path, stop: threading.Event, written: list[str]) -> None:
    """Append a line every few milliseconds, alternating a save by rename and an in-place save."""
    number = 0
    while not stop.is_set():
        text = path.read_text(encoding="utf-8")
        line = f"- user line {number}"
        new = text + line + "\n"
        if number % 2:
            temp = path.with_name(f".{path.name}.{number}.tmp")
            temp.write_text(new, encoding="utf-8")
            os.replace(temp, path)
        else:
            with open(path, "r+", encoding="utf-8") as file:
                file.write(new)
                file.truncate()
        written.append(line)
        number += 1
        time.sleep(0.030 + (number % 7) / 500)  # a save every 30–42 ms: a fast typist in Obsidian


def test_no_user_line_is_lost_over_a_thousand_updates_racing_a_writer(tmp_path):
    vault = tmp_path / "vault"
    path = vault / "Experiments" / "love.md"
    path.parent.mkdir(parents=True)
    path.write_text("---\ntype: actadd-experiment\nprogress: 0\n---\n# My notes\n", encoding="utf-8")
    stop, written = threading.Event(), []
    thread = threading.Thread(target=writer, args=(path, stop, written))
    thread.start()
    updates = conflicts = 0
    try:
        while updates < UPDATES:
            try:
                update_note(path, lambda note, n=updates: note.set("progress", n + 1), vault=vault)
                updates += 1
            except ConflictError:  # kept changing for five tries: nothing written, nothing lost
                conflicts += 1
    finally:
        stop.set()
        thread.join(30)

    lines = path.read_text(encoding="utf-8").splitlines()
    lost = [line for line in written if line not in lines]
    assert updates == UPDATES and len(written) > UPDATES // 2
    assert lost == [], f"{len(lost)} of {len(written)} user lines lost over {updates} updates ({conflicts} conflicts)"
    assert Note.read(path).body.startswith("# My notes\n- user line 0\n")
