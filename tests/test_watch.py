"""watch_vault batching against a scripted source on a fake clock (exact, no sleeps), then
a few runs on the real filesystem with a short debounce; NoteFilter; SelfWrites."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import deque
from pathlib import Path

import pytest
from watchdog.events import (
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

from actadd_notes.errors import VaultError
from actadd_notes.vault.scan import NoteFilter
from actadd_notes.watcher.events import Change, SelfWrites, WatchdogSource, _changes_from, watch_vault

A, M, D = Change.added, Change.modified, Change.deleted
pytestmark = pytest.mark.timeout(30)


# --- a scripted event source on a fake clock ------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedSource:
    """Replays `(t, change, path)` events, or `(t, callable)` actions, on a fake clock.

    `get(timeout)` jumps the clock to the next event if it is due within `timeout`, else
    by `timeout`. Once the script is done and the clock is `idle` seconds past its end,
    it sets `stop`, so `list(watch_vault(...))` ends.
    """

    def __init__(self, clock: FakeClock, script, stop: threading.Event, idle: float = 30.0):
        self.clock, self.stop_event = clock, stop
        self.script = deque(script)
        self.end = (script[-1][0] if script else 0.0) + idle
        self.started = self.stopped = False
        self.timeouts: list[float] = []

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def get(self, timeout: float):
        assert self.started and not self.stopped
        self.timeouts.append(timeout)
        deadline = self.clock.now + timeout
        if self.script and self.script[0][0] <= deadline:
            t, *event = self.script.popleft()
            self.clock.now = max(self.clock.now, t)
            if callable(event[0]):
                event[0]()
                return None
            return tuple(event)
        self.clock.now = deadline
        if not self.script and self.clock.now >= self.end:
            self.stop_event.set()
        return None


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    root = tmp_path / "vault"
    (root / "Experiments").mkdir(parents=True)
    return root.resolve()


def run(vault: Path, script, **kwargs):
    """(clock time at yield, batch) for every batch, plus the source."""
    clock, stop = FakeClock(), kwargs.pop("stop_event", None) or threading.Event()
    source = ScriptedSource(clock, script, stop)
    gen = watch_vault(vault, event_source=source, monotonic=clock, stop_event=stop, **kwargs)
    batches = [(clock.now, batch) for batch in gen]
    assert source.stopped
    return batches, source


def note(vault: Path, name: str = "love") -> Path:
    return vault / "Experiments" / f"{name}.md"


# --- batching -------------------------------------------------------------------------


def test_obsidian_save_burst_is_one_entry(vault):
    # Obsidian truncates, then writes: several modify events on one note
    script = [(1.000, M, "Experiments/love.md"), (1.010, M, "Experiments/love.md"),
              (1.020, M, "Experiments/love.md"), (1.030, M, "Experiments/love.md")]  # fmt: skip
    batches, source = run(vault, script)
    assert batches == [(pytest.approx(1.080), {(M, note(vault))})]  # closes step_ms after the last event
    assert max(source.timeouts) <= 0.050 + 1e-9  # never blocks longer than step_ms


@pytest.mark.parametrize(
    ("changes", "net"),
    [
        ((A, M, M), A),
        ((A, D), None),
        ((M, D), D),
        ((D, A), M),
        ((D, A, M), M),
        ((A, D, A), A),
        ((D, A, D), D),
        ((M, M), M),
        ((D,), D),
    ],
)
def test_changes_to_one_path_collapse(vault, changes, net):
    script = [(1 + i / 100, change, "Experiments/love.md") for i, change in enumerate(changes)]
    batches, _ = run(vault, script)
    assert [batch for _, batch in batches] == ([{(net, note(vault))}] if net else [])


def test_bursts_further_apart_than_step_are_two_batches(vault):
    script = [(1.000, M, "Experiments/a.md"), (1.030, M, "Experiments/b.md"),  # 30 ms apart: one batch
              (1.200, M, "Experiments/a.md")]  # fmt: skip
    batches, _ = run(vault, script, step_ms=50)
    assert batches == [
        (pytest.approx(1.080), {(M, note(vault, "a")), (M, note(vault, "b"))}),
        (pytest.approx(1.250), {(M, note(vault, "a"))}),
    ]


def test_continuous_stream_is_cut_at_debounce(vault):
    # a new note every 30 ms for 5 s: never quiet for step_ms, so only the debounce closes batches
    script = [(1 + i * 0.030, A, f"Experiments/n{i:03}.md") for i in range(167)]
    batches, _ = run(vault, script, debounce_ms=1_600, step_ms=50)
    times = [t for t, _ in batches]
    assert times == [pytest.approx(2.6), pytest.approx(4.22), pytest.approx(5.84), pytest.approx(6.03)]
    seen = [path.stem for _, batch in batches for _, path in batch]
    assert sorted(seen) == [f"n{i:03}" for i in range(167)]  # nothing lost, nothing twice
    assert len(batches) == 4


def test_ignored_events_neither_open_nor_extend_a_batch(vault):
    script = [(1.00, M, ".obsidian/workspace.json"), (1.02, M, "Experiments/love.md"),
              (1.05, M, ".obsidian/workspace.json"), (1.09, M, ".obsidian/workspace.json")]  # fmt: skip
    batches, _ = run(vault, script)
    assert batches == [(pytest.approx(1.07), {(M, note(vault))})]


NOISE = [
    ".obsidian/workspace.json",
    ".obsidian/plugins/dataview/README.md",
    ".trash/old.md",
    ".git/COMMIT_EDITMSG",
    ".git/x.md",
    ".actadd-notes/jobs/abc.json",
    "node_modules/pkg/README.md",
    "Experiments/.love.md.swp",
    "Experiments/love.md~",
    "Experiments/.#love.md",
    "Experiments/#love.md#",
    "Experiments/love.md.tmp",
    "Experiments/.love.md.tmp.1234",
    "Experiments/love.sync-conflict-20240101-120000-ABCDEFG.md",
    "Experiments/love (conflicted copy 2024-01-01).md",
    "Experiments/love (Conflicted Copy).md",
    "Experiments/love (Jane's conflicted copy 2024-01-01).md",
    "Experiments/love (conflict 2026-12-01 120000).md",
    "Experiments/.love.md",
    "Experiments/.love.md.icloud",
    "Experiments/.~lock.love.md#",
    "Experiments/.syncthing.love.md.tmp",
    "Experiments/image.png",
    "Experiments/data.json",
    "Experiments/.DS_Store",
]


def test_filter_drops_app_sync_and_editor_noise(vault):
    script = [(1 + i / 1000, M, path) for i, path in enumerate([*NOISE, "Experiments/love.md"])]
    batches, _ = run(vault, script)
    assert [batch for _, batch in batches] == [{(M, note(vault))}]


@pytest.mark.parametrize("path", NOISE)
def test_note_filter_defaults(vault, path):
    keep = NoteFilter()
    assert not keep(M, vault / path)
    assert keep(M, vault / "Experiments/love.md")
    assert keep(D, vault / "Experiments/Love.MD")  # suffixes are case-insensitive


def test_note_filter_can_be_extended(vault):
    out = vault / "Results"
    keep = NoteFilter(extra_ignore_dirs=("Templates",), extra_ignore_patterns=("draft-*",), ignore_paths=[out])
    assert not keep(A, vault / "Templates/spec.md")
    assert not keep(A, vault / "Experiments/draft-love.md")
    assert not keep(A, out / "love.md")
    assert keep(A, vault / "Results-old/love.md")  # a sibling with the same prefix is not under it
    assert keep(A, vault / "Experiments/love.md")
    assert not keep(A, vault / ".obsidian/app.md")  # the defaults still apply

    class CanvasFilter(NoteFilter):
        ignore_dirs = (*NoteFilter.ignore_dirs, "Archive")

    keep = CanvasFilter(suffixes=(".md", ".canvas"))
    assert keep(A, vault / "Board.canvas")
    assert not keep(A, vault / "Archive/old.md")
    assert NoteFilter(suffixes=())(A, vault / "image.png")  # no suffixes: every file
    assert "Archive" not in repr(NoteFilter())


def test_no_filter_keeps_everything(vault):
    script = [(1.0, M, ".obsidian/workspace.json")]
    batches, _ = run(vault, script, note_filter=None)
    assert [batch for _, batch in batches] == [{(M, vault / ".obsidian/workspace.json")}]


def test_moves_arrive_as_deleted_plus_added(vault):
    script = [(1.00, D, "Experiments/love.md"), (1.00, A, "Experiments/hate.md")]
    batches, _ = run(vault, script)
    assert [batch for _, batch in batches] == [{(D, note(vault, "love")), (A, note(vault, "hate"))}]


def test_watchdog_events_become_changes(tmp_path):
    love, hate = str(tmp_path / "love.md"), str(tmp_path / "hate.md")
    assert _changes_from(FileMovedEvent(love, hate)) == [(D, Path(love)), (A, Path(hate))]
    assert _changes_from(FileMovedEvent("", hate)) == [(A, Path(hate))]  # moved in from outside
    assert _changes_from(FileCreatedEvent(love)) == [(A, Path(love))]
    assert _changes_from(FileModifiedEvent(love)) == [(M, Path(love))]
    assert _changes_from(FileClosedEvent(love)) == [(M, Path(love))]  # closed after writing
    assert _changes_from(FileDeletedEvent(love)) == [(D, Path(love))]
    assert _changes_from(FileOpenedEvent(love)) == []
    assert _changes_from(FileClosedNoWriteEvent(love)) == []
    assert _changes_from(DirModifiedEvent(str(tmp_path))) == []
    assert _changes_from(DirMovedEvent(str(tmp_path / "a"), str(tmp_path / "b"))) == []  # files come one by one


def test_paths_are_absolute_and_normalised(vault):
    script = [(1.0, M, "Experiments/../Experiments/love.md"), (1.01, M, str(vault / "Experiments" / "love.md"))]
    batches, _ = run(vault, script)
    assert [batch for _, batch in batches] == [{(M, note(vault))}]


def test_stop_event_ends_an_idle_watch_promptly(vault):
    stop = threading.Event()
    batches, source = run(vault, [(5.0, stop.set)], stop_event=stop)
    assert batches == []
    assert source.clock.now <= 5.0 + 0.050


def test_stop_event_drops_a_pending_batch(vault):
    stop = threading.Event()
    script = [(1.0, M, "Experiments/love.md"), (1.02, stop.set), (1.03, M, "Experiments/love.md")]
    batches, source = run(vault, script, stop_event=stop)
    assert batches == []
    assert source.clock.now == pytest.approx(1.02)


def test_source_is_stopped_when_the_consumer_closes_or_fails(vault):
    clock, stop = FakeClock(), threading.Event()
    source = ScriptedSource(clock, [(1.0, M, "Experiments/a.md"), (2.0, M, "Experiments/b.md")], stop)
    gen = watch_vault(vault, event_source=source, monotonic=clock)
    assert next(gen) == {(M, note(vault, "a"))}
    gen.close()
    assert source.stopped

    def broken_filter(change, path):
        raise RuntimeError("boom")

    source = ScriptedSource(clock, [(3.0, M, "Experiments/a.md")], stop)
    with pytest.raises(RuntimeError, match="boom"):
        next(watch_vault(vault, event_source=source, monotonic=clock, note_filter=broken_filter))
    assert source.stopped


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="step_ms"):
        next(watch_vault(tmp_path, step_ms=0))
    with pytest.raises(VaultError, match="not a directory"):
        next(watch_vault(tmp_path / "missing"))


# --- the real filesystem --------------------------------------------------------------


class StartedSource(WatchdogSource):
    """The real source, telling the test when its watches are in place."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started = threading.Event()

    def start(self) -> None:
        super().start()
        self.started.set()


