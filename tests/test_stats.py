"""Confidence intervals against scipy, by simulation, and on the edge cases the docstring promises."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
from scipy import stats

from actadd_notes.experiments.stats import Difference, Summary, bootstrap_difference, difference, summarize


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
        bootstrap_difference(rng.normal(size=5), rng.normal(size=6), resamples=100),
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


def test_bootstrap_is_reproducible_and_agrees_with_welch_on_normal_data(rng):
    steered, baseline = rng.normal(1.0, 1.0, size=200), rng.normal(0.0, 1.5, size=150)
    boot = bootstrap_difference(steered, baseline, resamples=4_500, seed=7)
    assert boot == bootstrap_difference(steered, baseline, resamples=4_500, seed=7)
    assert boot != bootstrap_difference(steered, baseline, resamples=4_500, seed=8)
    welch = difference(steered, baseline)
    assert boot.estimate == pytest.approx(welch.estimate)
    assert boot.ci_low < boot.estimate < boot.ci_high
    width, welch_width = boot.ci_high - boot.ci_low, welch.ci_high - welch.ci_low
    assert width == pytest.approx(welch_width, rel=0.1)
    assert (boot.method, boot.df, boot.p_value) == ("bootstrap", None, None)


def test_bootstrap_needs_two_values_and_a_resample():
    assert bootstrap_difference([1.0], [1.0, 2.0]).ci_low is None
    with pytest.raises(ValueError, match="resamples must be ≥ 1"):
        bootstrap_difference([1.0, 2.0], [1.0, 2.0], resamples=0)
