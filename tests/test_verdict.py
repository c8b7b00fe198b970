"""The verdict procedure: its words, and its calibration on simulated null experiments.

A null experiment is one where steering does nothing on average: every setting's scores come
from the baseline's own distribution. Rows share their seed with the baseline's rows, as the
pipeline's rows do, so a weak push often leaves a row's text (and score) exactly as the
baseline's. The simulation runs the production code for everything after generation:
`summarise_setting`, Holm, `pick_best`, the confirmation's differences and `decide`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from actadd_notes.experiments.evaluator import summarise_setting
from actadd_notes.experiments.metrics import PERPLEXITY, Objective
from actadd_notes.experiments.results import (
    DETECTED,
    EXPLORATORY,
    NO_SETTING,
    NOT_DETECTED,
    NOT_SPECIFIC,
    Confirmation,
    Setting,
    SettingResult,
    pick_best,
)
from actadd_notes.experiments.stats import Difference, Summary, holm, prompt_difference
from actadd_notes.experiments.verdict import decide, wanted

SENTIMENT = Objective("sentiment", "maximize")
RUNS = 1_000
ONE_SIDED = 0.025  # a two-sided 95% interval excludes 0 on the wanted side this often under the null


def vader_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """Scores shaped like VADER's on short completions: about half exactly 0, the rest spread over [−1, 1]."""
    values = np.clip(rng.normal(0.0, 0.5, n), -1.0, 1.0)
    values[rng.random(n) < 0.5] = 0.0
    return values


def sharing_seeds(rng: np.random.Generator, baseline: np.ndarray, unchanged: float) -> np.ndarray:
    """Rows seeded like `baseline`'s: a fraction `unchanged` keep the baseline's text exactly, the
    rest are fresh draws from the same distribution (the push changed the text, not its score)."""
    fresh = vader_like(rng, len(baseline))
    return np.where(rng.random(len(baseline)) < unchanged, baseline, fresh)


def scores(values: np.ndarray, prompts: list[int], rng: np.random.Generator):
    perplexity = 10 + rng.normal(0, 1, len(values))  # fluent: every setting passes the guard
    return {"sentiment": (list(values), prompts), PERPLEXITY: (list(perplexity), prompts)}


def null_run(rng: np.random.Generator, *, settings: int = 20, samples: int = 16, prompts: int = 1):
    """One simulated grid with its confirmation; returns (search best, confirmation)."""
    index = [p for p in range(prompts) for _ in range(samples)]
    base = vader_like(rng, len(index))
    baseline = scores(base, index, rng)
    results = [
        summarise_setting(
            Setting(n, 1.0), scores(sharing_seeds(rng, base, rng.uniform(0, 0.9)), index, rng), baseline, 1.5
        )
        for n in range(settings)
    ]
    for result, adjusted in zip(results, holm([r.differences["sentiment"].p_value for r in results])):
        result.p_holm = adjusted
    best = pick_best(results, SENTIMENT)
    assert best is not None
    fresh = vader_like(rng, len(index))
    fresh_baseline = scores(fresh, index, rng)
    steered = sharing_seeds(rng, fresh, rng.uniform(0, 0.9))
    control = sharing_seeds(rng, fresh, rng.uniform(0, 0.9))
    confirmation = Confirmation(
        baseline=summarise_setting(Setting(), fresh_baseline, None, 1.5),
        best=summarise_setting(best.setting, scores(steered, index, rng), fresh_baseline, 1.5),
        control=summarise_setting(Setting(0, 1.0, control=True), scores(control, index, rng), fresh_baseline, 1.5),
        versus_control=prompt_difference(list(steered), list(control), index, index),
        samples=samples,
        control_seed=0,
    )
    return best, confirmation, len(results)


def _rate_bound(runs: int, rate: float = ONE_SIDED) -> float:
    return rate + 4 * math.sqrt(rate * (1 - rate) / runs)


