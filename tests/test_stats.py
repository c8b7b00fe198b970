"""Confidence intervals against scipy, by simulation, and on the edge cases the docstring promises."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
from scipy import stats

from actadd_notes.experiments.stats import (
    Difference,
    Summary,
    difference,
    holm,
    prompt_difference,
    proportion,
    stratified_difference,
    summarize,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


def test_summary_matches_scipy_t_interval(rng):
    sample = rng.normal(2.0, 3.0, size=25)
    summary = summarize(sample, confidence=0.9)
    low, high = stats.t.interval(0.9, len(sample) - 1, loc=sample.mean(), scale=stats.sem(sample))
    assert summary.mean == pytest.approx(sample.mean())
    assert summary.sd == pytest.approx(sample.std(ddof=1))
    assert (summary.ci_low, summary.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert (summary.n, summary.dropped, summary.confidence) == (25, 0, 0.9)


@pytest.mark.parametrize("confidence", [0.8, 0.95])
def test_t_interval_covers_the_true_mean_at_the_nominal_rate(rng, confidence):
    trials = 2_000
    covered = 0
    for _ in range(trials):
        summary = summarize(rng.normal(5.0, 2.0, size=8), confidence=confidence)
        covered += summary.ci_low <= 5.0 <= summary.ci_high
    # Four binomial standard errors around the nominal rate (the seed makes it deterministic).
    assert covered / trials == pytest.approx(confidence, abs=4 * math.sqrt(confidence * (1 - confidence) / trials))


def test_non_finite_values_are_dropped_and_counted():
    summary = summarize([1.0, math.nan, 3.0, math.inf, -math.inf])
    assert (summary.mean, summary.n, summary.dropped) == (2.0, 2, 3)


def test_small_samples_give_none_never_nan():
    assert summarize([4.0]) == Summary(4.0, None, None, 1, None, 0, 0.95)
    assert summarize([]) == Summary(None, None, None, 0, None, 0, 0.95)
    assert summarize([math.nan]) == Summary(None, None, None, 0, None, 1, 0.95)
    assert summarize([2.0, 2.0, 2.0]) == Summary(2.0, 2.0, 2.0, 3, 0.0, 0, 0.95)


def test_records_are_strict_json(rng):
    records = [
        summarize([]),
        summarize(rng.normal(size=5)),
        difference([1.0], [2.0, 3.0]),
        difference(rng.normal(size=5), rng.normal(size=6)),
        prompt_difference(rng.normal(size=6), rng.normal(size=6), [0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1]),
    ]
    json.dumps([asdict(record) for record in records], allow_nan=False)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95])
def test_confidence_must_be_a_fraction(confidence):
    with pytest.raises(ValueError, match="confidence must be in"):
        summarize([1.0, 2.0], confidence=confidence)


def test_welch_difference_matches_scipy(rng):
    steered, baseline = rng.normal(0.4, 1.0, size=30), rng.normal(0.0, 2.5, size=18)
    result = difference(steered, baseline, confidence=0.9)
    reference = stats.ttest_ind(steered, baseline, equal_var=False)
    low, high = reference.confidence_interval(0.9)
    assert result.estimate == pytest.approx(steered.mean() - baseline.mean())
    assert (result.ci_low, result.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert result.p_value == pytest.approx(reference.pvalue)
    assert result.df == pytest.approx(reference.df)
    assert (result.n, result.n_baseline, result.method, result.dropped) == (30, 18, "welch", 0)


def test_difference_edge_cases():
    assert difference([1.0, math.nan], [3.0, 5.0]) == Difference(-3.0, None, None, 1, 2, None, None, "welch", 1, 0.95)
    assert difference([], [1.0, 2.0]).estimate is None
    # No spread on either side: the interval collapses onto the estimate, and no p-value is claimed.
    assert difference([2.0, 2.0], [1.0, 1.0]) == Difference(1.0, 1.0, 1.0, 2, 2, None, None, "welch", 0, 0.95)


def _holm_by_definition(p_values):
    """Holm's procedure as its textbook states it: reject H(1)…H(k) for the largest k with
    p(j) ≤ α / (m − j + 1) for every j ≤ k; the adjusted p-value is the smallest α that rejects."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    for rank, index in enumerate(order):
        adjusted[index] = min(1.0, max((m - j) * p_values[order[j]] for j in range(rank + 1)))
    return adjusted


