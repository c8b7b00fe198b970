"""The run's plots as PNG bytes: objective heatmap over layer × coeff, each metric against the
coefficient per layer with CI bands, objective against fluency, a Bayesian search's history, and
the confirmed setting's effect on each confirmation prompt."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from actadd_notes.experiments.metrics import PERPLEXITY, REGISTRY
from actadd_notes.experiments.results import ExperimentResult, Setting, SettingResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

HEATMAP = "heatmap.png"
PER_PROMPT = "per-prompt.png"


def plots(result: ExperimentResult) -> dict[str, bytes]:
    """Every plot of `result`, keyed by file name."""
    import matplotlib

    matplotlib.use("Agg")
    figures: dict[str, Figure] = {}
    steered = result.settings
    if (
        result.spec.search == "grid"
        and len({s.setting.layer for s in steered}) * len({s.setting.coeff for s in steered}) > 1
    ):
        figures[HEATMAP] = _heatmap(result)
    for metric in _plotted_metrics(result):
        figures[f"{metric}-vs-coeff.png"] = _metric_vs_coeff(result, metric)
    figures["objective-vs-fluency.png"] = _objective_vs_fluency(result)
    if result.trials:
        figures["trials.png"] = _trial_history(result)
    if result.confirmation is not None and len(result.confirmation.prompt_effects) > 1:
        figures[PER_PROMPT] = _per_prompt(result)
    return {name: _png(figure) for name, figure in figures.items()}


def _plotted_metrics(result: ExperimentResult) -> list[str]:
    """Score names, the objective's first; fluency appears as perplexity."""
    scores = [REGISTRY[m].score_name for m in result.spec.metrics]
    first = result.objective.column
    return [first] + [s for s in dict.fromkeys([PERPLEXITY, *scores]) if s != first]


def _point(setting: Setting) -> tuple[int, float]:
    """The layer and coefficient of a searched setting (only the baseline has neither)."""
    if setting.layer is None or setting.coeff is None:
        raise ValueError(f"{setting.label} is no point of the search")
    return setting.layer, setting.coeff


def _png(figure: Figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _heatmap(result: ExperimentResult) -> Figure:
    import matplotlib.pyplot as plt
    import numpy as np

    points = [_point(s.setting) for s in result.settings]
    layers = sorted({layer for layer, _ in points})
    coeffs = sorted({coeff for _, coeff in points})
    grid = np.full((len(layers), len(coeffs)), np.nan)
    for s, (layer, coeff) in zip(result.settings, points):
        value = s.mean(result.objective.column)
        grid[layers.index(layer), coeffs.index(coeff)] = np.nan if value is None else value
    figure, axes = plt.subplots(figsize=(1.2 * len(coeffs) + 3, 0.6 * len(layers) + 2))
    image = axes.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    axes.set_xticks(range(len(coeffs)), [f"{c:g}" for c in coeffs])
    axes.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    axes.set_xlabel("coefficient c")
    axes.set_ylabel("layer l")
    base = result.baseline.mean(result.objective.column)
    axes.set_title(
        f"{result.objective.column} (baseline {base:.3f}); × guard = rejected for fluency"
        if base is not None
        else result.objective.column
    )
    for s, (layer, coeff) in zip(result.settings, points):
        y, x = layers.index(layer), coeffs.index(coeff)
        value = s.mean(result.objective.column)
        text = "" if value is None else f"{value:.2f}" + ("\n× guard" if s.rejected else "")
        axes.text(x, y, text, ha="center", va="center", color="white", fontsize=9)
    figure.colorbar(image, ax=axes, label=result.objective.column)
    return figure


def _metric_vs_coeff(result: ExperimentResult, metric: str) -> Figure:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4))
    base = result.baseline.metrics.get(metric)
    if base is not None and base.mean is not None:
        axes.axhline(base.mean, color="black", lw=1, label="baseline")
        if base.ci_low is not None and base.ci_high is not None:
            axes.axhspan(base.ci_low, base.ci_high, color="black", alpha=0.1)
    for layer in sorted({_point(s.setting)[0] for s in result.settings}):
        rows = sorted((s for s in result.settings if s.setting.layer == layer), key=lambda s: _point(s.setting)[1])
        summaries = [(_point(s.setting)[1], s.metrics.get(metric)) for s in rows]
        points = [(x, m) for x, m in summaries if m is not None and m.mean is not None]
        if not points:
            continue
        xs = [x for x, _ in points]
        line = axes.plot(xs, _column(m.mean for _, m in points), marker="o", label=f"layer {layer}")[0]
        lows, highs = [m.ci_low for _, m in points], [m.ci_high for _, m in points]
        if all(v is not None for v in lows + highs):
            axes.fill_between(xs, _column(lows), _column(highs), color=line.get_color(), alpha=0.15)
    axes.set_xlabel("coefficient c")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} vs coefficient (95% CI bands)")
    axes.legend(fontsize=8, ncols=2)
    return figure


