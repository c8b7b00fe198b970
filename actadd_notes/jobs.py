"""One experiment note, end to end: the job's state machine.

Both `actadd-notes run` and the watcher call `JobRunner.run`. The note's `status` property is
the job's state, written only by the tool:

    queued → running → done | failed | cancelled     (the user sets `cancelled` to stop a run)

Everything that can be checked is checked before the first forward pass (the spec, the note's
name, the model's layers and context); once the run has computed its result, publishing
(`publish.py`) must not lose it. Crash safety comes from determinism: the run id is kept in the
note while it runs, so a job re-run after a crash writes the same result note, artifacts
folder, journal line and literature links instead of duplicates.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actadd_notes.errors import ActaddError, Cancelled, ConflictError, SpecError, VaultError, note_context
from actadd_notes.experiments.spec import ExperimentSpec, parse_spec
from actadd_notes.publish import Publisher, Run
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.git import vault_commit
from actadd_notes.vault.notes import Note, escape_markers, update_note
from actadd_notes.vault.paths import check_note_name
from actadd_notes.vault.scan import SPEC_TYPE, spec_status
from actadd_notes.vault.templates import TemplateRenderer

if TYPE_CHECKING:
    from actadd_notes.experiments.results import ExperimentResult
    from actadd_notes.experiments.rows import Executor
    from actadd_notes.steering.lm import SteerableLM
    from actadd_notes.watcher.events import SelfWrites

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ERROR_REGION = "actadd-error"
PROGRESS_EVERY_S = 5.0
STATUS_WRITE_S = 30.0  # how long a status write keeps trying against a note the user keeps saving

Progress = Callable[[int, int, str], None]
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobOutcome:
    note: Path
    status: str
    result_note: Path | None = None
    error: str | None = None
    summary: str = ""


class ModelSlot:
    """Holds the model the last job loaded, so consecutive jobs on the same model (and
    precision) don't reload it; one at a time, because GPU memory is the scarce thing."""

    def __init__(
        self,
        loader: Callable[..., SteerableLM] | None = None,
        *,
        announce: Callable[[str], None] | None = None,
        **options: Any,
    ):
        self._loader = loader
        self._announce = announce
        self._options = options
        self._key: tuple[str, str] | None = None
        self._lm: SteerableLM | None = None

    def get(self, name: str, dtype: str = "auto") -> SteerableLM:
        """The model `name`; `dtype` other than auto overrides the slot's default precision."""
        key = (name, dtype)
        if self._key != key or self._lm is None:
            # Free the old one first; until the new one is in, no key matches, so a failed
            # load cannot leave the old key pointing at no model.
            self._key = self._lm = None
            if self._announce is not None:
                self._announce(f"loading model {name}…")
            loader = self._loader or _load_model
            options = {**self._options, **({"dtype": dtype} if dtype != "auto" else {})}
            self._lm = loader(name, **options)
            self._key = key
        return self._lm


def _load_model(name: str, **options: Any) -> SteerableLM:
    from actadd_notes.steering.models import load_model  # torch loads with the first model, not before

    return load_model(name, **options)


def is_spec_note(note: Note) -> bool:
    return note.properties.get("type") == SPEC_TYPE


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


