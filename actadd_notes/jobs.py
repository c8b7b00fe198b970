"""One experiment note, end to end: the wiring between the engine, the experiments and the vault.

Both `actadd-notes run` and the watcher call `JobRunner.run`. The note's `status` property is
the job's state machine, written only by the tool:

    queued → running → done | failed | cancelled     (the user sets `cancelled` to stop a run)

Crash safety comes from determinism: the run id is kept in the note while it runs, so a
job that is re-run after a crash writes the same result note, artifacts folder, journal
line and literature links instead of duplicates.
"""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actadd_notes.errors import ActaddError, Cancelled, SpecError, note_context
from actadd_notes.experiments.spec import ExperimentSpec, parse_spec
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.journal import append_journal_entry, journal_entry
from actadd_notes.vault.notes import Note, atomic_write_bytes, rewrite_note, update_note
from actadd_notes.vault.paths import safe_filename
from actadd_notes.vault.templates import TemplateRenderer

if TYPE_CHECKING:
    from actadd_notes.experiments.runner import ExperimentResult
    from actadd_notes.steering.lm import SteerableLM
    from actadd_notes.vault.watch import SelfWrites

SPEC_TYPE = "actadd-experiment"
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ERROR_REGION = "actadd-error"
PROGRESS_EVERY_S = 5.0

Progress = Callable[[int, int, str], None]
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobOutcome:
    note: Path
    status: str
    result_note: Path | None = None
    error: str | None = None
    summary: str = ""


class ModelPool:
    """Keeps the last model loaded, so consecutive jobs on the same model don't reload it
    (one at a time: GPU memory is the scarce thing)."""

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
        self._name: str | None = None
        self._lm: SteerableLM | None = None

    def get(self, name: str) -> SteerableLM:
        if self._name != name or self._lm is None:
            # Free the old one first; until the new one is in, no name matches, so a failed
            # load cannot leave the old name pointing at no model.
            self._name = self._lm = None
            if self._announce is not None:
                self._announce(f"loading model {name}…")
            loader = self._loader
            if loader is None:
                from actadd_notes.steering.models import load_model as loader
            self._lm = loader(name, **self._options)
            self._name = name
        return self._lm


def is_spec_note(note: Note) -> bool:
    return note.properties.get("type") == SPEC_TYPE


def spec_notes(config: VaultConfig) -> list[tuple[Path, str | None]]:
    """Every readable spec note of the vault (outside the tool's and Obsidian's folders) and its status."""
    from actadd_notes.vault.watch import Change, NoteFilter

    note_filter = NoteFilter(ignore_paths=[config.path(config.results_folder), config.path(config.artifacts_folder)])
    found = []
    for path in sorted(config.root.resolve().rglob("*.md")):
        if not note_filter(Change.added, path):
            continue
        try:
            note = Note.read(path)
        except (ActaddError, OSError):
            continue
        if is_spec_note(note):
            found.append((path, note.properties.get("status")))
    return found


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def relative(config: VaultConfig, path: Path) -> str:
    return path.resolve().relative_to(config.root.resolve()).as_posix()