def test_holm_matches_its_definition_and_keeps_none_out_of_the_family(rng):
    p_values = list(rng.uniform(0, 0.2, size=12)) + [0.0004, 0.9]
    assert holm(p_values) == pytest.approx(_holm_by_definition(p_values))
    with_gaps = [0.01, None, 0.04, None, 0.03]
    assert holm(with_gaps) == pytest.approx([0.03, None, 0.06, None, 0.06])
    assert holm([]) == []


def test_holm_controls_the_family_wise_error_on_null_tests(rng):
    """20 true null hypotheses (uniform p-values): at most 5% of families have any Holm p < 0.05."""
    families = 4_000
    any_rejected = sum(min(holm(list(rng.uniform(size=20)))) < 0.05 for _ in range(families))
    assert any_rejected / families <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / families)


def test_prompt_difference_is_a_paired_t_over_per_prompt_mean_differences(rng):
    prompts = [p for p in range(5) for _ in range(8)]
    level = {p: rng.normal(0, 2) for p in range(5)}  # prompts differ a lot in level
    steered = [level[p] + 0.5 + rng.normal() for p in prompts]
    baseline = [level[p] + rng.normal() for p in prompts]
    result = prompt_difference(steered, baseline, prompts, prompts)
    per_prompt = [
        np.mean([v for v, q in zip(steered, prompts) if q == p])
        - np.mean([v for v, q in zip(baseline, prompts) if q == p])
        for p in range(5)
    ]
    reference = stats.ttest_1samp(per_prompt, 0.0)
    low, high = stats.t.interval(0.95, 4, loc=np.mean(per_prompt), scale=stats.sem(per_prompt))
    assert result.method == "prompt-paired" and result.df == 4.0
    assert result.estimate == pytest.approx(np.mean(per_prompt))
    assert (result.ci_low, result.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert result.p_value == pytest.approx(reference.pvalue)
    assert (result.n, result.n_baseline) == (40, 40)


def test_prompt_difference_with_one_prompt_is_welch_over_rows(rng):
    steered, baseline = list(rng.normal(1, 1, size=10)), list(rng.normal(0, 1, size=12))
    assert prompt_difference(steered, baseline, [0] * 10, [0] * 12) == difference(steered, baseline)


def test_prompt_difference_drops_non_finite_values_and_prompts_missing_a_side():
    result = prompt_difference([1.0, math.nan, 2.0, 4.0], [0.0, 0.0, 1.0, 9.0], [0, 0, 1, 2], [0, 0, 1, 3])
    # prompt 0: 1 − 0, prompt 1: 2 − 1; prompts 2 and 3 have one side only
    assert (result.estimate, result.n, result.n_baseline, result.dropped) == (1.0, 2, 3, 3)


def test_prompt_clustered_intervals_hold_their_coverage_when_rows_are_correlated(rng):
    """Rows of one prompt share a prompt effect: a row-level Welch interval under-covers the
    population difference, the prompt-paired one holds 95%."""
    trials, covered_paired, covered_rows = 1_500, 0, 0
    prompts = [p for p in range(6) for _ in range(10)]
    for _ in range(trials):
        effect = {p: rng.normal(0.0, 0.5) for p in range(6)}  # the steering's effect varies by prompt, mean 0
        steered = [effect[p] + rng.normal(0, 0.3) for p in prompts]
        baseline = [rng.normal(0, 0.3) for _ in prompts]
        paired = prompt_difference(steered, baseline, prompts, prompts)
        rows = difference(steered, baseline)
        covered_paired += paired.ci_low <= 0 <= paired.ci_high
        covered_rows += rows.ci_low <= 0 <= rows.ci_high
    tolerance = 4 * math.sqrt(0.05 * 0.95 / trials)
    assert covered_paired / trials >= 0.95 - tolerance
    assert covered_rows / trials < 0.95 - tolerance


def test_stratified_difference_with_one_prompt_is_welch(rng):
    steered, baseline = rng.normal(size=10), rng.normal(size=12)
    assert stratified_difference(steered, baseline, [0] * 10, [0] * 12) == difference(steered, baseline)


def test_stratified_difference_is_the_mean_of_per_prompt_differences_with_pooled_within_prompt_variance():
    steered = [1.0, 2.0, 3.0, 10.0, 12.0, 14.0]
    baseline = [0.0, 1.0, 2.0, 9.0, 10.0, 11.0]
    prompts = [0, 0, 0, 1, 1, 1]
    result = stratified_difference(steered, baseline, prompts, prompts)
    assert result.estimate == pytest.approx(((2 - 1) + (12 - 10)) / 2)
    # within-prompt variances: steered (1 + 4) / 2 · … pooled over 4 df; baseline (1 + 1) pooled over 4 df
    steered_var, baseline_var = (2 + 8) / 4, (2 + 2) / 4
    se = math.sqrt((steered_var * (1 / 3 + 1 / 3) + baseline_var * (1 / 3 + 1 / 3)) / 4)
    parts = [steered_var * (2 / 3) / 4, baseline_var * (2 / 3) / 4]
    df = sum(parts) ** 2 / sum(p**2 / 4 for p in parts)
    assert result.df == pytest.approx(df)
    assert result.ci_high - result.estimate == pytest.approx(stats.t.ppf(0.975, df) * se)
    assert result.method == "stratified"


def test_a_second_prompt_that_moved_as_well_narrows_the_interval_on_these_prompts(rng):
    """The issue's case: two prompts both moved; prompts as the unit (1 df) cannot say so, these prompts can."""
    prompts = [p for p in range(2) for _ in range(16)]
    baseline = rng.normal(0.0, 0.4, len(prompts))
    steered = baseline + 0.46 + rng.normal(0.0, 0.2, len(prompts))
    one = stratified_difference(steered[:16], baseline[:16], prompts[:16], prompts[:16])
    two = stratified_difference(steered, baseline, prompts, prompts)
    across = prompt_difference(steered, baseline, prompts, prompts)
    assert one.ci_low > 0 and two.ci_low > 0
    assert two.ci_high - two.ci_low < one.ci_high - one.ci_low
    assert across.df == 1.0 and across.ci_high - across.ci_low > two.ci_high - two.ci_low


def test_stratified_intervals_cover_the_mean_over_the_prompts_in_hand(rng):
    """Prompts fixed (their effects differ), samples random: the interval covers the mean of these prompts' effects."""
    trials, covered = 1_500, 0
    effects = rng.normal(0.0, 0.5, 5)
    prompts = [p for p in range(5) for _ in range(8)]
    for _ in range(trials):
        steered = [effects[p] + rng.normal(0, 0.3) for p in prompts]
        baseline = [rng.normal(0, 0.3) for _ in prompts]
        result = stratified_difference(steered, baseline, prompts, prompts)
        covered += result.ci_low <= effects.mean() <= result.ci_high
    assert covered / trials >= 0.95 - 4 * math.sqrt(0.05 * 0.95 / trials)


def test_proportion_is_wilsons_interval():
    share = proportion(3, 10)  # Wilson's interval for 3 of 10: [0.1078, 0.6032]
    assert (share.estimate, share.successes, share.n) == (0.3, 3, 10)
    assert (share.ci_low, share.ci_high) == (pytest.approx(0.10779, abs=1e-5), pytest.approx(0.60322, abs=1e-5))
    share = proportion(0, 20)
    assert share.estimate == 0 and share.ci_low == 0 and share.ci_high == pytest.approx(0.16113, abs=1e-5)
    assert proportion(0, 0).estimate is None
    with pytest.raises(ValueError):
        proportion(3, 2)
