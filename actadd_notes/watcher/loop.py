"""The watcher: spec notes in, results out, one job at a time (several on Ray), crash-safe.

A thread turns file events into debounced batches (`watch_vault`); the main loop runs the
queued spec notes in arrival order — each on a thread of its own when `concurrent` > 1 (the
vault's `concurrent_specs`, with `executor: ray`), every one claimed first so none runs twice.
On start a scan (`vault.scan`: a textual pre-filter, so
only notes that declare themselves specs are parsed) picks up every `status: queued` spec, and
a job left `running` by a dead process (its claim's pid is gone) is resumed with its run id,
so its outputs are rewritten, never duplicated. A note the watcher cannot or must not run (a
link out of the vault, a sync tool's copy, properties it cannot read) is passed over with a
logged reason, and a spec whose properties cannot be read gets the reason in its body (its
frontmatter untouched). SIGTERM / Ctrl-C stop at the next batch: the current job goes back to
`queued`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actadd_notes.errors import ActaddError, VaultError
from actadd_notes.jobs import QUEUED, RUNNING, JobOutcome, JobRunner
from actadd_notes.vault.notes import UnreadableProperties, escape_markers, write_error_region
from actadd_notes.vault.scan import NoteFilter, Spec, examine_spec, scan_specs, spec_status
from actadd_notes.watcher.events import Change, SelfWrites, WatchdogSource, watch_vault
from actadd_notes.watcher.lock import JobClaims, VaultLock

Log = Callable[[str], None]
ERROR_REGION = "actadd-error"


class _StartedSource(WatchdogSource):
    """The real event source, telling the watcher when its watches are in place: the
    start-up scan must come after that, or a note saved between the two is never seen."""

    def __init__(self, root: Path, **options: Any):
        super().__init__(root, **options)
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
        concurrent: int = 1,
    ):
        self.runner = runner
        self.concurrent = max(1, concurrent)
        self._running: dict[Path, threading.Thread] = {}
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
        self._passed_over: dict[Path, str] = {}  # notes skipped, and why: each reason is logged once
        self._watch_error: ActaddError | None = None  # why the event thread stopped, if it failed

    # ----------------------------------------------------------------- start
    def startup(self, claims: JobClaims) -> None:
        """Resume jobs of dead processes, then queue every `queued` spec note."""
        for spec in scan_specs(self.config):
            if spec.skipped is not None:
                self._pass_over(spec)
            elif spec.status == RUNNING and not self._claimed_alive(claims, spec.path):
                self.log(f"resuming {self._name(spec.path)} (left running by a stopped process)")
                self.pending[spec.path] = None
            elif spec.status == QUEUED:
                self.pending[spec.path] = None

    def _claimed_alive(self, claims: JobClaims, path: Path) -> bool:
        try:
            if claims.claim(path, "probe"):
                claims.release(path)
                return False
        except VaultError as error:  # a claim file the tool must not touch: leave the job alone
            self.log(f"{self._name(path)}: {error}")
        return True

    # ------------------------------------------------------------------ loop
    def serve(self) -> list[JobOutcome]:
        """Run until `stop_event` is set; returns the outcomes of the jobs it ran.

        Raises VaultError when the vault is locked by another watcher, or when watching
        fails (the vault deleted, inotify limits), after putting the current job back."""
        with VaultLock(self.root), JobClaims(self.root) as claims:
            inbox: queue.Queue[set[tuple[Change, Path]]] = queue.Queue()
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
                    elif self._next() is not None and len(self._running) < self.concurrent:
                        self._run_next(claims)
            finally:
                self.stop_event.set()
                for job in list(self._running.values()):  # each stops at its next batch
                    job.join()
                events.join(timeout=5)
        if self._watch_error is not None:
            raise self._watch_error
        return self.outcomes

    def _pump(self, inbox: queue.Queue[set[tuple[Change, Path]]], source: WatchdogSource) -> None:
        config = self.config
        note_filter = NoteFilter(
            root=self.root, ignore_paths=[config.path(config.results_folder), config.path(config.artifacts_folder)]
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

    def _drain(self, inbox: queue.Queue[set[tuple[Change, Path]]], timeout: float) -> None:
        try:
            batch = inbox.get(timeout=timeout)
        except queue.Empty:
            return
        for change, path in sorted(batch, key=lambda item: str(item[1])):
            if change != Change.deleted:
                self._consider(path)

    def _consider(self, path: Path, *, retried: bool = False) -> None:
        if self.self_writes.is_own(path):
            return
        spec = examine_spec(self.config, path)
        if spec is None:
            self.retry.pop(path, None)
            self._passed_over.pop(path, None)
            return
        if spec.skipped is not None:
            if spec.error is not None and not retried:  # half-written, perhaps: look again after the debounce
                self.retry.setdefault(path, time.monotonic() + self.debounce_ms / 1000)
                return
            self.retry.pop(path, None)
            self._pass_over(spec)
            return
        self.retry.pop(path, None)
        self._passed_over.pop(path, None)
        if spec.status == QUEUED and path not in self.pending:
            self.log(f"queued {self._name(path)}")
            self.pending[path] = None

    def _check_retries(self) -> None:
        now = time.monotonic()
        for path, due in list(self.retry.items()):
            if due <= now:
                del self.retry[path]
                self._consider(path, retried=True)

    def _pass_over(self, spec: Spec) -> None:
        """Log why a note is not run (once per reason), and put the reason into a spec note whose
        properties cannot be read: its body is where the user looks; its frontmatter stays as typed."""
        reason = spec.skipped or ""
        if self._passed_over.get(spec.path) == reason:
            return
        self._passed_over[spec.path] = reason
        detail = reason.removeprefix(f"{spec.path}: ")
        self.log(f"{self._name(spec.path)}: {detail} — the watcher goes on")
        if not isinstance(spec.error, UnreadableProperties):
            return
        lines = "\n> ".join(escape_markers(detail).splitlines())
        callout = f"> [!error] actadd-notes cannot read this note's properties\n> {lines}\n> Fix them and save."
        try:
            text = write_error_region(spec.path, ERROR_REGION, callout, vault=self.root)
        except VaultError as error:
            self.log(f"{self._name(spec.path)}: {error}")
            return
        if text is not None:
            self.self_writes.remember(spec.path, text)

    def _next(self) -> Path | None:
        """The first queued note not running now (one saved again while it runs waits its turn)."""
        return next((path for path in self.pending if path not in self._running), None)

    def _run_next(self, claims: JobClaims) -> None:
        path = self._next()
        assert path is not None
        del self.pending[path]
        if spec_status(self.config, path) not in (QUEUED, RUNNING):
            return
        name = self._name(path)
        try:
            if not claims.claim(path, "watcher"):
                self.log(f"{name}: another process runs it; skipped")
                return
        except VaultError as error:  # its claim file is a link, say: never touched
            self.log(f"{name}: {error}; skipped")
            return
        if self.concurrent == 1:
            self._run_claimed(claims, path, name)
            return
        job = threading.Thread(target=self._run_claimed, args=(claims, path, name), name=f"actadd-job-{name}")
        self._running[path] = job
        job.start()

    def _run_claimed(self, claims: JobClaims, path: Path, name: str) -> None:
        try:
            self.log(f"running {name}")
            outcome = self.runner.run(path, interrupted=self.stop_event.is_set)
        except ActaddError as error:  # a write failed; the note stays as it was
            self.log(f"{name}: {error}")
            return
        except Exception as error:  # whatever a note holds, the watcher goes on to the next one
            self.log(f"{name}: internal error ({type(error).__name__}: {str(error)[:500]}); skipped")
            return
        finally:
            claims.release(path)
            self._running.pop(path, None)
        self.outcomes.append(outcome)
        detail = (outcome.error or outcome.summary).removeprefix(f"{name}: ")  # errors name the note already
        self.log(f"{outcome.status} {name}{': ' + detail if detail else ''}")

    def _name(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)