class JobRunner:
    """Runs spec notes of one vault, writing every output through the vault layer."""

    def __init__(
        self,
        config: VaultConfig,
        *,
        models: ModelPool | None = None,
        renderer: TemplateRenderer | None = None,
        self_writes: SelfWrites | None = None,
        clock: Callable[[], datetime] = datetime.now,
        zotero_sources: list | None = None,
    ):
        self.config = config
        self.models = models or ModelPool()
        self.renderer = renderer or TemplateRenderer.for_vault(config)
        self.self_writes = self_writes
        self.clock = clock
        self._zotero_sources = zotero_sources

    # ------------------------------------------------------------ note state
    def _update(self, path: Path, change: Callable[[Note], None]) -> Note:
        note = update_note(path, change, vault=self.config.root, config_folder=self.config.config_folder)
        if self.self_writes is not None:
            self.self_writes.remember(path, note.text())
        return note

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
        callout = "> [!error] actadd-notes could not run this experiment\n> " + "\n> ".join(message.splitlines())

        def change(note: Note) -> None:
            note.set("status", FAILED)
            note.set("error", message)
            note.set("finished", self.clock().replace(microsecond=0))
            note.set_region(ERROR_REGION, callout, heading="Run error")

        self._update(path, change)
        return JobOutcome(path, FAILED, error=message)

    def status_of(self, path: Path) -> str | None:
        try:
            return Note.read(path).properties.get("status")
        except ActaddError:
            return None

    # ------------------------------------------------------------------ run
    def run(
        self, path: Path, *, progress: Progress | None = None, interrupted: Callable[[], bool] | None = None
    ) -> JobOutcome:
        """Run the spec note at `path` now, whatever its status; returns how it ended.

        `interrupted()` turning true (shutdown) stops at the next batch and re-queues the job;
        the user setting `status: cancelled` stops it and leaves it cancelled."""
        path = path.resolve()
        name = relative(self.config, path)
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
                spec, warnings = parse_spec(dict(note.properties), note.body, note=name)
        except ActaddError as error:
            return self.fail(path, error)
        resumed = note.properties.get("status") == RUNNING and note.properties.get("run_id")
        run_id = str(note.properties["run_id"]) if resumed else new_run_id(self.clock())
        earlier = note.properties.get("started")
        # a resumed run keeps its start, so its journal line and result date stay those of the run
        started = earlier if resumed and isinstance(earlier, datetime) else self.clock().replace(microsecond=0)
        self.mark(path, RUNNING, run_id=run_id, started=started, progress="0%", error=None, finished=None)
        try:
            with note_context(name):
                lm = self.models.get(spec.model)
                result = self._experiment(path, spec, lm, progress, interrupted or (lambda: False))
                result.warnings.extend(warnings)
                return self._publish(path, spec, lm, result, run_id, started)
        except Cancelled:
            if interrupted is not None and interrupted():
                self.mark(path, QUEUED, progress=None, run_id=None, started=None)
                return JobOutcome(path, QUEUED)
            self.mark(path, CANCELLED, progress=None, finished=self.clock().replace(microsecond=0))
            return JobOutcome(path, CANCELLED)
        except ActaddError as error:
            return self.fail(path, error)
        except Exception as error:  # a bug or a library failure: the note must not stay `running`
            _log.error("%s: unexpected error", name, exc_info=error)
            internal = ActaddError(f"internal error ({type(error).__name__}: {error}) — please report it")
            internal.note = name
            return self.fail(path, internal)

    def _experiment(
        self,
        path: Path,
        spec: ExperimentSpec,
        lm: SteerableLM,
        progress: Progress | None,
        interrupted: Callable[[], bool],
    ) -> ExperimentResult:
        from actadd_notes.experiments.runner import run_experiment

        last = [0.0]

        def report(done: int, total: int, stage: str) -> None:
            if progress is not None:
                progress(done, total, stage)
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                self._update(path, lambda note: note.set("progress", f"{100 * done // max(total, 1)}%"))

        return run_experiment(
            spec,
            lm,
            progress=report,
            cancelled=lambda: interrupted() or self.status_of(path) == CANCELLED,
            provenance=self._provenance(path),
            note=relative(self.config, path),
        )

    def _provenance(self, path: Path) -> dict[str, Any]:
        extra = {"spec_note": relative(self.config, path)}
        commit = vault_commit(self.config.root)
        if commit:
            extra["vault_git_commit"] = commit
        return extra

    # -------------------------------------------------------------- outputs
    def _publish(
        self,
        path: Path,
        spec: ExperimentSpec,
        lm: SteerableLM,
        result: ExperimentResult,
        run_id: str,
        started: datetime,
    ) -> JobOutcome:
        from actadd_notes.experiments.artifacts import COMPLETIONS, RESULTS, render_artifacts
        from actadd_notes.vault.literature import citekeys_from_links, link_experiment

        config = self.config
        literature = [str(x) for x in spec.literature]
        # Literature notes first, so that a citekey no source knows is a warning in the result
        # note (and results.json), not a failed run.
        citekeys, warnings = [], []
        for citekey in citekeys_from_links(literature):
            try:
                self._ensure_literature(citekey)
                citekeys.append(citekey)
            except ActaddError as error:
                warnings.append(f"literature {citekey}: {error}")
        result.warnings.extend(warnings)
        stem = safe_filename(path.stem)
        folder = config.path(config.artifacts_folder, f"{stem} {run_id}")
        files = render_artifacts(result, lm)
        for filename, data in files.items():
            atomic_write_bytes(folder / filename, data, vault=config.root, config_folder=config.config_folder)
        links = {name: relative(config, folder / name) for name in files}
        result_path = config.path(config.results_folder, f"{stem} {run_id}.md")
        effect = _effect(result)
        context = {
            "run": {
                "run_id": run_id,
                "date": started.isoformat(),
                "spec_link": relative(config, path),
                "spec_name": path.stem,
                "status": DONE,
            },
            "result": json.loads(files[RESULTS]),
            "effect": effect,
            "plots": [links[n] for n in files if n.endswith(".png")],
            "files": [links[n] for n in (RESULTS, COMPLETIONS)]
            + [links[n] for n in files if n.endswith(".safetensors")],
            "literature": literature,
        }
        text = rewrite_note(
            result_path,
            lambda existing: self.renderer.render("result-note.md.j2", **context, notes=existing.region("notes") or ""),
            vault=config.root,
            config_folder=config.config_folder,
        )
        if self.self_writes is not None:
            self.self_writes.remember(result_path, text)
        result_link = relative(config, result_path)
        summary = one_line_summary(result)
        self._journal(path, result_link, summary, started)
        target = result_link.removesuffix(".md")
        for citekey in citekeys:
            try:
                link_experiment(
                    config, citekey, run_link=target, line=f"- [[{target}|{path.stem} {run_id}]] — {summary}"
                )
            except ActaddError as error:
                warnings.append(f"literature {citekey}: {error}")
        best = result.best
        self.mark(
            path,
            DONE,
            progress="100%",
            finished=self.clock().replace(microsecond=0),
            result=f"[[{result_link.removesuffix('.md')}]]",
            best_layer=best.setting.layer if best else None,
            best_coeff=best.setting.coeff if best else None,
        )
        return JobOutcome(path, DONE, result_path, summary="; ".join([summary, *warnings]))

    def _journal(self, path: Path, result_link: str, outcome: str, when: datetime) -> None:
        """One line per run, in the daily note of the day it started; a re-run of the same run id
        (after a crash, perhaps the next day) adds no second line."""
        from actadd_notes.vault.journal import daily_note_path

        daily = daily_note_path(self.config, when)
        target = result_link.removesuffix(".md")
        if daily.is_file() and f"[[{target}" in daily.read_text(encoding="utf-8"):
            return
        entry = journal_entry(
            self.renderer, when=when, spec_link=relative(self.config, path), outcome=outcome, result_link=result_link
        )
        append_journal_entry(self.config, self.renderer, when=when, entry=entry)

    def _ensure_literature(self, citekey: str) -> None:
        from actadd_notes.vault.literature import ensure_literature_notes, literature_note_path
        from actadd_notes.vault.zotero import sources_from_config

        if literature_note_path(self.config, citekey).is_file():
            return
        sources = self._zotero_sources if self._zotero_sources is not None else sources_from_config(self.config)
        outcome = ensure_literature_notes(self.config, self.renderer, [citekey], sources)[citekey]
        if isinstance(outcome, Exception):
            raise outcome