def watch_while(vault: Path, action, *, force_polling: bool = False, settle: float = 1.0):
    """Run `action` once the watcher is up, wait `settle` s, stop; return every batch."""
    stop, errors = threading.Event(), []
    source = StartedSource(vault, force_polling=force_polling, poll_delay_ms=50)

    def act():
        try:
            if source.started.wait(10):
                action()
                time.sleep(settle)
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)
        finally:
            stop.set()

    thread = threading.Thread(target=act)
    thread.start()
    try:
        batches = list(watch_vault(vault, debounce_ms=400, step_ms=100, stop_event=stop, event_source=source))
    finally:
        stop.set()
        thread.join()
    if errors:
        raise errors[0]
    return batches


def save_like_obsidian(path: Path, text: str) -> None:
    """Open with truncate, write in three chunks, flushing between them."""
    third = len(text) // 3
    with open(path, "w", encoding="utf-8") as f:
        for chunk in (text[:third], text[third : 2 * third], text[2 * third :]):
            f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
            time.sleep(0.02)


@pytest.mark.parametrize("force_polling", [False, True], ids=["native", "polling"])
def test_real_obsidian_save_is_one_batch(vault, force_polling):
    love = note(vault)
    love.write_text("---\nstatus: draft\n---\n")
    batches = watch_while(vault, lambda: save_like_obsidian(love, "---\nstatus: queued\n---\n# Love\n" * 20),
                          force_polling=force_polling)  # fmt: skip
    assert batches == [{(M, love)}]


