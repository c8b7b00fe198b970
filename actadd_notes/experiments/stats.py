"""Confidence intervals, differences and multiple-comparison adjustment, as plain dataclasses
(`asdict` is strict JSON).

Two questions, two intervals for a difference to a baseline:
- "on these prompts" (`stratified_difference`): the prompts are fixed strata, the samples within
  each prompt are the unit. The estimate is the mean over prompts of each prompt's difference, its
  variance the within-prompt variances combined (Welch–Satterthwaite degrees of freedom). With one
  prompt it is Welch's interval; more prompts or more samples narrow it, so more data never
  weakens the claim, and the claim says nothing about other prompts.
- "beyond these prompts" (`prompt_difference`): prompts are the unit, a paired t over the
  per-prompt mean differences with P − 1 degrees of freedom. It covers the prompt-to-prompt spread
  of the effect, so it speaks of prompts drawn like these, and needs enough of them (and prompts
  the search did not choose on) to mean anything.

Two policies, so that results files never hold NaN:
- non-finite values (a failed score, an infinite perplexity) are dropped and counted in `dropped`;
- what the data cannot give is None, not NaN: with one value there is a mean but no sd or
  interval; with none there is no mean either. A sample with no spread gets a zero-width interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri, stdtr, stdtrit  # normal and Student t quantiles: scipy.stats minus its overhead


@dataclass(frozen=True)
class Summary:
    """Mean with a Student t interval; `n` counts the finite values used."""

    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    sd: float | None
    dropped: int
    confidence: float


@dataclass(frozen=True)
class Difference:
    """mean(values) − mean(baseline) with its interval; `method` is welch or prompt-paired."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_baseline: int
    df: float | None  # Welch–Satterthwaite, or prompts − 1 for prompt-paired
    p_value: float | None  # two-sided
    method: str
    dropped: int
    confidence: float