def _effect(result: ExperimentResult) -> str:
    best = result.best
    if best is None:
        return "none"
    diff = best.differences.get(result.objective)
    if diff is None or diff.ci_low is None:
        return "unknown"
    wanted = diff.ci_low > 0 if result.spec.direction == "maximize" else diff.ci_high < 0
    return "detected" if wanted else "none"


def one_line_summary(result: ExperimentResult) -> str:
    metric = result.objective
    best = result.best
    base = _number(result.baseline.metrics[metric].mean, ".3f")
    if best is None:
        return f"no setting passed the fluency guard ({metric} baseline {base})"
    diff = best.differences[metric]
    verdict = {"detected": "effect", "unknown": "too few samples for a CI"}.get(_effect(result), "no detectable effect")
    return (
        f"best {best.setting.label}: {metric} {_number(best.metrics[metric].mean, '.3f')} vs baseline {base} "
        f"(Δ {_number(diff.estimate, '+.3f')} [{_number(diff.ci_low, '+.3f')}, {_number(diff.ci_high, '+.3f')}]; {verdict})"
    )


def _number(value: float | None, spec: str) -> str:
    """A statistic, or "n/a" where the data cannot give one (one sample: no CI)."""
    return "n/a" if value is None else format(value, spec)


RESULT_TYPE = "actadd-result"
COMPARISON_NOTE = "Sweep comparison.md"


def write_comparison(config: VaultConfig, renderer: TemplateRenderer | None = None) -> tuple[Path, int]:
    """Write (or refresh) a note comparing the best setting of every result note in the vault.

    Reads only the result notes' properties, so it works for runs of any model and date.
    Returns the note's path and how many runs it lists."""
    from actadd_notes.vault.watch import Change, NoteFilter

    renderer = renderer or TemplateRenderer.for_vault(config)
    folder = config.path(config.results_folder)
    note_filter = NoteFilter()
    runs = []
    for path in sorted(folder.rglob("*.md")) if folder.is_dir() else []:
        if not note_filter(Change.added, path):
            continue
        try:
            properties = Note.read(path).properties
        except (ActaddError, OSError):
            continue
        if properties.get("type") != RESULT_TYPE:
            continue
        runs.append(
            {
                "link": relative(config, path),
                "model": properties.get("model"),
                "best_layer": properties.get("best_layer"),
                "best_coeff": properties.get("best_coeff"),
                "objective": properties.get("objective"),
                "objective_value": properties.get("best_value"),
                "baseline_value": properties.get("baseline_value"),
                "date": str(properties.get("date", "")),
            }
        )
    runs.sort(key=lambda run: run["date"])
    text = renderer.render("sweep-comparison.md.j2", runs=runs)
    target = folder / COMPARISON_NOTE
    rewrite_note(target, lambda existing: text, vault=config.root, config_folder=config.config_folder)
    return target, len(runs)


def vault_commit(root: Path) -> str | None:
    """The vault's git commit, when the vault is a repository (provenance only)."""
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None
