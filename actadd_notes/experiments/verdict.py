"""The verdict: one function decides the `effect` word and its sentence; every note reads it.

The number that decides is never the one that chose. The search picks its best setting on
its own seeds, so its estimate is the best of many noisy means and is optimistic (the winner's
curse). The verdict rests on the confirmation instead: the best setting, a fresh baseline and a
random-direction control, generated again on seeds no search row used. Because that is one
pre-planned comparison, its 95% interval needs no multiplicity correction; the search's
p-values, reported beside it, are Holm-adjusted over every setting tried.

    detected       the confirmed difference to the baseline excludes 0 in the wanted direction,
                   and so does the difference to the random-direction control
    not specific   confirmed against the baseline, but not better than a random push of the same size
    not detected   the confirmation's interval includes 0 (or points the other way)
    exploratory    confirmation turned off (`confirm: false`): the search estimate alone
    none           no setting passed the fluency guard
"""

from __future__ import annotations

from actadd_notes.experiments.metrics import Objective
from actadd_notes.experiments.results import (
    DETECTED,
    EXPLORATORY,
    NO_SETTING,
    NOT_DETECTED,
    NOT_SPECIFIC,
    Confirmation,
    SettingResult,
    Verdict,
)
from actadd_notes.experiments.stats import Difference


def wanted(difference: Difference | None, objective: Objective) -> bool:
    """True when the 95% interval lies wholly on the side of 0 the objective wants."""
    if difference is None or difference.ci_low is None or difference.ci_high is None:
        return False
    return difference.ci_low > 0 if objective.sign > 0 else difference.ci_high < 0


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
    if not wanted(confirmed, objective):
        too_few = confirmed is None or confirmed.ci_low is None
        why = "too few samples for an interval" if too_few else "its 95% CI does not exclude 0 in the wanted direction"
        return Verdict(
            NOT_DETECTED,
            f"No effect detected: on fresh seeds the search's best setting {label} moved {score} by "
            f"{interval(confirmed)} ({why}); the search's estimate {interval(best.differences.get(score))} "
            "did not replicate.",
            confirmed,
            versus,
        )
    if not wanted(versus, objective):
        return Verdict(
            NOT_SPECIFIC,
            f"Not specific: on fresh seeds {label} moved {score} by {interval(confirmed)} against the baseline, but "
            f"not detectably more than a random direction of the same size ({interval(versus)}): any push of "
            "this size does this.",
            confirmed,
            versus,
        )
    return Verdict(
        DETECTED,
        f"Effect detected: on fresh seeds {label} moved {score} by {interval(confirmed)} against the baseline and by "
        f"{interval(versus)} against a random direction of the same size — the steering vector beats a random "
        "push of the same size.",
        confirmed,
        versus,
    )


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
