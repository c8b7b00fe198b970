"""Confidence intervals for per-completion scores, as plain dataclasses (`asdict` is strict JSON).

Two policies, so that results files never hold NaN:
- non-finite values (a failed score, an infinite perplexity) are dropped and counted in `dropped`;
- what the data cannot give is None, not NaN: with one value there is a mean but no sd or
  interval; with none there is no mean either. A sample with no spread gets a zero-width interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats

_BOOTSTRAP_CHUNK = 1_000  # resamples drawn at once: bounds memory for large samples


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
    """mean(values) − mean(baseline) with its interval; `method` is welch or bootstrap."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_baseline: int
    df: float | None  # Welch–Satterthwaite degrees of freedom
    p_value: float | None  # two-sided, Welch only
    method: str
    dropped: int
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
    p_value = float(2 * stats.t.sf(abs(estimate) / se, df))
    return _difference(x, y, dropped, confidence, "welch", (estimate - half, estimate + half), df, p_value)


def bootstrap_difference(
    values: Iterable[float],
    baseline: Iterable[float],
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> Difference:
    """Percentile-bootstrap interval for mean(values) − mean(baseline), for scores far from normal
    (topic_rate's 0/1 values, bounded sentiment); reproducible for a given `seed`."""
    _check_confidence(confidence)
    if resamples < 1:
        raise ValueError(f"resamples must be ≥ 1, got {resamples}")
    x, y, dropped = _pair(values, baseline)
    if len(x) < 2 or len(y) < 2:
        return _difference(x, y, dropped, confidence, "bootstrap")
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for start in range(0, resamples, _BOOTSTRAP_CHUNK):
        size = min(_BOOTSTRAP_CHUNK, resamples - start)
        means_x = x[rng.integers(0, len(x), (size, len(x)))].mean(axis=1)
        means_y = y[rng.integers(0, len(y), (size, len(y)))].mean(axis=1)
        diffs[start : start + size] = means_x - means_y
    tail = (1 - confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return _difference(x, y, dropped, confidence, "bootstrap", (float(low), float(high)))


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
    return float(stats.t.ppf((1 + confidence) / 2, df))


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
