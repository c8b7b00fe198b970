"""What a result note says in words: findings, the one-line summary, and the headline numbers.

Findings state the verdict first, then the numbers behind it, search and confirmation apart so
the shrinkage shows, and they admit an absent effect. They speak of the model in hand (its name,
parameter count and layers from the reproducibility record), never of "small models".
"""

from __future__ import annotations

from typing import Any

from actadd_notes.experiments.degeneration import REPETITION, SPECIAL_TOKENS
from actadd_notes.experiments.design import HELD_OUT
from actadd_notes.experiments.metrics import REGISTRY
from actadd_notes.experiments.results import (
    NO_SETTING,
    PERPLEXITY_GUARD,
    REPETITION_GUARD,
    SPECIAL_TOKENS_GUARD,
    ExperimentResult,
    SettingResult,
)
from actadd_notes.experiments.stats import Proportion
from actadd_notes.experiments.verdict import interval, number

SIGNIFICANT = 0.05  # the family-wise level the settings table marks


def findings(result: ExperimentResult) -> list[str]:
    """Plain statements for the result note, the verdict first."""
    lines = [result.verdict.sentence, _prompts_line(result), *_method_lines(result)]
    lines += _search_lines(result)
    lines += _confirmation_lines(result)
    lines += _per_prompt_lines(result)
    lines += _prompting_lines(result)
    lines += _rate_lines(result)
    lines += _guard_lines(result)
    lines += _direction_lines(result)
    return lines


def _prompts_line(result: ExperimentResult) -> str:
    """Where the prompts came from and which stage ran on which."""
    spec, split = result.spec, result.split
    source = spec.prompt_source
    origin = f"from {source.description} ({source.source_hash[:19]}…)" if source else "typed in the spec"
    cut = f", each cut to its first {spec.prompt_tokens} tokens" if spec.prompt_tokens else ""
    count = len(spec.prompts)
    if split is not None and split.design == HELD_OUT:
        stages = (
            f"a seeded split: the search ran on {len(split.search)}, and the confirmation only on the other "
            f"{len(split.confirmation)}, which the search never saw (confirm_prompts: held_out)"
        )
    elif count > 1:
        stages = "the search and the confirmation ran on all of them (confirm_prompts: same)"
    else:
        stages = "the search and the confirmation ran on it"
    intervals = (
        "differences are over the samples within each prompt, prompts as fixed strata"
        if count > 1
        else "differences are Welch intervals over its samples"
    )
    return f"Prompts: {count} {origin}{cut}; {stages}; {intervals}."


def _method_lines(result: ExperimentResult) -> list[str]:
    """Which vector ran and in what units, when it is not the paper's plain ActAdd."""
    spec, lines = result.spec, []
    if spec.method == "mean_difference":
        source = f" from {spec.pairs_source}" if spec.pairs_source else ""
        agreement = [d.get("pair_agreement") for d in result.diagnostics if d["kind"] == "steering"]
        agrees = ", ".join(f"{a:.2f}" for a in agreement if a is not None)
        lines.append(
            f"Method: mean difference (CAA) of {len(spec.pairs)} contrast pair(s){source} at each prompt's "
            f"{'last token' if spec.pair_position == 'last' else 'mean over its tokens'}, added at every position; "
            f"the pairs' agreement (mean cosine to the mean difference) per layer: {agrees or 'n/a'}."
        )
    if spec.coeff_unit == "residual_norm" and result.best is not None and result.best.applied_coeff is not None:
        lines.append(
            f"Coefficients are in residual-norm units: {result.best.setting.label} applied a raw coefficient of "
            f"{result.best.applied_coeff:.4g} (c × the layer's typical residual norm / the vector's norm)."
        )
    if spec.align is not None:
        lines.append(f"The addition starts where {spec.align!r} first occurs in each prompt (align).")
    return lines


