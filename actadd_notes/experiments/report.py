"""What a result note says in words: findings, the one-line summary, vector diagnostics, provenance.

Findings state the verdict first, then the numbers behind it, search and confirmation apart so
the shrinkage shows, and they admit an absent effect. They speak of the model in hand (its name,
parameter count and layers from the reproducibility record), never of "small models".
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

import torch

from actadd_notes.experiments.results import NO_SETTING, ExperimentResult, SettingResult
from actadd_notes.experiments.spec import ExperimentSpec
from actadd_notes.experiments.verdict import interval, number
from actadd_notes.steering.lm import SteerableLM
from actadd_notes.steering.vectors import ActAdd, SteeringVector

SIGNIFICANT = 0.05  # the family-wise level the settings table marks


def findings(result: ExperimentResult) -> list[str]:
    """Plain statements for the result note, the verdict first."""
    lines = [result.verdict.sentence]
    lines += _search_lines(result)
    lines += _confirmation_lines(result)
    lines += _guard_lines(result)
    lines += _direction_lines(result)
    if len(result.spec.prompts) > 1:
        prompts = len(result.spec.prompts)
        lines.append(
            f"With {prompts} prompts, intervals of differences treat prompts as the unit (a paired t over the "
            f"per-prompt mean differences, {prompts - 1} df): the claim generalises beyond these prompts, and "
            "more prompts, not more samples, narrow it."
        )
    return lines


def _search_lines(result: ExperimentResult) -> list[str]:
    spec, best, score = result.spec, result.best, result.objective.column
    tested = len(result.settings)
    if best is None:
        return []
    base, mine = result.baseline.metrics[score], best.metrics[score]
    lines = [
        f"Search ({spec.search}, {tested} setting(s) tested, {spec.samples} sample(s) × {len(spec.prompts)} "
        f"prompt(s) each): best {best.setting.label} — {score} {_mean(mine)} vs baseline {_mean(base)}; "
        f"Δ {interval(best.differences.get(score))}, Holm-adjusted p = {number(best.p_holm, '.3g')}. This is "
        f"the search estimate: chosen as the best of {tested}, it is optimistic."
    ]
    significant = [s for s in result.settings if s.p_holm is not None and s.p_holm < SIGNIFICANT]
    lines.append(
        f"{len(significant)} of {tested} setting(s) differ from the baseline in {score} at a Holm-adjusted p < "
        f"{SIGNIFICANT:g} (family-wise over all {tested})."
    )
    if result.trials:
        lines.append(f"Bayesian search: the best feasible value was first reached at trial {result.trials_to_best}.")
    return lines


def _confirmation_lines(result: ExperimentResult) -> list[str]:
    confirmed, score, spec = result.confirmation, result.objective.column, result.spec
    if confirmed is None or result.best is None:
        return []
    best, control, base = confirmed.best, confirmed.control, confirmed.baseline
    return [
        f"Confirmation on fresh seeds ({confirmed.samples} sample(s) × {len(spec.prompts)} prompt(s), no seed "
        f"shared with the search): {best.setting.label} {_mean(best.metrics[score])} vs baseline "
        f"{_mean(base.metrics[score])}, Δ {interval(best.differences.get(score))}; random-direction control "
        f"(same per-position norms, seed {confirmed.control_seed}) {_mean(control.metrics[score])}, Δ "
        f"{interval(control.differences.get(score))}; steering − control {interval(confirmed.versus_control)}. "
        f"Search → confirmed Δ: {number(_estimate(result.best, score), '+.3f')} → "
        f"{number(_estimate(best, score), '+.3f')}."
    ]


def _guard_lines(result: ExperimentResult) -> list[str]:
    spec, lines = result.spec, []
    rejected = [s for s in result.settings if s.rejected]
    if rejected:
        worst = max(rejected, key=lambda s: s.perplexity_ratio)
        labels = ", ".join(s.setting.label for s in rejected)
        lines.append(
            f"{len(rejected)} of {len(result.settings)} settings failed the fluency guard (perplexity > "
            f"{spec.max_perplexity_ratio:g}× baseline): {labels}; worst {worst.setting.label} at "
            f"{worst.perplexity_ratio:.1f}×."
        )
    best, confirmed = result.best, result.confirmation
    if best is not None and len(result.settings) > 1 and best.perplexity_ratio > 0.9 * spec.max_perplexity_ratio:
        lines.append(
            f"The best setting sits close to the fluency guard ({best.perplexity_ratio:.2f}× of "
            f"{spec.max_perplexity_ratio:g}×) on the search seeds."
        )
    if confirmed is not None and confirmed.best.rejected:
        lines.append(
            f"On the confirmation seeds the best setting's perplexity is {confirmed.best.perplexity_ratio:.2f}× "
            f"the baseline's, above the {spec.max_perplexity_ratio:g}× guard: the effect costs fluency."
        )
    return lines


def _direction_lines(result: ExperimentResult) -> list[str]:
    """Settings that moved the objective the other way, and negative coefficients that did not reverse it."""
    objective, score, lines = result.objective, result.objective.column, []
    against = [
        s
        for s in result.settings
        if not s.rejected
        and s.p_holm is not None
        and s.p_holm < SIGNIFICANT
        and objective.better(_estimate(s, score) or 0.0) < 0
    ]
    if against:
        labels = ", ".join(s.setting.label for s in against[:6])
        lines.append(f"{len(against)} setting(s) moved {score} the opposite way (Holm-adjusted p < 0.05): {labels}.")
    negative = [s for s in result.settings if (s.setting.coeff or 0) < 0 and not s.rejected]
    if negative and not any(s in against for s in negative) and result.effect != NO_SETTING:
        lines.append(
            f"Negative coefficients did not detectably reverse {score} on {model_description(result.reproducibility)}."
        )
    return lines


def model_description(record: dict[str, Any]) -> str:
    """`SmolLM2-135M-Instruct (134.5M parameters, 30 layers)`, from the reproducibility record."""
    parameters = record.get("parameters")
    size = f"{parameters / 1e9:.2f}B" if parameters and parameters >= 1e9 else f"{(parameters or 0) / 1e6:.1f}M"
    return f"{record.get('model', 'this model')} ({size} parameters, {record.get('layers', '?')} layers)"


def summary_line(result: ExperimentResult) -> str:
    """One line for the journal, the literature note and the CLI, led by the verdict word."""
    score, best = result.objective.column, result.best
    if best is None:
        return f"none — no setting passed the fluency guard ({score} baseline {_mean(result.baseline.metrics[score])})"
    searched = best.differences.get(score)
    if result.confirmation is None:
        return f"exploratory — best {best.setting.label}: Δ {score} {interval(searched)} on search seeds, unconfirmed"
    confirmed = result.confirmation
    return (
        f"{result.effect} — best {best.setting.label}: Δ {score} {interval(confirmed.best.differences.get(score))} "
        f"on fresh seeds (search {number(_estimate(best, score), '+.3f')}); vs a random direction "
        f"{interval(confirmed.versus_control)}"
    )


def _mean(summary: Any) -> str:
    if summary is None or summary.mean is None:
        return "n/a"
    if summary.ci_low is None:
        return f"{summary.mean:.3f}"
    return f"{summary.mean:.3f} [{summary.ci_low:.3f}, {summary.ci_high:.3f}]"


def _estimate(setting: SettingResult, score: str) -> float | None:
    difference = setting.differences.get(score)
    return None if difference is None else difference.estimate


def vector_diagnostics(
    spec: ExperimentSpec, lm: SteerableLM, layers: Sequence[int], vectors: dict[str, SteeringVector]
) -> list[dict[str, Any]]:
    """Per-position norms of each vector used, against the residual norm typical at its layer.

    Models often carry huge activations at the first position and at lone pad tokens; those
    positions then dominate a vector, and a researcher has to see it. `vectors` holds the vectors
    the run already computed (the control among them); the main vector at other layers comes
    from the model's vector cache."""
    pairs = [(spec.prompt_add, spec.prompt_sub, list(layers))] + [
        (a.add, a.sub, [a.layer]) for a in spec.extra_additions
    ]
    prompt_norms = []
    for prompt in spec.prompts:
        stacked, _ = lm.activations([prompt], pad_token=spec.pad_token)
        prompt_norms.append(stacked[:, 0].float().norm(dim=-1))  # [layers, T]
    rows = []
    for add, sub, pair_layers in pairs:
        for layer in pair_layers:
            vector = lm.steering_vector(ActAdd(add, sub, layer, 1.0, spec.pad_token))
            rows.append({**_norm_row(lm, vector, prompt_norms, layer), "kind": "steering"})
    control = vectors.get("control")
    if control is not None:
        rows.append({**_norm_row(lm, control, prompt_norms, control.layer), "kind": "control"})
    return rows


