"""Per-prompt effects of the confirmed setting, and how the prompts spread around the mean.

A mean over prompts can hide prompts that moved the other way (Tan et al., arXiv 2407.12404,
found steering vectors with the opposite effect on almost half the inputs of some behaviours).
For each confirmation prompt this gives its own difference to the baseline (Welch over that
prompt's samples), to the control and to prompting; then the share of prompts that moved as
wanted and the share that moved the other way (Wilson intervals over prompts), and how many moved
beyond their own 95% interval. With few samples a prompt, a prompt's sign is noisy: the count
beyond the interval, against what chance gives, is the firmer sign of heterogeneity.
"""

from __future__ import annotations

from collections.abc import Sequence

from actadd_notes.experiments.metrics import Objective
from actadd_notes.experiments.results import Heterogeneity, PromptEffect
from actadd_notes.experiments.stats import Difference, difference, proportion

CHANCE_ONE_SIDE = 0.025  # a 95% interval lies wholly on one given side this often when nothing moved

Values = tuple[Sequence[float], Sequence[int]]  # scores and the prompt index of each


def prompt_effects(
    prompts: Sequence[int], steered: Values, baseline: Values, control: Values | None, prompting: Values | None
) -> list[PromptEffect]:
    """Each prompt's differences, in the order of `prompts`."""
    return [
        PromptEffect(
            prompt,
            _within(prompt, steered, baseline),
            _within(prompt, steered, control) if control else None,
            _within(prompt, steered, prompting) if prompting else None,
        )
        for prompt in prompts
    ]


def heterogeneity(effects: Sequence[PromptEffect], objective: Objective) -> Heterogeneity | None:
    """Shares of prompts moved each way (by the sign of each prompt's estimate), None without prompts."""
    estimated = [e.difference for e in effects if e.difference.estimate is not None]
    if not estimated:
        return None
    as_wanted = sum(objective.sign * (d.estimate or 0.0) > 0 for d in estimated)
    other_way = sum(objective.sign * (d.estimate or 0.0) < 0 for d in estimated)
    beyond_wanted = sum(_beyond(d, objective.sign) for d in estimated)
    beyond_against = sum(_beyond(d, -objective.sign) for d in estimated)
    with_interval = sum(d.ci_low is not None for d in estimated)
    return Heterogeneity(
        prompts=len(estimated),
        moved_as_wanted=proportion(as_wanted, len(estimated)),
        moved_against=proportion(other_way, len(estimated)),
        significant_as_wanted=beyond_wanted,
        significant_against=beyond_against,
        expected_by_chance=CHANCE_ONE_SIDE * with_interval,
    )


def _within(prompt: int, values: Values, baseline: Values) -> Difference:
    mine = [v for v, p in zip(*values) if p == prompt]
    theirs = [v for v, p in zip(*baseline) if p == prompt]
    return difference(mine, theirs)


def _beyond(d: Difference, sign: int) -> bool:
    """The interval lies wholly on the side `sign` (+1: above 0)."""
    if d.ci_low is None or d.ci_high is None:
        return False
    return d.ci_low > 0 if sign > 0 else d.ci_high < 0
