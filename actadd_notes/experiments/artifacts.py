"""Files a run produces — results.json, completions.csv, settings.csv, prompts.csv, plots, vectors,
the Optuna study — as bytes keyed by file name.

Bytes rather than paths: where they land (and how atomically) is the vault layer's business.
Everything comes from the `ExperimentResult`; no model is needed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from actadd_notes.experiments.degeneration import REPETITION, SPECIAL_TOKENS
from actadd_notes.experiments.metrics import PERPLEXITY, REGISTRY, rate_names
from actadd_notes.experiments.plots import plots
from actadd_notes.experiments.results import CONFIRMATION, SEARCH, ExperimentResult, SettingResult
from actadd_notes.experiments.stats import Difference

RESULTS = "results.json"
COMPLETIONS = "completions.csv"
SETTINGS = "settings.csv"
PROMPTS = "prompts.csv"
STUDY = "study.sqlite3"


def render_artifacts(result: ExperimentResult) -> dict[str, bytes]:
    """Every artifact of `result`, keyed by file name."""
    files = {
        RESULTS: json.dumps(json_safe(result.to_dict()), indent=2, ensure_ascii=False).encode(),
        COMPLETIONS: completions_csv(result),
        SETTINGS: settings_csv(result),
        PROMPTS: prompts_csv(result),
    }
    files.update(plots(result))
    files.update({f"{name}.safetensors": vector.to_bytes() for name, vector in result.vectors.items()})
    if result.study is not None:
        files[STUDY] = result.study
    return files


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _score_names(result: ExperimentResult) -> list[str]:
    """Per-completion scores: the guard's (perplexity, repetition, special-token rate), then the spec's
    text metrics in order (kl is per prompt, not per row)."""
    names = [REGISTRY[m].score_name for m in result.spec.metrics if m != "kl"]
    guarded = [PERPLEXITY, REPETITION, SPECIAL_TOKENS]
    return list(dict.fromkeys([*guarded, *names, *rate_names(result.spec.metrics)]))


def completions_csv(result: ExperimentResult) -> bytes:
    """Every completion with its scores. Encoded row by row into one buffer: at a data set's scale
    (tens of thousands of completions) the table exists once as bytes, not also as one long str."""
    names = _score_names(result)
    buffer = io.BytesIO()
    with io.TextIOWrapper(buffer, encoding="utf-8", newline="", write_through=True) as text:
        writer = csv.writer(text)
        writer.writerow(["stage", "setting", "layer", "coeff", "prompt", "sample", "seed", "completion", *names])
        for s in result.samples:
            writer.writerow([
                s.stage, s.setting.label, s.setting.layer, s.setting.coeff, s.completion.prompt, s.sample,
                s.completion.seed, s.completion.text, *(_cell(s.scores.get(n)) for n in names),
            ])  # fmt: skip
        return buffer.getvalue()


def settings_csv(result: ExperimentResult) -> bytes:
    """A tidy table for notebooks: one row per stage × setting × score, with the run's verdict."""
    columns = [
        "stage", "setting", "layer", "coeff", "control", "score", "is_objective", "mean", "ci_low", "ci_high",
        "n", "difference", "difference_ci_low", "difference_ci_high", "p_value", "p_holm", "perplexity_ratio",
        "rejected", "rejected_for", "is_best", "effect",
    ]  # fmt: skip
    rows: list[tuple[str, SettingResult]] = [(SEARCH, result.baseline), *((SEARCH, s) for s in result.settings)]
    if result.confirmation is not None:
        confirmed = result.confirmation
        rows += [(CONFIRMATION, confirmed.baseline), (CONFIRMATION, confirmed.best), (CONFIRMATION, confirmed.control)]
        rows += [(CONFIRMATION, confirmed.prompting)] if confirmed.prompting else []
    best = result.best.setting if result.best else None
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for stage, row in rows:
        for score, summary in row.metrics.items():
            d = row.differences.get(score)
            writer.writerow([
                stage, row.setting.label, row.setting.layer, row.setting.coeff, row.setting.control, score,
                score == result.objective.column, _cell(summary.mean), _cell(summary.ci_low), _cell(summary.ci_high),
                summary.n, _cell(d.estimate if d else None), _cell(d.ci_low if d else None),
                _cell(d.ci_high if d else None), _cell(d.p_value if d else None),
                _cell(row.p_holm if score == result.objective.column else None),
                _cell(None if row.setting.is_baseline else row.perplexity_ratio),
                row.rejected, "; ".join(row.rejected_for), row.setting == best and not row.setting.control,
                result.effect,
            ])  # fmt: skip
    return buffer.getvalue().encode()


def prompts_csv(result: ExperimentResult) -> bytes:
    """Every prompt of the run, one row each: its source row, which stage ran on it, and for the
    confirmation prompts the best setting's differences to the baseline, the control and prompting on
    that prompt's samples alone (Welch, 95%) — the per-prompt detail a note has no room for."""
    spec, split, confirmed = result.spec, result.split, result.confirmation
    source = spec.prompt_source
    searched = set(split.search) if split else set(range(len(spec.prompts)))
    held = set(split.confirmation) if split else set(range(len(spec.prompts)))
    effects = {e.prompt_index: e for e in confirmed.prompt_effects} if confirmed else {}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    sides = ("difference", "versus_control", "versus_prompting")
    writer.writerow([
        "prompt_index", "source_row", "searched", "confirmed", "prompt", "n", "n_baseline",
        *(f"{side}{part}" for side in sides for part in ("", "_ci_low", "_ci_high")),
    ])  # fmt: skip
    for index, prompt in enumerate(spec.prompts):
        effect = effects.get(index)
        numbers: list[str | int] = []
        for side in sides:
            d: Difference | None = getattr(effect, side) if effect else None
            numbers += [
                _cell(d.estimate if d else None),
                _cell(d.ci_low if d else None),
                _cell(d.ci_high if d else None),
            ]
        writer.writerow([
            index, source.row_ids[index] if source else "", index in searched, index in held and confirmed is not None,
            prompt, effect.difference.n if effect else "", effect.difference.n_baseline if effect else "", *numbers,
        ])  # fmt: skip
    return buffer.getvalue().encode()


def _cell(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6g}"