@pytest.mark.parametrize("prompts", [1, 4])
def test_on_null_experiments_detected_is_no_more_frequent_than_the_nominal_rate(prompts):
    rng = np.random.default_rng(1234 + prompts)
    detected = old_rule = 0
    for _ in range(RUNS):
        best, confirmation, tested = null_run(rng, prompts=prompts, samples=16 // prompts * 2)
        detected += decide(SENTIMENT, best, confirmation, settings_tested=tested).effect == DETECTED
        old_rule += wanted(best.differences["sentiment"], SENTIMENT)  # the best setting's own search CI
    assert detected / RUNS <= _rate_bound(RUNS), detected
    # the rule this replaces (the best of 20 with its unadjusted interval) fails the same test
    assert old_rule / RUNS > 1.5 * _rate_bound(RUNS), old_rule


def test_holm_keeps_the_search_family_wise_rate_on_null_grids():
    rng = np.random.default_rng(99)
    any_significant = 0
    for _ in range(RUNS // 2):
        best, _, _ = null_run(rng)
        any_significant += best.p_holm is not None and best.p_holm < 0.05
    # the best setting has the smallest p of its grid, so this is the family-wise rate (two-sided 5%)
    assert any_significant / (RUNS // 2) <= _rate_bound(RUNS // 2, 0.05)


# ------------------------------------------------------------------ the words
def _difference(estimate: float, low: float | None, high: float | None) -> Difference:
    return Difference(estimate, low, high, 20, 20, 30.0, 0.01, "welch", 0, 0.95)


def _result(label_coeff: float, difference: Difference, control: bool = False) -> SettingResult:
    summary = Summary(0.5, 0.4, 0.6, 20, 0.2, 0, 0.95)
    return SettingResult(Setting(4, label_coeff, control), {"sentiment": summary}, {"sentiment": difference})


def _confirmation(confirmed: Difference, versus: Difference) -> Confirmation:
    baseline = SettingResult(Setting(), {"sentiment": Summary(0.1, 0.0, 0.2, 20, 0.2, 0, 0.95)})
    return Confirmation(baseline, _result(2, confirmed), _result(2, confirmed, True), versus, 20, 7)


SEARCH_BEST = _result(2, _difference(0.31, 0.01, 0.61))
UP = _difference(0.4, 0.2, 0.6)
FLAT = _difference(0.05, -0.14, 0.23)
DOWN = _difference(-0.4, -0.6, -0.2)


@pytest.mark.parametrize(
    ("confirmed", "versus", "effect", "opening"),
    [
        (UP, UP, DETECTED, "Effect detected: on fresh seeds L4 c2 moved sentiment by +0.400 [+0.200, +0.600]"),
        (UP, FLAT, NOT_SPECIFIC, "Not specific: on fresh seeds L4 c2 moved sentiment by +0.400"),
        (FLAT, UP, NOT_DETECTED, "No effect detected: on fresh seeds the search's best setting L4 c2"),
        (DOWN, DOWN, NOT_DETECTED, "No effect detected"),
        (_difference(0.4, None, None), UP, NOT_DETECTED, "No effect detected"),
    ],
)
def test_the_verdict_rests_on_the_confirmation_and_the_control(confirmed, versus, effect, opening):
    verdict = decide(SENTIMENT, SEARCH_BEST, _confirmation(confirmed, versus), settings_tested=35)
    assert verdict.effect == effect
    assert verdict.sentence.startswith(opening), verdict.sentence
    assert verdict.difference is confirmed and verdict.versus_control is versus


def test_a_search_winner_that_does_not_replicate_says_so_with_both_numbers():
    verdict = decide(SENTIMENT, SEARCH_BEST, _confirmation(FLAT, FLAT), settings_tested=35)
    assert "+0.050 [-0.140, +0.230]" in verdict.sentence and "+0.310 [+0.010, +0.610]" in verdict.sentence
    assert "did not replicate" in verdict.sentence


def test_minimizing_wants_the_interval_below_zero():
    objective = Objective("profanity", "minimize")
    best = SettingResult(Setting(4, 2.0), {"profanity": Summary(0.1, 0, 0.2, 20, 0.1, 0, 0.95)}, {"profanity": DOWN})
    baseline = SettingResult(Setting(), {"profanity": Summary(0.5, 0.4, 0.6, 20, 0.1, 0, 0.95)})
    control = SettingResult(Setting(4, 2.0, True), best.metrics, {"profanity": DOWN})
    assert (
        decide(objective, best, Confirmation(baseline, best, control, DOWN, 20, 7), settings_tested=3).effect
        == DETECTED
    )
    assert (
        decide(objective, best, Confirmation(baseline, best, control, UP, 20, 7), settings_tested=3).effect
        == NOT_SPECIFIC
    )


def test_without_confirmation_the_verdict_is_exploratory_whatever_the_search_says():
    verdict = decide(SENTIMENT, SEARCH_BEST, None, settings_tested=35)
    assert verdict.effect == EXPLORATORY
    assert verdict.sentence.startswith("Exploratory: the best of 35 setting(s), L4 c2, moved sentiment by +0.310")
    assert "not a finding" in verdict.sentence


def test_no_best_setting_is_none():
    assert decide(SENTIMENT, None, None, settings_tested=35).effect == NO_SETTING
