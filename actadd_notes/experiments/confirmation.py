"""The confirmation's statistics, from its scored rows: every comparison the verdict reads.

Kept apart from generation so that the calibration tests run exactly this code on simulated
scores. Each comparison is made twice: with the confirmation prompts as fixed strata (the
`SettingResult` differences and `versus_*`: "on these prompts") and with prompts as the unit
(`across_prompts`: what a claim beyond these prompts needs).
"""

from __future__ import annotations

from actadd_notes.experiments.metrics import Objective
from actadd_notes.experiments.prompt_effects import Values, heterogeneity, prompt_effects
from actadd_notes.experiments.results import Confirmation, SettingResult
from actadd_notes.experiments.stats import Difference, prompt_difference, stratified_difference


def summarise_confirmation(
    objective: Objective,
    *,
    baseline: SettingResult,
    best: SettingResult,
    control: SettingResult,
    prompting: SettingResult | None,
    scores: dict[str, Values],
    prompts: tuple[int, ...],
    design: str,
    samples: int,
    control_seed: int,
) -> Confirmation:
    """`scores` holds the objective's values (and each value's prompt index) of `baseline`, `best`,
    `control` and, when it ran, `prompting`."""
    steered = scores["best"]
    others: dict[str, Values] = {name: scores[name] for name in ("baseline", "control", "prompting") if name in scores}
    across = {name: prompt_difference(steered[0], values[0], steered[1], values[1]) for name, values in others.items()}
    effects = prompt_effects(prompts, steered, others["baseline"], others["control"], others.get("prompting"))
    return Confirmation(
        baseline=baseline,
        best=best,
        control=control,
        versus_control=_these_prompts(steered, others["control"]),
        samples=samples,
        control_seed=control_seed,
        prompts=prompts,
        design=design,
        prompting=prompting,
        versus_prompting=_these_prompts(steered, others["prompting"]) if "prompting" in others else None,
        across_prompts=across,
        prompt_effects=effects,
        heterogeneity=heterogeneity(effects, objective),
    )


def _these_prompts(values: Values, other: Values) -> Difference:
    return stratified_difference(values[0], other[0], values[1], other[1])
