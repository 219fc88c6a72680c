"""Random distributions for the synthetic workload generator, read from TOML.

A TOML value is either a number (a constant) or a table::

    {dist = "lognormal", median = 0.39, sigma = 0.59, min = 0.05, max = 60}
    {dist = "exponential", mean = 2.0}
    {dist = "uniform", min = 6, max = 30}
    {dist = "empirical", values = [6, 12, 30]}
    {fit = "traces/lmcache/miniswe.jsonl.gz", field = "tool_duration_s"}

``fit`` fits a lognormal by maximum likelihood (mean and standard deviation of the
logs) to the positive values of a call field in any trace ``load_trace`` reads; the
fitted parameters are kept on the :class:`Dist`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.common.errors import InputError

KINDS = ("const", "uniform", "lognormal", "exponential", "empirical")
FIT_FIELDS = ("tool_duration_s", "gap_s", "input_tokens", "output_tokens")


@dataclass(frozen=True)
class Dist:
    """A distribution over non-negative numbers, clamped to ``[lo, hi]``.

    ``const``: ``a``; ``uniform``: on ``[lo, hi]``; ``lognormal``: median ``a``, log
    standard deviation ``b``; ``exponential``: mean ``a``; ``empirical``: uniform choice
    among ``values``.
    """

    kind: str
    a: float = 0.0
    b: float = 0.0
    lo: float = 0.0
    hi: float = math.inf
    values: tuple[float, ...] = ()

    def sample(self, rng: np.random.Generator) -> float:
        if self.kind == "const":
            x = self.a
        elif self.kind == "uniform":
            x = float(rng.uniform(self.lo, self.hi))
        elif self.kind == "lognormal":
            x = self.a * math.exp(self.b * float(rng.standard_normal()))
        elif self.kind == "exponential":
            x = float(rng.exponential(self.a))
        else:
            x = self.values[int(rng.integers(len(self.values)))]
        return min(max(x, self.lo), self.hi)

    def sample_int(self, rng: np.random.Generator, lo: int = 1) -> int:
        """A sample rounded to an integer of at least ``lo``."""
        return max(lo, round(self.sample(rng)))


def const(x: float) -> Dist:
    return Dist("const", a=x)


def lognormal(median: float, sigma: float, lo: float = 0.0, hi: float = math.inf) -> Dist:
    return Dist("lognormal", a=median, b=sigma, lo=lo, hi=hi)


def fit_lognormal(values: list[float]) -> tuple[float, float]:
    """Median and log standard deviation of a lognormal fitted to positive ``values``."""
    logs = np.log([v for v in values if v > 0])
    if len(logs) < 2:
        raise ValueError("need at least two positive values to fit")
    return float(math.exp(logs.mean())), float(logs.std())


#: Largest value a distribution parameter may take (tokens, seconds, counts): beyond
#: it a synthetic workload is a typo, and would overflow token and time arithmetic.
MAX_VALUE = 1e8
#: Largest lognormal sigma (p99 = median x e^(2.33 sigma): 10 is already x 1.3e10).
MAX_SIGMA = 10.0


def parse_dist(obj: Any, where: str, key: str, base_dir: Path) -> Dist:
    """A :class:`Dist` from a TOML value; errors name ``where`` (the file) and ``key``."""
    if isinstance(obj, int | float) and not isinstance(obj, bool):
        if not 0 <= obj <= MAX_VALUE:
            raise InputError(
                where, None, key, f"expected a value in [0, {MAX_VALUE:.0e}], got {obj}"
            )
        return const(float(obj))
    if not isinstance(obj, dict):
        raise InputError(where, None, key, "expected a number or a distribution table")

    def num(name: str, default: float | None = None) -> float:
        v = obj.get(name, default)
        if v is None:
            raise InputError(where, None, f"{key}.{name}", "required for this distribution")
        top = MAX_SIGMA if name == "sigma" else MAX_VALUE
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or not (0 <= v <= top or (name == "max" and v == math.inf))
        ):
            raise InputError(
                where, None, f"{key}.{name}", f"expected a number in [0, {top:g}], got {v!r}"
            )
        return float(v)

    lo, hi = num("min", 0.0), num("max", math.inf)
    if "fit" in obj:
        from sim.workload.traces import load_trace

        field = obj.get("field", "tool_duration_s")
        if field not in FIT_FIELDS:
            raise InputError(
                where, None, f"{key}.field", f"expected one of {', '.join(FIT_FIELDS)}"
            )
        path = Path(str(obj["fit"]))
        w = load_trace(path if path.is_absolute() else base_dir / path)
        try:
            median, sigma = fit_lognormal([float(getattr(c, field)) for c in w.calls])
        except ValueError as e:
            raise InputError(where, None, f"{key}.fit", f"{obj['fit']}: {field}: {e}") from None
        return lognormal(median, sigma, lo, hi)
    kind = obj.get("dist")
    if kind not in KINDS:
        raise InputError(
            where, None, f"{key}.dist", f"expected one of {', '.join(KINDS)} (or fit = PATH)"
        )
    if kind == "const":
        return const(num("value"))
    if kind == "uniform":
        if not math.isfinite(hi) or hi < lo:
            raise InputError(where, None, f"{key}.max", "uniform needs finite min <= max")
        return Dist("uniform", lo=lo, hi=hi)
    if kind == "lognormal":
        return lognormal(num("median"), num("sigma"), lo, hi)
    if kind == "exponential":
        return Dist("exponential", a=num("mean"), lo=lo, hi=hi)
    vals = obj.get("values")
    if (
        not isinstance(vals, list)
        or not vals
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= MAX_VALUE
            for v in vals
        )
    ):
        raise InputError(
            where,
            None,
            f"{key}.values",
            f"expected a non-empty list of numbers in [0, {MAX_VALUE:g}]",
        )
    return Dist("empirical", lo=lo, hi=hi, values=tuple(float(v) for v in vals))