def _norm_row(lm: SteerableLM, vector: SteeringVector, prompt_norms: list[torch.Tensor], layer: int) -> dict[str, Any]:
    first = [float(n[layer, 0]) for n in prompt_norms]
    rest = torch.cat([n[layer, 1:] for n in prompt_norms]) if any(n.shape[1] > 1 for n in prompt_norms) else None
    return {
        "prompt_add": vector.prompt_add,
        "prompt_sub": vector.prompt_sub,
        "layer": layer,
        "tokens_add": _readable_tokens(lm, vector.add_ids),
        "tokens_sub": _readable_tokens(lm, vector.sub_ids),
        "vector_norms": [round(float(x), 2) for x in vector.vector.float().norm(dim=-1)],
        "residual_norm_first_position": round(sum(first) / len(first), 2),
        "residual_norm_typical": round(float(rest.median()), 2) if rest is not None else None,
    }


def _readable_tokens(lm: SteerableLM, ids: Sequence[int]) -> list[str]:
    """Each token as text, a space shown as ␣ (a lone pad token is otherwise invisible)."""
    return [lm.tokenizer.decode([i]).replace(" ", "␣") or repr(i) for i in ids]


def reproducibility(spec: ExperimentSpec, lm: SteerableLM, wall_time: float, extra: dict[str, Any]) -> dict[str, Any]:
    """What a re-run needs to reproduce the note's numbers: seeds, versions, device, model."""
    record = {
        "seed": spec.seed,
        "spec_hash": spec.spec_hash(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **lm.provenance(),
        "parameters": sum(p.numel() for p in lm.model.parameters()),
        "layers": lm.num_layers,
        "wall_time_s": round(wall_time, 2),
        **extra,
    }
    return {key: value for key, value in record.items() if value not in ("", None)}


def headline(result: ExperimentResult) -> dict[str, Any]:
    """The verdict's numbers, flat: a result note's properties, Bases columns, the comparison note.

    Confirmed values come from the confirmation, search values from the search; what a run
    does not have (no confirmation, no best setting) is None."""
    score, best, confirmed = result.objective.column, result.best, result.confirmation
    searched = best.differences.get(score) if best else None
    on_fresh = confirmed.best.differences.get(score) if confirmed else None
    versus = confirmed.versus_control if confirmed else None
    return {
        "effect": result.effect,
        "method": "actadd",
        "settings_tested": len(result.settings),
        "best_layer": best.setting.layer if best else None,
        "best_coeff": best.setting.coeff if best else None,
        "baseline_value": result.baseline.mean(score),
        "search_value": best.mean(score) if best else None,
        "search_difference": searched.estimate if searched else None,
        "search_p_holm": best.p_holm if best else None,
        "confirmed_difference": on_fresh.estimate if on_fresh else None,
        "confirmed_ci_low": on_fresh.ci_low if on_fresh else None,
        "confirmed_ci_high": on_fresh.ci_high if on_fresh else None,
        "control_difference": versus.estimate if versus else None,
        "control_ci_low": versus.ci_low if versus else None,
        "control_ci_high": versus.ci_high if versus else None,
        "perplexity_ratio": (confirmed.best if confirmed else best).perplexity_ratio if best else None,
    }
