"""What goes into an exported control vector, and what the file does, measured before it is shared.

What an export holds. llama.cpp adds one direction at every token, so a front-position ActAdd
vector must be reduced to one row. Its mean over all rows is dominated by rows that are not
content: where one prompt is padding, a lone pad token can carry a massive-activation coordinate
(for SmolLM2's Love − Hate at layer 6, a row of norm 637 against 80, 92% of the mean's squared
norm in one coordinate). An export keeps the content positions only (`export_rows`: both prompts
have a real token there, the BOS row excluded); a mean-difference vector over pairs is one row
already and is the recommended export.

At what strength. The row is rescaled so that its norm is `strength` × the typical residual
norm of its layer (additions.py `ResidualNorms`, on the check's prompts): scale 1 in llama.cpp
then pushes as hard as `coeff: strength` with `coeff_unit: residual_norm` does here. The file's
metadata records the unit, the strength, each layer's residual norm and the scales to try.

What it does. `check_vectors` generates with the file's directions in our `position: all` mode at
a given scale, beside an unsteered baseline on the same prompts and seeds with the spec defaults'
sampling, and reports the sentiment difference with its 95% interval (stats.py) and the
perplexity ratio (under the unsteered model, as the fluency guard computes it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from actadd_notes.errors import SteeringError
from actadd_notes.experiments.additions import ResidualNorms
from actadd_notes.experiments.metrics import SentimentMetric
from actadd_notes.experiments.spec import ExperimentSpec
from actadd_notes.experiments.stats import Difference, difference
from actadd_notes.steering.control_vectors import export_rows
from actadd_notes.steering.lm import Completion, SteerableLM
from actadd_notes.steering.vector_files import VectorFile
from actadd_notes.steering.vectors import SteeringVector

# Prompts the residual norm is measured on, and `--check` generates from, when none are given.
DEFAULT_PROMPTS = ("I hate you because", "I went up to my friend and said", "The weather today is", "My day was")
DEFAULT_STRENGTH = 0.25  # residual norms: fluent at scale 1 on the embedded model (BENCHMARKS.md)
SCALE_RANGE = (0.5, 2.0)  # the scales to try around 1, printed and recorded
UNIT = "residual_norm"


@dataclass(frozen=True)
class Export:
    """One [1, d] vector per layer at its stored strength (coeff 1), and the metadata that says so."""

    vectors: list[SteeringVector]
    units: dict[str, Any]


@dataclass(frozen=True)
class VectorCheck:
    """The sentiment difference steered − unsteered and the perplexity ratio of one engine at one scale."""

    engine: str
    scale: float
    effect: Difference
    perplexity_ratio: float
    completions: int
    examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        shown = [
            f"{x:+.2f}" if x is not None else "?"
            for x in (self.effect.estimate, self.effect.ci_low, self.effect.ci_high)
        ]
        return (
            f"{self.engine}, scale {self.scale:g}: sentiment {shown[0]} [{shown[1]}, {shown[2]}] vs unsteered "
            f"(n = {self.completions}), perplexity ratio {self.perplexity_ratio:.2f}"
        )


def export_vectors(
    lm: SteerableLM, sources: Sequence[SteeringVector], *, strength: float, prompts: Sequence[str]
) -> Export:
    """Each source as one row (its content positions' mean) of norm `strength` × its layer's typical residual norm."""
    if not math.isfinite(strength) or strength == 0:
        raise SteeringError(f"strength: {strength} — give a non-zero number of residual norms (negative flips)")
    norms = ResidualNorms.measure(lm, ExperimentSpec(prompts=tuple(prompts)))
    vectors, positions = [], {}
    for source in sources:
        rows = export_rows(source, lm)
        mean = source.vector[rows.start : rows.stop].detach().float().cpu().mean(dim=0, keepdim=True)
        if float(mean.norm()) == 0:
            raise SteeringError(
                f"layer {source.layer}: the vector is zero on its content positions — nothing to export"
            )
        typical = norms.typical[source.layer]
        scaled = mean / mean.norm() * strength * typical
        kept = f"rows {rows.start}–{rows.stop - 1} of {source.positions}" if source.positions > 1 else "its one row"
        positions[str(source.layer)] = kept
        provenance = {**source.provenance, "export": f"content positions ({kept})", "units": f"{strength:g} {UNIT}"}
        vectors.append(replace(source, vector=scaled, coeff=1.0, offset=0, provenance=provenance))
    units = {
        "unit": UNIT,
        "strength": strength,
        "residual_norm": {str(v.layer): round(norms.typical[v.layer], 4) for v in sources},
        "scale": list(SCALE_RANGE),
        "positions": positions,
        "norm_prompts": len(prompts),
    }
    return Export(vectors, units)


def check_vectors(
    lm: SteerableLM,
    vectors: Sequence[SteeringVector],
    prompts: Sequence[str],
    *,
    samples: int,
    max_new_tokens: int = 20,
    seed: int = 0,
) -> VectorCheck:
    """The vectors (at their coeffs) added at every position, against no steering on the same rows."""
    rows = [prompt for prompt in prompts for _ in range(samples)]
    defaults = ExperimentSpec(prompts=tuple(prompts))
    common: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "seeds": [seed + row for row in range(len(rows))],
        "temperature": defaults.temperature,
        "top_p": defaults.top_p,
        "freq_penalty": defaults.freq_penalty,
    }
    baseline = lm.complete(rows, **common)
    steered = lm.complete(rows, steer=list(vectors), position="all", **common)
    scale = vectors[0].coeff if vectors else 0.0
    return measure(lm, "actadd-notes (position: all)", scale, baseline, steered)


def measure(
    lm: SteerableLM, engine: str, scale: float, baseline: Sequence[Completion], steered: Sequence[Completion]
) -> VectorCheck:
    """Sentiment difference and perplexity ratio of `steered` against `baseline` (same prompts)."""
    sentiment = SentimentMetric()
    scores = [sentiment.score([c.prompt for c in group], [c.text for c in group]) for group in (steered, baseline)]
    perplexities = [lm.perplexities(group) for group in (steered, baseline)]
    means = [_finite_mean(values) for values in perplexities]
    ratio = means[0] / means[1] if means[1] else math.inf
    return VectorCheck(engine, scale, difference(*scores), ratio, len(steered), [c.text for c in steered[:3]])


def _finite_mean(values: Sequence[float]) -> float:
    kept = [v for v in values if math.isfinite(v)]
    return sum(kept) / len(kept) if kept else math.inf


def describe_file(read: VectorFile, lm: SteerableLM, prompts: Sequence[str]) -> list[str]:
    """What a vector file holds, each direction's norm against its layer's typical residual norm, and
    whether it fits `lm` (the last line says so; a file that does not fit is said, not raised)."""
    units = read.units
    stored = (
        f"stored at {units['strength']:g} {units['unit']}" if {"unit", "strength"} <= units.keys() else "units unknown"
    )
    lines = [f"{read.path}: {read.kind}, model hint {read.model_hint or '?'}, width {read.width}, {stored}"]
    if "scale" in units:
        lines.append(f"  suggested scales: {' – '.join(f'{x:g}' for x in units['scale'])}")
    hidden = lm.hidden_size
    try:
        read.check_fits(hidden, lm.num_layers, lm.short_name)
    except SteeringError as error:
        return [*lines, f"  does not fit: {error}"]
    norms = ResidualNorms.measure(lm, ExperimentSpec(prompts=tuple(prompts)))
    for layer in read.layers:
        if layer >= lm.num_layers:
            lines.append(f"  direction.{layer - 1}: the last block's output — not steerable here, left out")
            continue
        typical = norms.typical[layer]
        lines.append(
            f"  layer {layer} (direction.{layer - 1}): norm {read.norm(layer):.2f} = "
            f"{read.norm(layer) / typical:.3g} × the residual norm {typical:.1f}"
        )
    lines.append(f"  fits {lm.short_name} ({lm.num_layers} layers, width {hidden})")
    return lines