def _search_lines(result: ExperimentResult) -> list[str]:
    spec, best, score = result.spec, result.best, result.objective.column
    tested = len(result.settings)
    if best is None:
        return []
    base, mine = result.baseline.metrics[score], best.metrics[score]
    lines = [
        f"Search ({spec.search}, {tested} setting(s) tested, {spec.samples} sample(s) × {_searched(result)} "
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
        confirmed = result.confirmation.best.differences.get(score) if result.confirmation else None
        on_fresh = f"; on fresh seeds that setting's Δ is {interval(confirmed)}" if confirmed else ""
        lines.append(
            f"Bayesian search: the best feasible value was first reached at trial {result.trials_to_best} of "
            f"{len(result.trials)}{on_fresh}."
        )
    return lines


def _confirmation_lines(result: ExperimentResult) -> list[str]:
    confirmed, score = result.confirmation, result.objective.column
    if confirmed is None or result.best is None:
        return []
    best, control, base = confirmed.best, confirmed.control, confirmed.baseline
    return [
        f"Confirmation on fresh seeds ({confirmed.samples} sample(s) × {len(confirmed.prompts)} prompt(s), no seed "
        f"shared with the search): {best.setting.label} {_mean(best.metrics[score])} vs baseline "
        f"{_mean(base.metrics[score])}, Δ {interval(best.differences.get(score))}; random-direction control "
        f"(same per-position norms, a fresh direction per row) {_mean(control.metrics[score])}, Δ "
        f"{interval(control.differences.get(score))}; steering − control {interval(confirmed.versus_control)}. "
        f"Search → confirmed Δ: {number(_estimate(result.best, score), '+.3f')} → "
        f"{number(_estimate(best, score), '+.3f')}."
    ]


def _searched(result: ExperimentResult) -> int:
    return len(result.split.search) if result.split else len(result.spec.prompts)


def _per_prompt_lines(result: ExperimentResult) -> list[str]:
    confirmed, score = result.confirmation, result.objective.column
    if confirmed is None or confirmed.heterogeneity is None or len(confirmed.prompts) < 2:
        return []
    spread = confirmed.heterogeneity
    return [
        f"Per prompt ({spread.prompts} confirmation prompts, {confirmed.samples} sample(s) each): "
        f"{_count(spread.moved_as_wanted)} moved {score} as wanted and {_count(spread.moved_against)} the other "
        f"way by their own estimates; {spread.significant_as_wanted} as wanted and {spread.significant_against} the "
        f"other way beyond their own 95% interval (chance alone: {spread.expected_by_chance:.1f} on each side)."
    ]


def _prompting_lines(result: ExperimentResult) -> list[str]:
    confirmed, spec, score = result.confirmation, result.spec, result.objective.column
    if confirmed is None or result.best is None:
        return []
    prompting = confirmed.prompting
    if prompting is None:
        if spec.method != "actadd" and spec.prompt_baseline is None:
            return [
                f"No prompting baseline: method {spec.method} has no single p+ to prompt with — set "
                'prompt_baseline: to a template such as "Be kind. {prompt}" to compare steering with asking.'
            ]
        return ["No prompting baseline (prompt_baseline: false): nothing says whether asking in words does as well."]
    across = confirmed.across_prompts.get("prompting")
    across_text = f"; with prompts as the unit {interval(across)}" if confirmed.design == HELD_OUT else ""
    return [
        f"Prompting baseline ({spec.prompt_baseline!r}, same prompts and seeds, no steering): {score} "
        f"{_mean(prompting.metrics.get(score))}, Δ {interval(prompting.differences.get(score))} against the "
        f"baseline at {prompting.perplexity_ratio:.2f}× its perplexity; steering − prompting "
        f"{interval(confirmed.versus_prompting)}{across_text}."
    ]


def _rate_lines(result: ExperimentResult) -> list[str]:
    """The paper's success rates: the share of completions a metric calls positive, toxic or profane."""
    confirmed = result.confirmation
    if confirmed is None:
        return []
    lines = []
    for metric in result.spec.metrics:
        rate = REGISTRY[metric].rate
        if rate is None or rate[0] not in confirmed.best.metrics:
            continue
        column, threshold = rate
        arms = [("baseline", confirmed.baseline), (confirmed.best.setting.label, confirmed.best)]
        arms += [("random control", confirmed.control)]
        arms += [("prompting", confirmed.prompting)] if confirmed.prompting else []
        shares = ", ".join(f"{name} {_percent(row.mean(column))}" for name, row in arms)
        lines.append(
            f"Share of completions with {metric} ≥ {threshold:g} ({column}), on fresh seeds: {shares}; "
            f"best − baseline {interval(confirmed.best.differences.get(column))}."
        )
    return lines


def _count(share: Proportion) -> str:
    if share.estimate is None:
        return "n/a"
    return f"{share.successes} ({_percent(share.estimate)} [{_percent(share.ci_low)}, {_percent(share.ci_high)}])"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _guard_lines(result: ExperimentResult) -> list[str]:
    spec, lines = result.spec, []
    rejected = [s for s in result.settings if s.rejected]
    if rejected:
        failures = "; ".join(f"{s.setting.label} {_failures(s, result.baseline, result)}" for s in rejected)
        lines.append(
            f"{len(rejected)} of {len(result.settings)} settings failed the fluency guard (perplexity > "
            f"{spec.max_perplexity_ratio:g}× the baseline's, repetition > +{spec.max_repetition_increase:g} or "
            f"special-token rate > +{spec.max_special_token_increase:g} over it): {failures}."
        )
    best, confirmed = result.best, result.confirmation
    if best is not None and len(result.settings) > 1 and best.perplexity_ratio > 0.9 * spec.max_perplexity_ratio:
        lines.append(
            f"The best setting sits close to the fluency guard ({best.perplexity_ratio:.2f}× of "
            f"{spec.max_perplexity_ratio:g}×) on the search seeds."
        )
    if confirmed is not None and confirmed.best.rejected:
        lines.append(
            f"On the confirmation seeds the best setting fails the fluency guard — "
            f"{_failures(confirmed.best, confirmed.baseline, result)}: the effect costs fluency."
        )
    if confirmed is not None and confirmed.control.rejected and not confirmed.best.rejected:
        lines.append(
            f"The random directions of the same size push perplexity to {confirmed.control.perplexity_ratio:.2f}× "
            f"the baseline's (above the {spec.max_perplexity_ratio:g}× guard), the steering vector to "
            f"{confirmed.best.perplexity_ratio:.2f}×: pushed as hard, the steering vector keeps the text fluent."
        )
    return lines


def _failures(setting: SettingResult, baseline: SettingResult, result: ExperimentResult) -> str:
    """Which guards `setting` failed and by how much: `loops (repetition 0.61 vs 0.08 baseline)`."""
    spec, said = result.spec, []
    if PERPLEXITY_GUARD in setting.rejected_for:
        said.append(f"perplexity {setting.perplexity_ratio:.2f}× the baseline's")
    if REPETITION_GUARD in setting.rejected_for:
        said.append(f"loops (repetition {_share(setting, REPETITION)} vs {_share(baseline, REPETITION)} baseline)")
    if SPECIAL_TOKENS_GUARD in setting.rejected_for:
        said.append(
            f"emits special tokens ({_share(setting, SPECIAL_TOKENS)} of its tokens vs "
            f"{_share(baseline, SPECIAL_TOKENS)} baseline)"
        )
    if not said:  # rejected before the guard named its reasons
        said.append(f"perplexity {setting.perplexity_ratio:.2f}× (limit {spec.max_perplexity_ratio:g}×)")
    return ", ".join(said)


def _share(setting: SettingResult, score: str) -> str:
    return number(setting.mean(score), ".2f")


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
    scope = f" on {result.verdict.scope}" if result.verdict.scope and len(confirmed.prompts) > 1 else ""
    prompting = f"; vs prompting {interval(confirmed.versus_prompting)}" if confirmed.versus_prompting else ""
    return (
        f"{result.effect}{scope} — best {best.setting.label}: Δ {score} "
        f"{interval(confirmed.best.differences.get(score))} on fresh seeds (search "
        f"{number(_estimate(best, score), '+.3f')}); vs a random direction {interval(confirmed.versus_control)}"
        f"{prompting}"
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


def wrong_way(result: ExperimentResult, limit: int = 5) -> list[dict[str, Any]]:
    """The confirmation prompts that moved furthest against the objective, worst first (none if no
    prompt moved that way)."""
    confirmed = result.confirmation
    if confirmed is None:
        return []
    sign = result.objective.sign
    moved = [
        e for e in confirmed.prompt_effects if e.difference.estimate is not None and sign * e.difference.estimate < 0
    ]
    moved.sort(key=lambda e: sign * (e.difference.estimate or 0.0))
    return [
        {"prompt": result.spec.prompts[e.prompt_index], "index": e.prompt_index, "difference": interval(e.difference)}
        for e in moved[:limit]
    ]


def headline(result: ExperimentResult) -> dict[str, Any]:
    """The verdict's numbers, flat: a result note's properties, Bases columns, the comparison note.

    Confirmed values come from the confirmation, search values from the search; what a run
    does not have (no confirmation, no best setting) is None."""
    score, best, confirmed = result.objective.column, result.best, result.confirmation
    searched = best.differences.get(score) if best else None
    on_fresh = confirmed.best.differences.get(score) if confirmed else None
    versus = confirmed.versus_control if confirmed else None
    prompting = confirmed.versus_prompting if confirmed else None
    spread = confirmed.heterogeneity if confirmed else None
    return {
        "effect": result.effect,
        "scope": result.verdict.scope,
        "method": result.spec.method,
        "prompts": len(result.spec.prompts),
        "confirm_prompts": result.split.design if result.split else None,
        "confirmation_prompts": len(confirmed.prompts) if confirmed else None,
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
        "versus_prompting": result.verdict.versus_prompting,
        "prompting_difference": prompting.estimate if prompting else None,
        "prompting_ci_low": prompting.ci_low if prompting else None,
        "prompting_ci_high": prompting.ci_high if prompting else None,
        "prompts_moved_against": spread.moved_against.estimate if spread else None,
    }
