"""The verdict: one function decides the `effect` word, its scope and its sentence; every note reads it.

The number that decides is never the one that chose. The search picks its best setting on
its own seeds, so its estimate is the best of many noisy means and is optimistic (the winner's
curse). The verdict rests on the confirmation instead: the best setting, a fresh baseline, a
random-direction control and the prompting baseline, generated again on seeds no search row used
(and, with `confirm_prompts: held_out`, on prompts the search never saw). Because that is one
pre-planned comparison, its 95% interval needs no multiplicity correction; the search's
p-values, reported beside it, are Holm-adjusted over every setting tried.

    detected       the confirmed difference to the baseline excludes 0 in the wanted direction,
                   and so does the difference to the random-direction control
    not specific   confirmed against the baseline, but not better than a random push of the same size
    not detected   the confirmation's interval includes 0 (or points the other way)
    exploratory    confirmation turned off (`confirm: false`): the search estimate alone
    none           no setting passed the fluency guard

The effect word is decided on the confirmation prompts as fixed strata (samples within each
prompt), so more prompts or samples never weaken it. Its scope is `these prompts`, widened to
`held-out prompts` when the prompts were held out, there are at least `HELD_OUT_CLAIM` of them,
and both differences also exclude 0 with prompts as the unit: then it speaks of prompts drawn like
these. Two clauses follow: steering against the prompting baseline, and, when more prompts moved
the other way beyond their own interval than chance gives, that the effect is heterogeneous.
"""

from __future__ import annotations

from scipy.special import bdtrc

from actadd_notes.experiments.design import HELD_OUT, HELD_OUT_CLAIM
from actadd_notes.experiments.metrics import Objective
from actadd_notes.experiments.prompt_effects import CHANCE_ONE_SIDE
from actadd_notes.experiments.results import (
    BEATS_PROMPTING,
    DETECTED,
    EXPLORATORY,
    HELD_OUT_PROMPTS,
    LIKE_PROMPTING,
    NO_SETTING,
    NOT_DETECTED,
    NOT_SPECIFIC,
    PROMPTING_BETTER,
    THESE_PROMPTS,
    Confirmation,
    Heterogeneity,
    SettingResult,
    Verdict,
)
from actadd_notes.experiments.stats import Difference


def wanted(difference: Difference | None, objective: Objective) -> bool:
    """True when the 95% interval lies wholly on the side of 0 the objective wants."""
    if difference is None or difference.ci_low is None or difference.ci_high is None:
        return False
    return difference.ci_low > 0 if objective.sign > 0 else difference.ci_high < 0


def against(difference: Difference | None, objective: Objective) -> bool:
    """True when the 95% interval lies wholly on the side of 0 the objective does not want."""
    if difference is None or difference.ci_low is None or difference.ci_high is None:
        return False
    return difference.ci_high < 0 if objective.sign > 0 else difference.ci_low > 0


def decide(
    objective: Objective, best: SettingResult | None, confirmation: Confirmation | None, *, settings_tested: int
) -> Verdict:
    """The verdict on a run: the search's `best` (None: none passed the guard) and its confirmation
    (None: turned off)."""
    score = objective.column
    if best is None:
        return Verdict(NO_SETTING, "No setting passed the fluency guard: there is no best setting and no effect.")
    label = best.setting.label
    if confirmation is None:
        searched = best.differences.get(score)
        return Verdict(
            EXPLORATORY,
            f"Exploratory: the best of {settings_tested} setting(s), {label}, moved {score} by {interval(searched)} "
            f"on the search's own seeds (Holm-adjusted p = {number(best.p_holm, '.3g')}). Confirmation is off "
            "(confirm: false), so this is the search's optimistic estimate, not a finding.",
            searched,
        )
    confirmed = confirmation.best.differences.get(score)
    versus = confirmation.versus_control
    on = _where(confirmation)
    clauses = _clauses(objective, confirmation)
    if not wanted(confirmed, objective):
        too_few = confirmed is None or confirmed.ci_low is None
        why = "too few samples for an interval" if too_few else "its 95% CI does not exclude 0 in the wanted direction"
        return Verdict(
            NOT_DETECTED,
            f"No effect detected: {on} the search's best setting {label} moved {score} by "
            f"{interval(confirmed)} ({why}); the search's estimate {interval(best.differences.get(score))} "
            f"did not replicate.{clauses}",
            confirmed,
            versus,
            THESE_PROMPTS,
            _versus_prompting(objective, confirmation),
        )
    if not wanted(versus, objective):
        return Verdict(
            NOT_SPECIFIC,
            f"Not specific: {on} {label} moved {score} by {interval(confirmed)} against the baseline, but "
            f"not detectably more than a random direction of the same size ({interval(versus)}): any push of "
            f"this size does this.{clauses}",
            confirmed,
            versus,
            THESE_PROMPTS,
            _versus_prompting(objective, confirmation),
        )
    scope = scope_of(objective, confirmation)
    return Verdict(
        DETECTED,
        f"Effect detected: {on} {label} moved {score} by {interval(confirmed)} against the baseline and by "
        f"{interval(versus)} against a random direction of the same size — the steering vector beats a random "
        f"push of the same size. {_scope_sentence(objective, confirmation, scope)}{clauses}",
        confirmed,
        versus,
        scope,
        _versus_prompting(objective, confirmation),
    )