def test_real_new_note_is_added(vault):
    love = note(vault)
    batches = watch_while(vault, lambda: save_like_obsidian(love, "# Love\n" * 50))
    assert batches == [{(A, love)}]


def test_real_writes_under_obsidian_and_trash_yield_nothing(vault):
    def noise():
        (vault / ".obsidian").mkdir()
        save_like_obsidian(vault / ".obsidian" / "workspace.json", '{"main": {}}' * 10)
        save_like_obsidian(vault / ".obsidian" / "notes.md", "# not a note\n" * 10)
        (vault / ".trash").mkdir()
        (vault / ".trash" / "old.md").write_text("gone")
        (vault / "Experiments" / "plot.png").write_bytes(b"\x89PNG")

    assert watch_while(vault, noise) == []


def test_real_rename_and_atomic_replace(vault):
    love, hate = note(vault), note(vault, "hate")
    love.write_text("# Love\n")
    assert watch_while(vault, lambda: love.rename(hate)) == [{(D, love), (A, hate)}]

    def atomic_save():  # what other editors do: write a temp file, rename it over the note
        temp = hate.with_name(".hate.md.tmp.42")
        temp.write_text("# Hate, edited\n")
        os.replace(temp, hate)

    batches = watch_while(vault, atomic_save)
    assert [{path for _, path in batch} for batch in batches] == [{hate}]


