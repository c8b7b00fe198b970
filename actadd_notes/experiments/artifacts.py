"""Files a run produces — results.json, completions.csv, PNG plots, steering vectors — as bytes.

Bytes rather than paths: where they land (and how atomically) is the vault layer's business.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from actadd_notes.experiments.runner import PERPLEXITY, ExperimentResult, SettingResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from actadd_notes.steering.lm import SteerableLM

RESULTS = "results.json"
COMPLETIONS = "completions.csv"


def render_artifacts(result: ExperimentResult, lm: SteerableLM | None = None) -> dict[str, bytes]:
    """Every artifact of `result`, keyed by file name; vectors only when `lm` is given."""
    files = {
        RESULTS: json.dumps(_finite(result.to_dict()), indent=2, ensure_ascii=False).encode(),
        COMPLETIONS: completions_csv(result),
    }
    files.update(plots(result))
    if lm is not None:
        files.update(vectors(result, lm))
    return files


def _finite(value):
    """JSON has no NaN/inf: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def completions_csv(result: ExperimentResult) -> bytes:
    names = [PERPLEXITY] + [m for m in result.spec.metrics if m not in ("fluency", "kl")]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["setting", "layer", "coeff", "prompt", "sample", "seed", "completion", *names])
    for s in result.samples:
        writer.writerow(
            [
                s.setting.label,
                s.setting.layer,
                s.setting.coeff,
                s.completion.prompt,
                s.sample,
                s.completion.seed,
                s.completion.text,
                *(_cell(s.scores.get(n)) for n in names),
            ]
        )
    return buffer.getvalue().encode()


def _cell(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6g}"


def vectors(result: ExperimentResult, lm: SteerableLM) -> dict[str, bytes]:
    """The unscaled vectors of the best setting (and of extra additions), with provenance."""
    import tempfile
    from pathlib import Path

    from actadd_notes.steering.vectors import ActAdd

    if result.best is None:
        return {}
    spec = result.spec
    wanted = [
        (
            f"vector-L{result.best.setting.layer}.safetensors",
            ActAdd(spec.prompt_add, spec.prompt_sub, result.best.setting.layer, 1.0, spec.pad_token),
        )
    ]
    wanted += [
        (f"vector-extra{n}-L{a.layer}.safetensors", ActAdd(a.add, a.sub, a.layer, 1.0, spec.pad_token))
        for n, a in enumerate(spec.extra_additions, 1)
    ]
    files = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, addition in wanted:
            path = lm.steering_vector(addition).save(Path(folder) / name)
            files[name] = path.read_bytes()
    return files


# ---------------------------------------------------------------- plots
def plots(result: ExperimentResult) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    figures: dict[str, Figure] = {}
    steered = result.settings
    if (
        result.spec.search == "grid"
        and len({s.setting.layer for s in steered}) * len({s.setting.coeff for s in steered}) > 1
    ):
        figures["heatmap.png"] = _heatmap(result)
    for metric in _plotted_metrics(result):
        figures[f"{metric}-vs-coeff.png"] = _metric_vs_coeff(result, metric)
    figures["objective-vs-fluency.png"] = _objective_vs_fluency(result)
    if result.trials:
        figures["trials.png"] = _trial_history(result)
    return {name: _png(figure) for name, figure in figures.items()}


def _plotted_metrics(result: ExperimentResult) -> list[str]:
    return [result.objective] + [
        m for m in [PERPLEXITY, *result.spec.metrics] if m not in (result.objective, "fluency")
    ]


def _png(figure: Figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _heatmap(result: ExperimentResult) -> Figure:
    import matplotlib.pyplot as plt
    import numpy as np

    layers = sorted({s.setting.layer for s in result.settings})
    coeffs = sorted({s.setting.coeff for s in result.settings})
    grid = np.full((len(layers), len(coeffs)), np.nan)
    for s in result.settings:
        value = s.objective(result.objective)
        grid[layers.index(s.setting.layer), coeffs.index(s.setting.coeff)] = np.nan if value is None else value
    figure, axes = plt.subplots(figsize=(1.2 * len(coeffs) + 3, 0.6 * len(layers) + 2))
    image = axes.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    axes.set_xticks(range(len(coeffs)), [f"{c:g}" for c in coeffs])
    axes.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    axes.set_xlabel("coefficient c")
    axes.set_ylabel("layer l")
    base = result.baseline.objective(result.objective)
    axes.set_title(
        f"{result.objective} (baseline {base:.3f}); × guard = rejected for fluency"
        if base is not None
        else result.objective
    )
    for s in result.settings:
        y, x = layers.index(s.setting.layer), coeffs.index(s.setting.coeff)
        value = s.objective(result.objective)
        text = "" if value is None else f"{value:.2f}" + ("\n× guard" if s.rejected else "")
        axes.text(x, y, text, ha="center", va="center", color="white", fontsize=9)
    figure.colorbar(image, ax=axes, label=result.objective)
    return figure


def _metric_vs_coeff(result: ExperimentResult, metric: str) -> Figure:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4))
    base = result.baseline.metrics.get(metric)
    if base is not None and base.mean is not None:
        axes.axhline(base.mean, color="black", lw=1, label="baseline")
        if base.ci_low is not None:
            axes.axhspan(base.ci_low, base.ci_high, color="black", alpha=0.1)
    for layer in sorted({s.setting.layer for s in result.settings}):
        rows = sorted((s for s in result.settings if s.setting.layer == layer), key=lambda s: s.setting.coeff)
        points = [
            (s.setting.coeff, s.metrics[metric])
            for s in rows
            if metric in s.metrics and s.metrics[metric].mean is not None
        ]
        if not points:
            continue
        xs = [x for x, _ in points]
        line = axes.plot(xs, [m.mean for _, m in points], marker="o", label=f"layer {layer}")[0]
        if all(m.ci_low is not None for _, m in points):
            axes.fill_between(
                xs, [m.ci_low for _, m in points], [m.ci_high for _, m in points], color=line.get_color(), alpha=0.15
            )
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
        xs, ys = _points(group, result.objective)
        if xs:
            axes.scatter(xs, ys, marker=style, label=label)
    axes.axvline(result.spec.max_perplexity_ratio, color="red", ls="--", lw=1, label="fluency guard")
    axes.axvline(1.0, color="black", lw=1)
    base = result.baseline.objective(result.objective)
    if base is not None:
        axes.axhline(base, color="black", lw=1, ls=":", label="baseline")
    if result.best is not None:
        axes.annotate(
            result.best.setting.label, (result.best.perplexity_ratio, result.best.objective(result.objective))
        )
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    axes.xaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    axes.set_xlabel("perplexity ÷ baseline perplexity (log)")
    axes.set_ylabel(result.objective)
    axes.set_title(f"{result.objective} vs fluency")
    axes.legend(fontsize=8)
    return figure


def _points(settings: Sequence[SettingResult], metric: str) -> tuple[list[float], list[float]]:
    pairs = [(s.perplexity_ratio, s.objective(metric)) for s in settings]
    pairs = [(x, y) for x, y in pairs if y is not None and math.isfinite(x)]
    return [x for x, _ in pairs], [y for _, y in pairs]


def _trial_history(result: ExperimentResult) -> Figure:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4))
    sign = 1 if result.spec.direction == "maximize" else -1
    best, best_so_far = None, []
    for trial in result.trials:
        value = trial["value"]
        if trial["feasible"] and value is not None and (best is None or sign * value > sign * best):
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
    axes.set_ylabel(result.objective)
    axes.set_title("Bayesian search (TPE) history")
    axes.legend(fontsize=8)
    return figure
