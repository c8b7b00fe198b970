"""The sweep-comparison note: one row per run, from the result notes' properties alone, so it
covers runs of any model and date; the runs view (a Bases file) is embedded above the table.

The note is the tool's, rewritten on every `compare`, except its `notes` region, which is the
user's and carried over; a note of the same name that the tool did not write is never replaced."""

from __future__ import annotations

from pathlib import Path

from actadd_notes.errors import VaultError
from actadd_notes.vault.bases import ensure_runs_view, runs_view_embed
from actadd_notes.vault.config import VaultConfig
from actadd_notes.vault.notes import Note, rewrite_note
from actadd_notes.vault.scan import result_notes
from actadd_notes.vault.templates import TemplateRenderer

COMPARISON_NOTE = "Sweep comparison.md"
COMPARISON_TYPE = "actadd-comparison"
COLUMNS = (
    "model", "method", "best_layer", "best_coeff", "objective", "baseline_value", "search_value",
    "confirmed_difference", "confirmed_ci_low", "confirmed_ci_high", "control_difference", "effect", "scope",
    "prompts", "versus_prompting", "date",
)  # fmt: skip


def write_comparison(config: VaultConfig, renderer: TemplateRenderer | None = None) -> tuple[Path, int]:
    """Write (or refresh) the comparison note; returns its path and how many runs it lists."""
    renderer = renderer or TemplateRenderer.for_vault(config)
    runs = [
        {"link": config.relative(path), **{key: properties.get(key) for key in COLUMNS}}
        for path, properties in result_notes(config)
    ]
    for run in runs:
        run["date"] = str(run["date"] or "")
    runs.sort(key=lambda run: str(run["date"]))
    try:
        ensure_runs_view(config)
        embed = runs_view_embed(config)
    except VaultError:
        embed = None
    target = config.path(config.results_folder, COMPARISON_NOTE)

    def render(existing: Note) -> str:
        kind = existing.properties.get("type")
        if (existing.body.strip() or existing.properties) and kind != COMPARISON_TYPE:
            raise VaultError(
                f"{config.relative(target)} is a note the tool did not write (type: {kind!r}) — rename or move it, "
                "and compare writes its own; yours is left as it is",
                path=target,
            )
        notes = (existing.region("notes") or "").removesuffix("\n")  # the template ends the last line
        return renderer.render("sweep-comparison.md.j2", runs=runs, runs_view=embed, notes=notes)

    rewrite_note(target, render, vault=config.root, config_folder=config.config_folder)
    return target, len(runs)
