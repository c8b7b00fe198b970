"""Watch a vault and yield batches of changed notes; watchdog stays hidden in here.

    for batch in watch_vault(vault, stop_event=stop):
        for change, path in batch:        # {(Change.modified, /abs/vault/Experiments/love.md)}
            ...

A batch opens at the first accepted event and keeps collecting while events keep
arriving; it closes once `step_ms` passes without a new event, or once `debounce_ms`
has passed since it opened (so a continuous stream is still cut into batches).
Within a batch each path appears once, with the net change: Obsidian saves a note
by truncating and rewriting it, which is several modify events and one entry here.

`SelfWrites` is the gate that keeps the tool's own writes from retriggering jobs. Which
paths are notes at all is `actadd_notes.vault.scan.NoteFilter`'s call.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from actadd_notes.errors import VaultError
from actadd_notes.vault.scan import NoteFilter

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

__all__ = ["Change", "EventSource", "SelfWrites", "WatchdogSource", "watch_vault"]

_NOTES = NoteFilter()


class Change(enum.IntEnum):
    """What happened to a path. A move is reported as `deleted` (source) + `added` (destination)."""

    added = 1
    modified = 2
    deleted = 3


class EventSource(Protocol):
    """Where raw events come from: watchdog in production, a scripted fake in tests.

    `get(timeout)` waits at most `timeout` seconds and returns one event, or None when
    none came. Paths may be absolute, or relative to the vault.
    """

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def get(self, timeout: float) -> tuple[Change, Path] | None: ...


def watch_vault(
    vault: str | Path,
    *,
    note_filter: Callable[[Change, Path], bool] | None = _NOTES,
    debounce_ms: int = 1_600,
    step_ms: int = 50,
    stop_event: threading.Event | None = None,
    force_polling: bool = False,
    poll_delay_ms: int = 300,
    event_source: EventSource | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> Iterator[set[tuple[Change, Path]]]:
    """Yield non-empty batches of `(Change, absolute resolved path)` under `vault`.

    `note_filter=None` keeps every file event. `force_polling` polls every
    `poll_delay_ms` instead of using OS notifications: use it for synced or network
    drives, where notifications are missing or unreliable. Setting `stop_event` ends
    the generator within about `step_ms`; changes not yet yielded are dropped. The
    observer starts at the first `next()`, so changes made before it are not seen (a
    caller that scans the vault on start-up should scan right before iterating), and
    is stopped and joined when the generator returns, raises or is closed.
    `event_source` and `monotonic` are for tests.

    Folder-level changes are reported per note where the OS says which notes moved
    (a folder renamed inside the vault); a folder moved out of the vault entirely
    reports nothing for the notes inside it.
    """
    if step_ms <= 0 or debounce_ms <= 0:
        raise ValueError(f"step_ms and debounce_ms must be positive, got {step_ms} and {debounce_ms}")
    root = _resolved(Path(vault))
    if event_source is None:
        if not root.is_dir():
            raise VaultError(f"cannot watch {vault}: not a directory", path=vault)
        event_source = WatchdogSource(root, force_polling=force_polling, poll_delay_ms=poll_delay_ms)
    step, debounce = step_ms / 1000, debounce_ms / 1000

    try:
        event_source.start()
        batch: dict[Path, tuple[Change, Change]] = {}  # path -> (first, last) change
        opened = last = 0.0
        is_open = False
        while stop_event is None or not stop_event.is_set():
            if is_open:
                now = monotonic()
                deadline = min(last + step, opened + debounce)
                if now >= deadline:
                    changes = {(net, path) for path, pair in batch.items() if (net := _net(*pair)) is not None}
                    batch.clear()
                    is_open = False
                    if changes:
                        yield changes
                    continue
                timeout = deadline - now
            else:
                timeout = step
            event = event_source.get(timeout)
            if event is None:
                continue
            change, raw = event
            path = _resolved(Path(raw), root)
            if note_filter is not None and not note_filter(change, path):
                continue
            last = monotonic()
            if not is_open:
                opened, is_open = last, True
            first = batch[path][0] if path in batch else change
            batch[path] = (first, change)
    finally:
        event_source.stop()


def _net(first: Change, last: Change) -> Change | None:
    """The net change of a run of events on one path, from its first and last event.

    added…modified → added; added…deleted → nothing; modified…deleted → deleted;
    deleted…added → modified (the note was replaced).
    """
    if first is Change.added:
        return None if last is Change.deleted else Change.added
    if last is Change.deleted:
        return Change.deleted
    return Change.modified


def _resolved(path: Path, base: Path | None = None) -> Path:
    """Absolute, with every folder resolved; a symlinked note keeps its own name."""
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return Path(os.path.realpath(path.parent)) / path.name


class WatchdogSource:
    """The real `EventSource`: a recursive watchdog observer feeding a thread-safe queue.

    Only file events pass (folder moves inside the vault arrive as moves of each file);
    a file closed after writing, or whose metadata changed (`touch`), counts as modified.
    A file renamed over an existing note (an atomic save) arrives as `added`: the OS
    does not say whether the destination existed.
    """

    def __init__(self, root: Path, *, force_polling: bool = False, poll_delay_ms: int = 300):
        self.root = root
        self.force_polling = force_polling
        self.poll_delay_ms = poll_delay_ms
        self._queue: queue.SimpleQueue[tuple[Change, Path]] = queue.SimpleQueue()
        self._observer: BaseObserver | None = None

    def start(self) -> None:
        from watchdog.events import (
            DirCreatedEvent,
            DirDeletedEvent,
            DirModifiedEvent,
            DirMovedEvent,
            FileClosedEvent,
            FileCreatedEvent,
            FileDeletedEvent,
            FileModifiedEvent,
            FileMovedEvent,
            FileSystemEvent,
            FileSystemEventHandler,
        )

        if self.force_polling:
            from watchdog.observers.polling import PollingObserver

            observer: BaseObserver = PollingObserver(timeout=self.poll_delay_ms / 1000)
        else:
            from watchdog.observers import Observer

            observer = Observer()
        put = self._queue.put

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                for change in _changes_from(event):
                    put(change)

        self._observer = observer
        try:
            # changes only: with opens and read-only closes in the inotify mask, the start-up scan's own
            # reads of every note came back as events, and decoding them slowed that scan by half
            changes = [
                FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileDeletedEvent, FileMovedEvent,
                DirCreatedEvent, DirModifiedEvent, DirDeletedEvent, DirMovedEvent,
            ]  # fmt: skip
            observer.schedule(Handler(), str(self.root), recursive=True, event_filter=changes)
            observer.start()
        except OSError as error:
            limits = {errno.ENOSPC: "fs.inotify.max_user_watches", errno.EMFILE: "fs.inotify.max_user_instances"}
            hint = f" (raise {limits[error.errno]}, or use force_polling)" if error.errno in limits else ""
            raise VaultError(f"cannot watch {self.root}: {error.strerror or error}{hint}", path=self.root) from error

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is None:
            return
        observer.stop()  # also stops and joins the emitter threads
        if observer.ident is not None:
            observer.join()

    def get(self, timeout: float) -> tuple[Change, Path] | None:
        try:
            return self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            pass
        observer = self._observer
        if observer is not None and observer.emitters and not any(e.is_alive() for e in observer.emitters):
            raise VaultError(f"stopped watching {self.root}: it was deleted or moved", path=self.root)
        return None


_KINDS = {"created": Change.added, "modified": Change.modified, "closed": Change.modified,
          "attrib": Change.modified, "deleted": Change.deleted}  # fmt: skip


def _changes_from(event: Any) -> list[tuple[Change, Path]]:
    """A watchdog event as changes: file events only, a move split into deleted + added."""
    if event.is_directory:
        return []
    if event.event_type == "moved":
        moved = [(Change.deleted, event.src_path), (Change.added, event.dest_path)]
        return [(change, Path(os.fsdecode(path))) for change, path in moved if path]
    change = _KINDS.get(event.event_type)
    return [] if change is None else [(change, Path(os.fsdecode(event.src_path)))]


class SelfWrites:
    """Remember what the tool wrote, so its own writes never retrigger jobs.

    Call `remember(path, data)` with exactly what was written (text is hashed as UTF-8), as
    soon as the write returns: the watcher asks `is_own(path)` only when the debounced batch
    holding the write's events is handled, well after that. `is_own` reads the file then and
    is True when it still holds the last thing remembered for it; a later edit by the user
    makes it False again. Thread-safe; remembers at most
    `max_entries` paths, forgetting the least recently used.
    """

    def __init__(self, max_entries: int = 4096):
        self.max_entries = max_entries
        self._hashes: OrderedDict[Path, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, path: str | Path, data: str | bytes) -> None:
        digest = hashlib.sha256(data.encode() if isinstance(data, str) else data).digest()
        key = _resolved(Path(path))
        with self._lock:
            self._hashes[key] = digest
            self._hashes.move_to_end(key)
            while len(self._hashes) > self.max_entries:
                self._hashes.popitem(last=False)

    def is_own(self, path: str | Path) -> bool:
        key = _resolved(Path(path))
        with self._lock:
            expected = self._hashes.get(key)
        if expected is None:
            return False
        try:
            data = key.read_bytes()
        except OSError:  # deleted or unreadable: not something we wrote
            return False
        return hashlib.sha256(data).digest() == expected

    def __len__(self) -> int:
        with self._lock:
            return len(self._hashes)
