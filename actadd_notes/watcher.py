"""The watcher: spec notes in, results out, one job at a time, crash-safe.

A thread turns file events into debounced batches (`watch_vault`); the main loop runs the
queued spec notes in arrival order. On start a full scan picks up every `status: queued`
spec, and a job left `running` by a dead process (its claim's pid is gone) is resumed with
its run id, so its outputs are rewritten, never duplicated. SIGTERM / Ctrl-C stop at the
next batch: the current job goes back to `queued`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from actadd_notes.errors import ActaddError, VaultError
from actadd_notes.jobs import QUEUED, RUNNING, JobOutcome, JobRunner, is_spec_note, relative, spec_notes
from actadd_notes.vault.lock import JobClaims, VaultLock
from actadd_notes.vault.notes import Note
from actadd_notes.vault.watch import Change, NoteFilter, SelfWrites, WatchdogSource, watch_vault

Log = Callable[[str], None]


class _StartedSource(WatchdogSource):
    """The real event source, telling the watcher when its watches are in place: the
    start-up scan must come after that, or a note saved between the two is never seen."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started = threading.Event()

    def start(self) -> None:
        super().start()
        self.started.set()


class Watcher:
    def __init__(
        self,
        runner: JobRunner,
        *,
        debounce_ms: int = 1_600,
        step_ms: int = 50,
        force_polling: bool = False,
        stop_event: threading.Event | None = None,
        log: Log = print,
    ):
        self.runner = runner
        self.config = runner.config
        self.root = runner.config.root.resolve()
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self.force_polling = force_polling
        self.stop_event = stop_event or threading.Event()
        self.log = log
        if runner.self_writes is None:
            runner.self_writes = SelfWrites()
        self.self_writes = runner.self_writes
        self.pending: dict[Path, None] = {}  # insertion-ordered set of notes to run
        self.retry: dict[Path, float] = {}  # unreadable notes, checked again after the debounce
        self.outcomes: list[JobOutcome] = []
        self._watch_error: ActaddError | None = None  # why the event thread stopped, if it failed

    # ----------------------------------------------------------------- start
    def startup(self, claims: JobClaims) -> None:
        """Resume jobs of dead processes, then queue every `queued` spec note."""
        for path, status in spec_notes(self.config):
            if status == RUNNING and not self._claimed_alive(claims, path):
                self.log(f"resuming {relative(self.config, path)} (left running by a stopped process)")
                self.pending[path] = None
            elif status == QUEUED:
                self.pending[path] = None

    @staticmethod
    def _claimed_alive(claims: JobClaims, path: Path) -> bool:
        if claims.claim(path, "probe"):
            claims.release(path)
            return False
        return True

    def _status(self, path: Path) -> str | None:
        try:
            note = Note.read(path)
        except (ActaddError, OSError):
            return None
        return note.properties.get("status") if is_spec_note(note) else None

    # ------------------------------------------------------------------ loop
    def serve(self) -> list[JobOutcome]:
        """Run until `stop_event` is set; returns the outcomes of the jobs it ran.

        Raises VaultError when the vault is locked by another watcher, or when watching
        fails (the vault deleted, inotify limits), after putting the current job back."""
        with VaultLock(self.root), JobClaims(self.root) as claims:
            inbox: queue.Queue = queue.Queue()
            source = _StartedSource(self.root, force_polling=self.force_polling)
            events = threading.Thread(target=self._pump, args=(inbox, source), name="actadd-watch", daemon=True)
            events.start()
            try:
                while not source.started.wait(0.05) and events.is_alive():
                    pass
                if source.started.is_set():
                    self.startup(claims)
                    self.log(f"watching {self.root} ({len(self.pending)} job(s) queued)")
                while not self.stop_event.is_set():
                    self._drain(inbox, timeout=0.1 if self.pending or self.retry else 0.5)
                    self._check_retries()
                    if not self.root.is_dir():  # inotify misses it while our lock file is open in it
                        self._stopped(VaultError(f"{self.root} was deleted or moved", path=self.root))
                    elif self.pending:
                        self._run_next(claims)
            finally:
                self.stop_event.set()
                events.join(timeout=5)
        if self._watch_error is not None:
            raise self._watch_error
        return self.outcomes

    def _pump(self, inbox: queue.Queue, source: WatchdogSource) -> None:
        config = self.config
        note_filter = NoteFilter(
            ignore_paths=[config.path(config.results_folder), config.path(config.artifacts_folder)]
        )
        try:
            for batch in watch_vault(
                self.root,
                note_filter=note_filter,
                debounce_ms=self.debounce_ms,
                step_ms=self.step_ms,
                stop_event=self.stop_event,
                event_source=source,
            ):
                inbox.put(batch)
        except Exception as error:  # the vault vanished, inotify limits…: stop, and say why
            self._stopped(error if isinstance(error, ActaddError) else VaultError(f"{type(error).__name__}: {error}"))

    def _stopped(self, error: ActaddError) -> None:
        """Watching failed: stop the loop; `serve` raises the error once it has cleaned up."""
        if self._watch_error is None:
            self._watch_error = VaultError(f"watching {self.root} stopped: {error}", path=self.root)
            self.log(str(self._watch_error))
        self.stop_event.set()

    def _drain(self, inbox: queue.Queue, timeout: float) -> None:
        try:
            batch = inbox.get(timeout=timeout)
        except queue.Empty:
            return
        for change, path in sorted(batch, key=lambda item: str(item[1])):
            if change != Change.deleted:
                self._consider(path)

    def _consider(self, path: Path) -> None:
        if self.self_writes.is_own(path):
            return
        try:
            note = Note.read(path)
        except VaultError as error:  # half-written or invalid YAML: look again after the debounce
            if path in self.retry or not path.exists():  # (or deleted since the event)
                return
            self.retry[path] = time.monotonic() + self.debounce_ms / 1000
            self.log(f"{relative(self.config, path)}: cannot read yet ({error}); trying again")
            return
        except FileNotFoundError:
            return
        self.retry.pop(path, None)
        if is_spec_note(note) and note.properties.get("status") == QUEUED and path not in self.pending:
            self.log(f"queued {relative(self.config, path)}")
            self.pending[path] = None

    def _check_retries(self) -> None:
        now = time.monotonic()
        for path, due in list(self.retry.items()):
            if due > now:
                continue
            del self.retry[path]
            try:
                Note.read(path)
            except VaultError as error:
                if not path.exists():
                    continue
                # Never rewrite a note whose properties cannot be parsed: its words stay as typed.
                self.log(f"{relative(self.config, path)}: {error} — fix the properties; the watcher goes on")
                continue
            except FileNotFoundError:
                continue
            self._consider(path)

    def _run_next(self, claims: JobClaims) -> None:
        path = next(iter(self.pending))
        del self.pending[path]
        if self._status(path) not in (QUEUED, RUNNING):
            return
        name = relative(self.config, path)
        if not claims.claim(path, "watcher"):
            self.log(f"{name}: another process runs it; skipped")
            return
        try:
            self.log(f"running {name}")
            outcome = self.runner.run(path, interrupted=self.stop_event.is_set)
        except ActaddError as error:  # a write failed; the note stays as it was
            self.log(f"{name}: {error}")
            return
        finally:
            claims.release(path)
        self.outcomes.append(outcome)
        detail = (outcome.error or outcome.summary).removeprefix(f"{name}: ")  # errors name the note already
        self.log(f"{outcome.status} {name}{': ' + detail if detail else ''}")
