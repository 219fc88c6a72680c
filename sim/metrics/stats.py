"""Confidence intervals and significance tests for comparing policies across seeds.

Every policy in a comparison runs with the same seeds on the same workload, so run
``i`` of policy A and run ``i`` of policy B share their seed: differences are tested
*paired by seed* (a paired t-test on the per-seed differences), which removes the
seed-to-seed variation both policies share.  Intervals use Student's t distribution
with ``n - 1`` degrees of freedom (scipy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeanCI:
    """Sample mean and a two-sided confidence interval, in the metric's own unit.

    ``half_width`` is NaN for a single sample (no spread to estimate) and 0 when every
    sample is equal.
    """

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> MeanCI:
    """Mean and t-distribution confidence interval of the finite ``values``."""
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    n = int(a.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, 0)
    mean = float(a.mean())
    if n == 1:
        return MeanCI(mean, math.nan, 1)
    sd = float(a.std(ddof=1))
    from scipy import stats as _st  # imported on use: scipy.stats costs ~0.5 s to import

    t = float(_st.t.ppf(0.5 + confidence / 2, n - 1))
    return MeanCI(mean, t * sd / math.sqrt(n), n)


@dataclass(frozen=True)
class PairedTest:
    """Paired t-test of ``b - a`` over matched seeds.

    ``diff`` is the mean difference (unit of the metric); ``p_value`` two-sided; NaN
    when fewer than two complete pairs exist.
    """

    diff: float
    p_value: float
    n: int

    def significant(self, alpha: float = 0.05) -> bool:
        return bool(self.p_value < alpha)


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> PairedTest:
    """Paired t-test of ``b`` against ``a`` (same length, same seed order).

    Pairs where either value is not finite are dropped.  When every difference is
    the same (zero spread), the difference is certain: p = 0 if it is non-zero, else 1.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    d = y[ok] - x[ok]
    n = int(d.size)
    if n == 0:
        return PairedTest(math.nan, math.nan, 0)
    diff = float(d.mean())
    if n < 2:
        return PairedTest(diff, math.nan, n)
    sd = float(d.std(ddof=1))
    scale = max(abs(float(x[ok].mean())), abs(float(y[ok].mean())), 1e-300)
    if sd <= 1e-12 * scale:
        return PairedTest(diff, 0.0 if abs(diff) > 1e-12 * scale else 1.0, n)
    t = diff / (sd / math.sqrt(n))
    from scipy import stats as _st

    p = float(2 * _st.t.sf(abs(t), n - 1))
    return PairedTest(diff, p, n)


def step_area(times: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Integral from ``times[0]`` to each of ``at`` of a step function (value-seconds).

    The function holds ``values[i]`` from ``times[i]`` until ``times[i + 1]`` (the last
    value holds forever) and is 0 before ``times[0]``.  ``times`` must be sorted.
    """
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(at, dtype=np.float64)
    if t.size == 0:
        return np.zeros_like(g)
    cum = np.concatenate(([0.0], np.cumsum(v[:-1] * np.diff(t))))
    k = np.searchsorted(t, g, side="right") - 1
    kc = np.clip(k, 0, None)
    out = cum[kc] + v[kc] * (g - t[kc])
    return np.where(k >= 0, out, 0.0)


def step_means(times: np.ndarray, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Time-weighted mean of a step function over each bin ``[edges[i], edges[i+1])``."""
    e = np.asarray(edges, dtype=np.float64)
    area = step_area(times, values, e)
    width = np.diff(e)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(width > 0, np.diff(area) / width, 0.0)