@pytest.mark.parametrize("force_polling", [False, True], ids=["native", "polling"])
def test_real_observer_threads_are_gone_after_close(vault, force_polling):
    before = set(threading.enumerate())
    love = note(vault)

    def write_once_watching():
        deadline = time.monotonic() + 10
        while len(set(threading.enumerate()) - before) < 3 and time.monotonic() < deadline:  # us, observer, emitter
            time.sleep(0.01)
        save_like_obsidian(love, "# Love\n" * 10)

    writer = threading.Thread(target=write_once_watching)
    gen = watch_vault(vault, debounce_ms=400, step_ms=100, force_polling=force_polling, poll_delay_ms=50)
    writer.start()
    try:
        assert next(gen) == {(A, love)}
        assert len(set(threading.enumerate()) - before - {writer}) >= 2
    finally:
        gen.close()
        writer.join()
    assert set(threading.enumerate()) - before == set()


def test_real_vault_deleted_while_watching_raises(vault):
    with pytest.raises(VaultError, match="deleted or moved"):
        watch_while(vault, lambda: shutil.rmtree(vault), settle=2.0)


# --- SelfWrites -----------------------------------------------------------------------


def test_self_writes_recognises_only_what_the_tool_wrote(vault):
    own, love = SelfWrites(), note(vault)
    text = "---\nstatus: done\n---\n# Results\n"
    love.write_text(text, encoding="utf-8", newline="")
    own.remember(love, text)  # as soon as the write returns
    assert own.is_own(love)
    assert own.is_own(str(vault / "Experiments" / ".." / "Experiments" / "love.md"))
    love.write_text(text + "a user edit\n")
    assert not own.is_own(love)

    own.remember(love, b"\x00bytes")
    love.write_bytes(b"\x00bytes")
    assert own.is_own(love)
    love.unlink()
    assert not own.is_own(love)  # deleted
    assert not own.is_own(note(vault, "never-written"))
    assert len(own) == 1  # remembered until evicted (see the next test)


def test_self_writes_memory_is_bounded(vault):
    own = SelfWrites(max_entries=2)
    paths = [note(vault, name) for name in "abc"]
    for path in paths:
        path.write_text(path.stem)
        own.remember(path, path.stem)
    assert len(own) == 2
    assert not own.is_own(paths[0])  # the oldest was forgotten
    assert own.is_own(paths[1]) and own.is_own(paths[2])


def test_self_writes_is_thread_safe(vault):
    own = SelfWrites(max_entries=100)

    def remember(worker: int) -> None:
        for i in range(500):
            own.remember(vault / f"{worker}-{i}.md", str(i))
            own.is_own(vault / f"{worker}-{i}.md")

    threads = [threading.Thread(target=remember, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(own) == 100