def _objective_vs_fluency(result: ExperimentResult) -> Figure:
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    figure, axes = plt.subplots(figsize=(6.5, 4))
    kept = [s for s in result.settings if not s.rejected]
    dropped = [s for s in result.settings if s.rejected]
    for group, style, label in ((kept, "o", "passed guard"), (dropped, "x", "rejected")):
        xs, ys = _points(group, result.objective.column)
        if xs:
            axes.scatter(xs, ys, marker=style, label=label)
    axes.axvline(result.spec.max_perplexity_ratio, color="red", ls="--", lw=1, label="fluency guard")
    axes.axvline(1.0, color="black", lw=1)
    base = result.baseline.mean(result.objective.column)
    if base is not None:
        axes.axhline(base, color="black", lw=1, ls=":", label="baseline")
    if result.best is not None:
        axes.annotate(
            result.best.setting.label, (result.best.perplexity_ratio, result.best.mean(result.objective.column))
        )
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    axes.xaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    axes.set_xlabel("perplexity ÷ baseline perplexity (log)")
    axes.set_ylabel(result.objective.column)
    axes.set_title(f"{result.objective.column} vs fluency")
    axes.legend(fontsize=8)
    return figure


def _per_prompt(result: ExperimentResult) -> Figure:
    """Each confirmation prompt's difference to the baseline with its 95% interval, sorted, against the
    mean over prompts: a prompt that moved the other way stands out."""
    import matplotlib.pyplot as plt

    assert result.confirmation is not None
    confirmed, score = result.confirmation, result.objective.column
    effects = sorted(
        (e.difference for e in confirmed.prompt_effects if e.difference.estimate is not None),
        key=lambda d: result.objective.better(d.estimate or 0.0),
    )
    ranks = list(range(1, len(effects) + 1))
    estimates = _column(d.estimate for d in effects)
    lows = [e - (d.ci_low if d.ci_low is not None else e) for e, d in zip(estimates, effects)]
    highs = [(d.ci_high if d.ci_high is not None else e) - e for e, d in zip(estimates, effects)]
    figure, axes = plt.subplots(figsize=(7, 4))
    wrong = [result.objective.better(e) < 0 for e in estimates]
    colours = ["tab:red" if w else "tab:blue" for w in wrong]
    axes.errorbar(ranks, estimates, yerr=[lows, highs], fmt="none", ecolor="grey", alpha=0.5, lw=1)
    axes.scatter(ranks, estimates, c=colours, s=14, zorder=3, label="prompt (red: moved the other way)")
    axes.axhline(0, color="black", lw=1)
    mean = confirmed.best.differences.get(score)
    if mean is not None and mean.estimate is not None:
        axes.axhline(mean.estimate, color="tab:green", ls="--", lw=1, label=f"mean over prompts {mean.estimate:+.3f}")
    axes.set_xlabel("confirmation prompt, sorted by its difference")
    axes.set_ylabel(f"Δ {score} vs baseline (95% CI over its samples)")
    axes.set_title(f"{confirmed.best.setting.label} on each of {len(effects)} prompts")
    axes.legend(fontsize=8)
    return figure


def _column(values: Iterable[float | None]) -> list[float]:
    """Plain floats for matplotlib; None (which callers filter out) would be NaN, a gap."""
    return [math.nan if v is None else v for v in values]


def _points(settings: Sequence[SettingResult], metric: str) -> tuple[list[float], list[float]]:
    pairs = [
        (s.perplexity_ratio, y)
        for s in settings
        if (y := s.mean(metric)) is not None and math.isfinite(s.perplexity_ratio)
    ]
    return [x for x, _ in pairs], [y for _, y in pairs]


def _trial_history(result: ExperimentResult) -> Figure:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4))
    better = result.objective.better
    best, best_so_far = None, []
    for trial in result.trials:
        value = trial["value"]
        if trial["feasible"] and value is not None and (best is None or better(value) > better(best)):
            best = value
        best_so_far.append(best)
    numbers = [t["number"] + 1 for t in result.trials]
    colours = ["tab:blue" if t["feasible"] else "tab:red" for t in result.trials]
    axes.scatter(numbers, [t["value"] for t in result.trials], c=colours, s=18, label="trial (red: rejected)")
    axes.step(
        numbers,
        [b if b is not None else float("nan") for b in best_so_far],
        where="post",
        color="black",
        label="best feasible so far",
    )
    axes.set_xlabel("trial")
    axes.set_ylabel(result.objective.column)
    axes.set_title("Bayesian search (TPE) history")
    axes.legend(fontsize=8)
    return figure
