"""Publishing a finished run into the vault: artifacts, the result note, the runs view, the lab
journal line and the literature links.

The result is already computed when this runs, so nothing here may lose it: the artifacts and
the result note are written first, before any literature lookup, and a failure of any kind in
anything after them (a daily note that is not UTF-8, a literature note that cannot be read, a
Zotero source that sends nonsense or an HTTP stack that raises what no one expected) becomes a
warning in the result note, not a failed run. Everything comes from the `ExperimentResult`; no
model is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from actadd_notes.errors import ActaddError
from actadd_notes.experiments.artifacts import (
    COMPLETIONS,
    PROMPTS,
    RESULTS,
    SETTINGS,
    STUDY,
    json_safe,
    render_artifacts,
)
from actadd_notes.experiments.plots import HEATMAP
from actadd_notes.experiments.report import headline, summary_line, wrong_way
from actadd_notes.experiments.results import ExperimentResult
from actadd_notes.vault.bases import ensure_runs_view
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.journal import append_journal_entry, journal_entry
from actadd_notes.vault.literature import citekeys_from_links, link_experiment
from actadd_notes.vault.notes import Note, atomic_write_bytes, rewrite_note
from actadd_notes.vault.paths import safe_filename
from actadd_notes.vault.templates import TemplateRenderer

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """Which run of which spec note is being published."""

    spec_path: Path
    run_id: str
    started: datetime


@dataclass(frozen=True)
class Published:
    result_note: Path
    summary: str
    warnings: tuple[str, ...]


class Publisher:
    """Writes one run's outputs through the vault layer (atomic, compare-and-swap, confined)."""

    def __init__(
        self,
        config: VaultConfig,
        renderer: TemplateRenderer,
        *,
        remember: Callable[[Path, str], None] | None = None,
        ensure_literature: Callable[[str], None] | None = None,
    ):
        self.config = config
        self.renderer = renderer
        self._remember = remember or (lambda path, text: None)
        self._ensure_literature = ensure_literature or (lambda citekey: None)

    def result_path(self, run: Run) -> Path:
        return self.config.path(self.config.results_folder, f"{safe_filename(run.spec_path.stem)} {run.run_id}.md")

    def publish(self, run: Run, result: ExperimentResult) -> Published:
        """Artifacts, then the result note, then everything else. The first two are the run's
        result; once they are on disk, no later step (the runs view, literature lookups in
        Zotero, the lab journal, experiment links) can lose it: each step's failure, of any
        kind, becomes a warning, and the note is written again to show the warnings."""
        config = self.config
        folder = config.path(config.artifacts_folder, f"{safe_filename(run.spec_path.stem)} {run.run_id}")
        files = render_artifacts(result)
        for filename, data in files.items():
            atomic_write_bytes(folder / filename, data, vault=config.root, config_folder=config.config_folder)
        links = {name: config.relative(folder / name) for name in files}
        result_path = self.result_path(run)
        self._write_note(run, result, links, result_path, list(result.warnings))
        summary = summary_line(result)

        warnings: list[str] = []
        self._degrade("runs view", lambda: ensure_runs_view(config), warnings)
        citekeys = citekeys_from_links([str(link) for link in result.spec.literature])
        found = [c for c in citekeys if self._degrade(f"literature {c}", partial(self._ensure_literature, c), warnings)]
        result_link = config.relative(result_path)
        self._degrade("lab journal", lambda: self._journal(run, result_link, summary), warnings)
        target = result_link.removesuffix(".md")
        line = f"- [[{target}|{run.spec_path.stem} {run.run_id}]] — {summary}"
        for citekey in found:
            link = partial(link_experiment, config, citekey, run_link=target, line=line)
            self._degrade(f"literature {citekey}", link, warnings)
        unshown: list[str] = []
        if warnings:  # the note must say what did not get written after it
            note = partial(self._write_note, run, result, links, result_path, [*result.warnings, *warnings])
            self._degrade("result note warnings", note, unshown)  # the note stays; its warnings are lost
        return Published(result_path, summary, tuple(warnings + unshown))

    def _write_note(
        self, run: Run, result: ExperimentResult, links: dict[str, str], path: Path, warnings: list[str]
    ) -> None:
        config = self.config
        data = json_safe(result.to_dict())
        data["warnings"] = warnings
        context: dict[str, Any] = {
            "run": {
                "run_id": run.run_id,
                "date": run.started.isoformat(),
                "spec_link": config.relative(run.spec_path),
                "spec_name": run.spec_path.stem,
                "status": "done",
            },
            "result": data,
            "headline": json_safe(headline(result)),
            "plots": [links[n] for n in links if n.endswith(".png")],
            "heatmap": links.get(HEATMAP),
            "files": [links[n] for n in (RESULTS, COMPLETIONS, SETTINGS, PROMPTS) if n in links]
            + [links[n] for n in links if n.endswith(".safetensors")]
            + ([links[STUDY]] if STUDY in links else []),
            "study_path": links.get(STUDY),
            "wrong_way": wrong_way(result),
            "literature": [str(link) for link in result.spec.literature],
        }
        text = rewrite_note(
            path,
            lambda existing: self.renderer.render("result-note.md.j2", **context, notes=_user_notes(existing)),
            vault=config.root,
            config_folder=config.config_folder,
        )
        self._remember(path, text)

    def _journal(self, run: Run, result_link: str, summary: str) -> None:
        """One line per run, in the daily note of the day it started; a re-run of the same run id
        (after a crash, perhaps the next day) adds no second line."""
        entry = journal_entry(
            self.renderer,
            when=run.started,
            spec_link=self.config.relative(run.spec_path),
            outcome=summary,
            result_link=result_link,
        )
        target = result_link.removesuffix(".md")
        append_journal_entry(self.config, self.renderer, when=run.started, entry=entry, unless_present=f"[[{target}")

    @staticmethod
    def _degrade(what: str, step: Callable[[], object], warnings: list[str]) -> bool:
        """Run `step`; any failure becomes a warning, because the run's result must not be lost
        to it: a step after the result note is written may fail in ways no one listed (an
        httpx error, a recursion limit, an overflow in a parsed date), and each of them is a
        warning in the note, never an internal error that drops the run."""
        try:
            step()
        except ActaddError as error:
            warnings.append(f"{what}: {error}")
            return False
        except Exception as error:
            _log.warning("%s failed", what, exc_info=error)
            warnings.append(f"{what}: {type(error).__name__}: {error}")
            return False
        return True


def _user_notes(existing: Note) -> str:
    """The user's `notes` region, less the line break that ends its last line: the template ends it
    again, so a note written twice keeps the region as the user left it."""
    return (existing.region("notes") or "").removesuffix("\n")
