"""Is a refit the same cost model?  Per-value tolerances for ``calibrate replay --check``.

A fit is deterministic on one machine, but another CPU (other BLAS kernels, other SIMD
math) moves the whole-iteration fit's optimum by up to ~2e-5 relative, and rounding
then flips a last digit whenever a value sits near a rounding boundary.  So a committed
cost model and its refit are compared value by value (:func:`compare_costmodels`):

- every float of the fitted parameters (``[gpu.*]``: peaks, efficiency and surface
  knots, floors, overheads) must agree within :data:`COEFFICIENT_RTOL`, relative
  difference ``|a - b| / max(|a|, |b|)``: one unit of the whole-iteration fit's 4th
  significant digit (<= 1e-3 relative) plus measured noise (<= 2e-5), with a 2x margin;
- validation errors (``mape``, ``p90_ape``, in percent) must agree within
  :data:`METRIC_ATOL` percentage points: a coefficient change of ``COEFFICIENT_RTOL``
  moves each prediction by at most that fraction, hence each percentage error by at most
  ``100 * COEFFICIENT_RTOL * (1 + error)``, ~0.3 points for the errors seen here;
- everything else (names, record hashes, counts, fit options, keys, list lengths) must be
  equal.

Measured differences are far smaller: committed vs refit on AMD EPYC with
``OPENBLAS_CORETYPE`` unset (Haswell kernels), Prescott or SandyBridge, see
``calibration/README.md``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Relative tolerance of every fitted parameter (floats under ``[gpu]``).
COEFFICIENT_RTOL = 2e-3
#: Absolute tolerance, in percentage points, of validation errors (``mape``, ``p90_ape``).
METRIC_ATOL = 0.5
#: Keys of validation errors (percent) compared with :data:`METRIC_ATOL`.
METRIC_KEYS = ("mape", "p90_ape")
#: Differences listed in full before the report summarises the rest.
MAX_LISTED = 20
#: Differences listed when every one is within tolerance.
MAX_LISTED_OK = 5


@dataclass(frozen=True)
class Difference:
    """One value that differs between the committed model and the refit.

    Attributes:
        key: dotted path in the TOML, list items as ``[i]`` (``gpu.cpu.per_seq_s``).
        committed: the committed value (``None`` when the key is missing there).
        refit: the refit's value (``None`` when missing there).
        rel_diff: ``|a - b| / max(|a|, |b|)`` for two numbers, else ``None``.
        tolerance: what it is held to (``"relative 0.002"``, ``"absolute 0.5"``, ``"exact"``).
        within: whether the difference is within that tolerance.
    """

    key: str
    committed: Any
    refit: Any
    rel_diff: float | None
    tolerance: str
    within: bool

    def describe(self) -> str:
        """One line: key, committed vs refit, relative difference, tolerance, verdict."""
        rel = "" if self.rel_diff is None else f", relative difference {self.rel_diff:.2e}"
        verdict = "within" if self.within else "OUTSIDE"
        return (
            f"{self.key}: committed {_show(self.committed)}, refit {_show(self.refit)}{rel} "
            f"({verdict} tolerance: {self.tolerance})"
        )


@dataclass(frozen=True)
class CheckReport:
    """Result of :func:`compare_costmodels`.

    Attributes:
        identical: the two texts are byte-identical.
        differences: every value that differs (within tolerance or not), in key order.
    """

    identical: bool
    differences: list[Difference]

    @property
    def ok(self) -> bool:
        """Every difference is within its tolerance (the models are the same)."""
        return all(d.within for d in self.differences)

    @property
    def failures(self) -> list[Difference]:
        return [d for d in self.differences if not d.within]

    def summary(self) -> str:
        """One line: identical, same within tolerance (largest difference), or how many
        values are outside their tolerance."""
        if self.identical:
            return "identical bytes"
        if self.ok:
            rel = [d for d in self.differences if d.rel_diff is not None]
            if not rel:
                return "same values, different formatting"
            worst = max(rel, key=lambda d: d.rel_diff or 0.0)
            return (
                f"same within tolerance ({len(self.differences)} values differ; largest "
                f"relative difference {worst.rel_diff:.2e} at {worst.key}; fitted parameters "
                f"held to {COEFFICIENT_RTOL:g} relative, validation errors to "
                f"{METRIC_ATOL:g} percentage points)"
            )
        return f"{len(self.failures)} of {len(self.differences)} differing values outside tolerance"

    def lines(self, limit: int = MAX_LISTED) -> list[str]:
        """The differences, failures first, then the largest relative differences, at
        most ``limit`` of them (and a line counting the rest)."""

        def size(d: Difference) -> float:
            return -(d.rel_diff if d.rel_diff is not None else math.inf)

        within = sorted((d for d in self.differences if d.within), key=size)
        ordered = self.failures + within
        out = [d.describe() for d in ordered[:limit]]
        if len(ordered) > limit:
            rest = ordered[limit:]
            bad = sum(not d.within for d in rest)
            out.append(f"... and {len(rest)} more ({bad} of them outside tolerance)")
        return out


def tolerance_of(path: tuple[str, ...]) -> tuple[str, float] | None:
    """``("relative", rtol)`` or ``("absolute", atol)`` for a numeric value at ``path``
    (list indices omitted), ``None`` when it must be equal."""
    if path and path[0] == "gpu":
        return ("relative", COEFFICIENT_RTOL)
    if path and path[0] == "validation" and path[-1] in METRIC_KEYS:
        return ("absolute", METRIC_ATOL)
    return None


def compare_costmodels(committed: str, refit: str) -> CheckReport:
    """Compare two cost model TOML texts value by value (see module docstring).

    Raises :class:`tomllib.TOMLDecodeError` if either is not TOML."""
    if committed == refit:
        return CheckReport(True, [])
    a, b = tomllib.loads(committed), tomllib.loads(refit)
    return CheckReport(False, list(_diff(a, b, (), "")))


def _diff(a: Any, b: Any, path: tuple[str, ...], key: str) -> Iterator[Difference]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            sub = f"{key}.{k}" if key else k
            if k not in a or k not in b:
                yield Difference(sub, a.get(k), b.get(k), None, "exact", False)
            else:
                yield from _diff(a[k], b[k], (*path, k), sub)
        return
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield Difference(f"{key} (length)", len(a), len(b), None, "exact (list lengths)", False)
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _diff(x, y, path, f"{key}[{i}]")
        return
    if _number(a) and _number(b):
        fa, fb = float(a), float(b)
        same = fa == fb or (math.isnan(fa) and math.isnan(fb))
        if same and type(a) is type(b):
            return
        tol = tolerance_of(path)
        rel = _rel_diff(fa, fb)
        if tol is None or type(a) is not type(b):
            yield Difference(key, a, b, rel, "exact", False)
        elif tol[0] == "relative":
            yield Difference(key, a, b, rel, f"relative {tol[1]:g}", rel <= tol[1])
        else:
            ok = abs(fa - fb) <= tol[1]
            yield Difference(key, a, b, rel, f"absolute {tol[1]:g} percentage points", ok)
        return
    if a != b or type(a) is not type(b):
        yield Difference(key, a, b, None, "exact", False)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _rel_diff(a: float, b: float) -> float:
    if a == b:
        return 0.0
    if math.isnan(a) or math.isnan(b):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b))


def _show(v: Any) -> str:
    if v is None:
        return "(missing)"
    if isinstance(v, float):
        return f"{v:.7g}"
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."