def scope_of(objective: Objective, confirmation: Confirmation) -> str:
    """`held-out prompts` when enough prompts were held out and both differences hold with prompts
    as the unit; `these prompts` otherwise."""
    across = confirmation.across_prompts
    if (
        confirmation.design == HELD_OUT
        and len(confirmation.prompts) >= HELD_OUT_CLAIM
        and wanted(across.get("baseline"), objective)
        and wanted(across.get("control"), objective)
    ):
        return HELD_OUT_PROMPTS
    return THESE_PROMPTS


def _where(confirmation: Confirmation) -> str:
    count = len(confirmation.prompts)
    if confirmation.design == HELD_OUT:
        return f"on fresh seeds of {count} held-out prompt(s),"
    return "on fresh seeds" if count <= 1 else f"on fresh seeds of the same {count} prompts,"


def _scope_sentence(objective: Objective, confirmation: Confirmation, scope: str) -> str:
    count, across = len(confirmation.prompts), confirmation.across_prompts
    if scope == HELD_OUT_PROMPTS:
        return (
            f"Scope: held-out prompts — with each of the {count} held-out prompts as one unit, the difference is "
            f"{interval(across.get('baseline'))} to the baseline and {interval(across.get('control'))} to the "
            "control: it holds for prompts drawn like these, which the search never saw."
        )
    if count <= 1:
        return "Scope: this prompt — one prompt says nothing about others."
    if confirmation.design != HELD_OUT:
        return (
            f"Scope: these {count} prompts (samples within each prompt); the search chose the setting on them, so "
            f"nothing is claimed about other prompts (hold out prompts to test that: from {2 * HELD_OUT_CLAIM} "
            "prompts on, confirm_prompts: held_out)."
        )
    reason = (
        f"fewer than {HELD_OUT_CLAIM} prompts are too few to speak beyond them"
        if count < HELD_OUT_CLAIM
        else "that does not exclude 0, so nothing is claimed beyond these prompts"
    )
    return (
        f"Scope: these {count} held-out prompts (samples within each prompt); with prompts as the unit the "
        f"difference is {interval(across.get('baseline'))} to the baseline and {interval(across.get('control'))} "
        f"to the control — {reason}."
    )


def _versus_prompting(objective: Objective, confirmation: Confirmation) -> str | None:
    difference = confirmation.versus_prompting
    if confirmation.prompting is None or difference is None:
        return None
    if wanted(difference, objective):
        return BEATS_PROMPTING
    if against(difference, objective):
        return PROMPTING_BETTER
    return LIKE_PROMPTING


def _clauses(objective: Objective, confirmation: Confirmation) -> str:
    """The prompting comparison and the heterogeneity warning, each a sentence with a leading space."""
    text = ""
    compared = _versus_prompting(objective, confirmation)
    prompting, difference = confirmation.prompting, confirmation.versus_prompting
    if compared is not None and prompting is not None:
        said = {
            BEATS_PROMPTING: "Steering beats the prompting baseline",
            PROMPTING_BETTER: "The prompting baseline does better than steering",
            LIKE_PROMPTING: "Steering and the prompting baseline are not distinguishable",
        }[compared]
        guard = (
            f"; prompting's perplexity is {prompting.perplexity_ratio:.2f}× the baseline's, past the fluency guard"
            if prompting.rejected
            else ""
        )
        text += f" {said}: steering − prompting {interval(difference)}{guard}."
    spread = confirmation.heterogeneity
    if spread is not None and heterogeneous(spread):
        moved = spread.moved_against
        text += (
            f" Heterogeneous: {spread.significant_against} of {spread.prompts} prompts moved the other way beyond "
            f"their own 95% interval, where chance alone gives {spread.expected_by_chance:.1f} "
            f"({moved.successes}, {_share(moved.estimate)}, by their own estimates); the mean hides them."
        )
    return text


def heterogeneous(spread: Heterogeneity) -> bool:
    """More prompts moved the other way beyond their own 95% interval than chance gives (a one-sided
    binomial test at 5% against 2.5% a prompt). The share by sign alone is not used: with a few
    samples a prompt, half the prompts of an absent effect move each way."""
    beyond = spread.significant_against
    return beyond > 0 and bool(bdtrc(beyond - 1, spread.prompts, CHANCE_ONE_SIDE) < 0.05)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def interval(difference: Difference | None) -> str:
    """`+0.412 [+0.201, +0.623]`, or what the data cannot give."""
    if difference is None or difference.estimate is None:
        return "n/a"
    if difference.ci_low is None or difference.ci_high is None:
        return f"{difference.estimate:+.3f} (no CI)"
    return f"{difference.estimate:+.3f} [{difference.ci_low:+.3f}, {difference.ci_high:+.3f}]"


def number(value: float | None, spec: str) -> str:
    """A statistic, or "n/a" where the data cannot give one."""
    return "n/a" if value is None else format(value, spec)