@dataclass(frozen=True)
class Proportion:
    """A share with its Wilson score interval (good at small n and near 0 or 1)."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    successes: int
    n: int
    confidence: float


def summarize(values: Iterable[float], *, confidence: float = 0.95) -> Summary:
    """Mean, sd and a t interval for the mean."""
    _check_confidence(confidence)
    sample, dropped = _finite(values)
    n = len(sample)
    if n == 0:
        return Summary(None, None, None, 0, None, dropped, confidence)
    mean = float(sample.mean())
    if n == 1:
        return Summary(mean, None, None, 1, None, dropped, confidence)
    sd = float(sample.std(ddof=1))
    half = _critical(confidence, n - 1) * sd / math.sqrt(n)
    return Summary(mean, mean - half, mean + half, n, sd, dropped, confidence)


def difference(values: Iterable[float], baseline: Iterable[float], *, confidence: float = 0.95) -> Difference:
    """Welch t interval and p-value for mean(values) − mean(baseline); variances may differ."""
    _check_confidence(confidence)
    x, y, dropped = _pair(values, baseline)
    if len(x) < 2 or len(y) < 2:
        return _difference(x, y, dropped, confidence, "welch")
    estimate = float(x.mean() - y.mean())
    var_x, var_y = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(var_x + var_y)
    if se == 0:
        return _difference(x, y, dropped, confidence, "welch", (estimate, estimate))
    df = float((var_x + var_y) ** 2 / (var_x**2 / (len(x) - 1) + var_y**2 / (len(y) - 1)))
    half = _critical(confidence, df) * se
    p_value = _two_sided_p(estimate / se, df)
    return _difference(x, y, dropped, confidence, "welch", (estimate - half, estimate + half), df, p_value)


def prompt_difference(
    values: Sequence[float],
    baseline: Sequence[float],
    prompts: Sequence[int],
    baseline_prompts: Sequence[int],
    *,
    confidence: float = 0.95,
) -> Difference:
    """The difference with prompts as the unit: a paired t interval over the per-prompt differences
    mean(values of prompt p) − mean(baseline of prompt p); one distinct prompt falls back to Welch.

    A prompt left without a finite value on either side is left out (its values count as dropped)."""
    _check_inputs(values, baseline, prompts, baseline_prompts, confidence)
    if len(set(prompts) | set(baseline_prompts)) < 2:
        return difference(values, baseline, confidence=confidence)
    x, y, dropped = _paired_prompts(values, baseline, prompts, baseline_prompts)
    shared = sorted(x)
    n, n_baseline = sum(len(x[p]) for p in shared), sum(len(y[p]) for p in shared)
    per_prompt = np.array([np.mean(x[p]) - np.mean(y[p]) for p in shared])
    if len(per_prompt) == 0:
        return Difference(None, None, None, 0, 0, None, None, "prompt-paired", dropped, confidence)
    estimate = float(per_prompt.mean())
    if len(per_prompt) < 2:
        return Difference(estimate, None, None, n, n_baseline, None, None, "prompt-paired", dropped, confidence)
    df = float(len(per_prompt) - 1)
    se = float(per_prompt.std(ddof=1)) / math.sqrt(len(per_prompt))
    if se == 0:
        return Difference(estimate, estimate, estimate, n, n_baseline, df, None, "prompt-paired", dropped, confidence)
    half = _critical(confidence, df) * se
    p_value = _two_sided_p(estimate / se, df)
    return Difference(
        estimate, estimate - half, estimate + half, n, n_baseline, df, p_value, "prompt-paired", dropped, confidence
    )


def stratified_difference(
    values: Sequence[float],
    baseline: Sequence[float],
    prompts: Sequence[int],
    baseline_prompts: Sequence[int],
    *,
    confidence: float = 0.95,
) -> Difference:
    """The difference on these prompts: the mean over prompts of mean(values of p) − mean(baseline of p).

    Each side's variance is pooled within prompts (deviations from each prompt's own mean), so a
    prompt with one sample still counts and the prompt-to-prompt spread of the scores, which is
    fixed here, adds no noise; the degrees of freedom are Welch–Satterthwaite's. One distinct
    prompt gives Welch's interval exactly. A prompt without a finite value on either side is left
    out (its values count as dropped)."""
    _check_inputs(values, baseline, prompts, baseline_prompts, confidence)
    if len(set(prompts) | set(baseline_prompts)) < 2:
        return difference(values, baseline, confidence=confidence)
    x, y, dropped = _paired_prompts(values, baseline, prompts, baseline_prompts)
    shared = sorted(x)
    n, n_baseline = sum(len(x[p]) for p in shared), sum(len(y[p]) for p in shared)
    if not shared:
        return Difference(None, None, None, 0, 0, None, None, "stratified", dropped, confidence)
    strata = len(shared)
    estimate = float(np.mean([np.mean(x[p]) - np.mean(y[p]) for p in shared]))
    parts = []  # each side's Var(mean over prompts) = σ² Σ_p 1/n_p / P², with σ² pooled within prompts
    for groups in ([x[p] for p in shared], [y[p] for p in shared]):
        pooled = _stratum_variance(groups)
        if pooled is None:  # one sample per prompt: no within-prompt spread to see
            return Difference(estimate, None, None, n, n_baseline, None, None, "stratified", dropped, confidence)
        variance, variance_df = pooled
        parts.append((variance * sum(1 / len(g) for g in groups) / strata**2, variance_df))
    total = sum(part for part, _ in parts)
    if total == 0:
        return Difference(estimate, estimate, estimate, n, n_baseline, None, None, "stratified", dropped, confidence)
    df = total**2 / sum(part**2 / part_df for part, part_df in parts)
    se = math.sqrt(total)
    half = _critical(confidence, df) * se
    p_value = _two_sided_p(estimate / se, df)
    return Difference(
        estimate, estimate - half, estimate + half, n, n_baseline, df, p_value, "stratified", dropped, confidence
    )


def proportion(successes: int, n: int, *, confidence: float = 0.95) -> Proportion:
    """successes / n with Wilson's score interval; None where n is 0."""
    _check_confidence(confidence)
    if not 0 <= successes <= n:
        raise ValueError(f"{successes} successes out of {n}")
    if n == 0:
        return Proportion(None, None, None, 0, 0, confidence)
    z = float(ndtri((1 + confidence) / 2))
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Proportion(share, max(0.0, centre - half), min(1.0, centre + half), successes, n, confidence)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment over every p-value given (None: no test, left None).

    Controls the family-wise error rate at α under any dependence between the tests — the
    settings of a sweep share their baseline and their seeds, so their tests are correlated."""
    tested = sorted((p, index) for index, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[index] = running
    return adjusted


def _check_inputs(
    values: Sequence[float],
    baseline: Sequence[float],
    prompts: Sequence[int],
    baseline_prompts: Sequence[int],
    confidence: float,
) -> None:
    _check_confidence(confidence)
    if len(values) != len(prompts) or len(baseline) != len(baseline_prompts):
        raise ValueError("each value needs its prompt index")


def _paired_prompts(
    values: Sequence[float], baseline: Sequence[float], prompts: Sequence[int], baseline_prompts: Sequence[int]
) -> tuple[dict[int, list[float]], dict[int, list[float]], int]:
    """Each side's finite values by prompt, kept only for prompts both sides have, and how many
    values that dropped (non-finite ones, and those of a prompt only one side has)."""
    x, dropped_x = _by_prompt(values, prompts)
    y, dropped_y = _by_prompt(baseline, baseline_prompts)
    shared = set(x) & set(y)
    dropped = dropped_x + dropped_y + sum(len(v) for p, v in x.items() if p not in shared)
    dropped += sum(len(v) for p, v in y.items() if p not in shared)
    return {p: x[p] for p in shared}, {p: y[p] for p in shared}, dropped


def _by_prompt(values: Sequence[float], prompts: Sequence[int]) -> tuple[dict[int, list[float]], int]:
    groups: dict[int, list[float]] = {}
    dropped = 0
    for value, prompt in zip(values, prompts, strict=True):
        if math.isfinite(value):
            groups.setdefault(prompt, []).append(value)
        else:
            dropped += 1
    return groups, dropped


def _stratum_variance(groups: Sequence[list[float]]) -> tuple[float, float] | None:
    """The variance pooled within groups and its degrees of freedom; None with no group of two."""
    df = sum(len(g) - 1 for g in groups)
    if df <= 0:
        return None
    squares = sum(float(((np.asarray(g) - np.mean(g)) ** 2).sum()) for g in groups)
    return squares / df, float(df)


def _difference(
    x: np.ndarray,
    y: np.ndarray,
    dropped: int,
    confidence: float,
    method: str,
    interval: tuple[float, float] | None = None,
    df: float | None = None,
    p_value: float | None = None,
) -> Difference:
    estimate = float(x.mean() - y.mean()) if len(x) and len(y) else None
    low, high = interval if interval is not None else (None, None)
    return Difference(estimate, low, high, len(x), len(y), df, p_value, method, dropped, confidence)


def _pair(values: Iterable[float], baseline: Iterable[float]) -> tuple[np.ndarray, np.ndarray, int]:
    x, dropped_x = _finite(values)
    y, dropped_y = _finite(baseline)
    return x, y, dropped_x + dropped_y


def _finite(values: Iterable[float]) -> tuple[np.ndarray, int]:
    array = np.asarray(list(values), dtype=float)
    keep = np.isfinite(array)
    return array[keep], int((~keep).sum())


def _critical(confidence: float, df: float) -> float:
    return float(stdtrit(df, (1 + confidence) / 2))


def _two_sided_p(t: float, df: float) -> float:
    return float(2 * stdtr(df, -abs(t)))


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