class JobRunner:
    """Runs spec notes of one vault, writing every output through the vault layer."""

    def __init__(
        self,
        config: VaultConfig,
        *,
        models: ModelSlot | None = None,
        renderer: TemplateRenderer | None = None,
        self_writes: SelfWrites | None = None,
        clock: Callable[[], datetime] = datetime.now,
        zotero_sources: list[Any] | None = None,
        executor: Executor | None = None,
    ):
        self.config = config
        self.executor = executor  # None: rows generated in this process
        self.models = models or ModelSlot()
        self.renderer = renderer or TemplateRenderer.for_vault(config)
        self.self_writes = self_writes
        self.clock = clock
        self._zotero_sources = zotero_sources
        self.publisher = Publisher(
            config, self.renderer, remember=self._remember, ensure_literature=self._ensure_literature
        )

    # ------------------------------------------------------------ note state
    def _remember(self, path: Path, text: str) -> None:
        if self.self_writes is not None:
            self.self_writes.remember(path, text)

    def _update(self, path: Path, change: Callable[[Note], None]) -> Note:
        """A status write: it must land, so a note the user keeps saving is tried again, with pauses
        that give the other writer its turn, for up to `STATUS_WRITE_S` seconds."""
        deadline = time.monotonic() + STATUS_WRITE_S
        pause = 0.01
        while True:
            try:
                note = update_note(path, change, vault=self.config.root, config_folder=self.config.config_folder)
            except ConflictError:
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(2 * pause, 0.5)
                continue
            self._remember(path, note.text())
            return note

    def _progress(self, path: Path, percent: int) -> None:
        """Progress is best-effort: a note that is being edited keeps its old percentage, the run goes on."""
        try:
            note = update_note(
                path, lambda n: n.set("progress", f"{percent}%"), vault=self.config.root,
                config_folder=self.config.config_folder,
            )  # fmt: skip
        except ConflictError as error:
            _log.info("%s: progress not written (%s)", path.name, error)
            return
        self._remember(path, note.text())

    def mark(self, path: Path, status: str, **properties: Any) -> None:
        """Set `status` and tool-owned properties; a `None` value removes the key."""

        def change(note: Note) -> None:
            note.set("status", status)
            for key, value in properties.items():
                if value is None:
                    note.properties.pop(key, None)
                else:
                    note.set(key, value)
            if status != FAILED and note.region(ERROR_REGION) is not None:
                note.set_region(ERROR_REGION, "")

        self._update(path, change)

    def fail(self, path: Path, error: Exception) -> JobOutcome:
        """Mark the note failed and show the error in a callout at the end of the note."""
        message = str(error)
        lines = escape_markers(message).splitlines()
        callout = "> [!error] actadd-notes could not run this experiment\n> " + "\n> ".join(lines)

        def change(note: Note) -> None:
            note.set("status", FAILED)
            note.set("error", message)
            note.set("finished", self.clock().replace(microsecond=0))
            note.set_region(ERROR_REGION, callout, heading="Run error")

        self._update(path, change)
        return JobOutcome(path, FAILED, error=message)

    def status_of(self, path: Path) -> str | None:
        return spec_status(self.config, path)

    # ------------------------------------------------------------------ run
    def run(
        self, path: Path, *, progress: Progress | None = None, interrupted: Callable[[], bool] | None = None
    ) -> JobOutcome:
        """Run the spec note at `path` now, whatever its status; returns how it ended.

        `interrupted()` turning true (shutdown) stops at the next batch and re-queues the job;
        the user setting `status: cancelled` stops it and leaves it cancelled. Jobs of one runner
        may run on several threads when its executor takes turns (`scaleout/executor.py`)."""
        with self.executor.turn() if self.executor is not None else nullcontext():
            return self._run(path, progress, interrupted)

    def _run(self, path: Path, progress: Progress | None, interrupted: Callable[[], bool] | None) -> JobOutcome:
        path = path.resolve()
        name = self.config.relative(path)
        with note_context(name):
            # A note whose properties cannot be parsed is never rewritten (VaultError), and a
            # note that is no spec is refused before anything is written into it.
            note = Note.read(path)
            if not is_spec_note(note):
                raise SpecError(
                    f"{note.properties.get('type')!r} — an experiment note has type: {SPEC_TYPE}", key="type"
                )
        try:
            with note_context(name):
                spec, warnings = parse_spec(
                    dict(note.properties), note.body, note=name, resolve_pairs=self._pairs,
                    resolve_file=self._data_file, resolve_vector=self._vector_file,
                )  # fmt: skip
                check_note_name(self.config.root, path)  # its result note and journal line must link to it
        except ActaddError as error:
            return self.fail(path, error)
        except Exception as error:  # a bug in reading a spec must fail this note, not stop the watcher
            return self.fail(path, _internal(name, error))
        resumed = note.properties.get("status") == RUNNING and note.properties.get("run_id")
        run_id = str(note.properties["run_id"]) if resumed else new_run_id(self.clock())
        earlier = note.properties.get("started")
        # a resumed run keeps its start, so its journal line and result date stay those of the run
        started = earlier if resumed and isinstance(earlier, datetime) else self.clock().replace(microsecond=0)
        self.mark(path, RUNNING, run_id=run_id, started=started, progress="0%", error=None, finished=None)
        try:
            with note_context(name):
                lm = self.models.get(spec.model, spec.dtype)
                result = self._experiment(path, spec, lm, progress, interrupted or (lambda: False))
                result.warnings.extend(warnings)
                published = self.publisher.publish(Run(path, run_id, started), result)
        except Cancelled:
            if interrupted is not None and interrupted():
                self.mark(path, QUEUED, progress=None, run_id=None, started=None)
                return JobOutcome(path, QUEUED)
            self.mark(path, CANCELLED, progress=None, finished=self.clock().replace(microsecond=0))
            return JobOutcome(path, CANCELLED)
        except ActaddError as error:
            return self.fail(path, error)
        except Exception as error:  # a bug or a library failure: the note must not stay `running`
            return self.fail(path, _internal(name, error))
        best = result.best
        self.mark(
            path,
            DONE,
            progress="100%",
            finished=self.clock().replace(microsecond=0),
            result=f"[[{self.config.relative(published.result_note).removesuffix('.md')}]]",
            best_layer=best.setting.layer if best else None,
            best_coeff=best.setting.coeff if best else None,
        )
        return JobOutcome(
            path, DONE, published.result_note, summary="; ".join([published.summary, *published.warnings])
        )

    def _experiment(
        self,
        path: Path,
        spec: ExperimentSpec,
        lm: SteerableLM,
        progress: Progress | None,
        interrupted: Callable[[], bool],
    ) -> ExperimentResult:
        from actadd_notes.experiments.pipeline import run_experiment

        last = [0.0]
        started = [False]

        def report(done: int, total: int, stage: str) -> None:
            if progress is not None:
                progress(done, total, stage)
            now = time.monotonic()
            # the first finished batch shows at once, as at least 1% (the model is loaded and generating);
            # later ones every few seconds
            if now - last[0] >= PROGRESS_EVERY_S or (done > 0 and not started[0]):
                last[0], started[0] = now, done > 0
                percent = 100 * done // max(total, 1) or (1 if done else 0)
                self._progress(path, percent)

        return run_experiment(
            spec,
            lm,
            progress=report,
            cancelled=lambda: interrupted() or self.status_of(path) == CANCELLED,
            provenance=self._provenance(path),
            note=self.config.relative(path),
            executor=self.executor,
        )

    def _pairs(self, link: str) -> tuple[str, list[tuple[str, str]]]:
        """A spec's `pairs: "[[note]]"`: the note's vault path and its pairs."""
        from actadd_notes.vault.pairs import read_pairs

        path, pairs = read_pairs(self.config, link)
        return self.config.relative(path), pairs

    def _data_file(self, link: str) -> Path:
        """A spec's `prompts: "[[Data/x.csv]]"`: the file's path, inside the vault."""
        from actadd_notes.vault.data_files import resolve_data_file

        return resolve_data_file(self.config, link)

    def _vector_file(self, link: str) -> Path:
        """A spec's `vector: "[[Vectors/x.gguf]]"`: a .gguf or .safetensors file's path, inside the vault."""
        from actadd_notes.steering.vector_files import VECTOR_SUFFIXES
        from actadd_notes.vault.data_files import resolve_link

        path = resolve_link(self.config, link)
        if path.suffix.lower() not in VECTOR_SUFFIXES:
            raise VaultError(
                f"{link}: {path.name!r} is not a vector file — link a .gguf or .safetensors file", path=link
            )
        return path

    def _provenance(self, path: Path) -> dict[str, Any]:
        extra = {"spec_note": self.config.relative(path)}
        commit = vault_commit(self.config.root)
        if commit:
            extra["vault_git_commit"] = commit
        return extra

    def _ensure_literature(self, citekey: str) -> None:
        from actadd_notes.vault.literature import ensure_literature_notes, literature_note_path
        from actadd_notes.zotero import sources_from_config

        if literature_note_path(self.config, citekey).is_file():
            return
        sources = self._zotero_sources if self._zotero_sources is not None else sources_from_config(self.config)
        outcome = ensure_literature_notes(self.config, self.renderer, [citekey], sources)[citekey]
        if isinstance(outcome, Exception):
            raise outcome


def _internal(name: str, error: Exception) -> ActaddError:
    """An unexpected error as the note's error: logged with its traceback, shown with its type."""
    _log.error("%s: unexpected error", name, exc_info=error)
    internal = ActaddError(f"internal error ({type(error).__name__}: {str(error)[:500]}) — please report it")
    internal.note = name
    return internal
