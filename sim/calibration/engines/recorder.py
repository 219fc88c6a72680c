"""Record a grid of iteration shapes with an engine, resumably, into a records file.

Every measured shape is appended (header first when needed) as soon as it is measured,
with all its repeat times, through :func:`sim.calibration.records.append_samples`.  A
rerun with the same output file skips the shapes already recorded under an equivalent
header (same engine, device, GPU, software versions, model, dtype, TP, layers; the
timestamp, commit and notes may differ) and continues the last section when its header
matches.  A file whose last line was cut by a crash loses only that partial line; a
corrupt earlier line is reported (``path:line``) and nothing is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sim.calibration.engines import ShapeUnsupported
from sim.calibration.grid import Grid, IterationShape
from sim.calibration.records import RecordHeader, Sample, append_samples, read_records

#: Header keys that do not change what was measured (ignored when resuming).
_PROVENANCE_ONLY = ("created_utc", "agentsim_commit", "source", "notes")


class IterationEngine(Protocol):
    """What the recorder needs from an engine."""

    def header(self, tp: int) -> RecordHeader: ...

    def measure(self, shape: IterationShape, warmup: int, repeats: int) -> list[float]: ...


@dataclass
class RecordSummary:
    """What one recording run did.

    Attributes:
        path: the records file.
        measured: shapes measured and appended by this run.
        skipped: shapes already in the file (resumed).
        unsupported: ``(shape, reason)`` of shapes the engine could not run.
        remaining: shapes left unmeasured because the time budget ran out.
        wall_s: seconds this run took.
    """

    path: str
    measured: int = 0
    skipped: int = 0
    unsupported: list[tuple[IterationShape, str]] = field(default_factory=list)
    remaining: int = 0
    wall_s: float = 0.0


def measurement_identity(h: RecordHeader) -> dict[str, Any]:
    """A header's fields that determine what its samples mean (for resuming)."""
    d = h.to_json()
    for k in _PROVENANCE_ONLY:
        d.pop(k, None)
    return d


def _existing(
    path: Path, header: RecordHeader
) -> tuple[set[tuple[int, IterationShape]], RecordHeader | None]:
    """Shapes already recorded under an equivalent header, and the header to continue
    (the file's last section's, when equivalent)."""
    if not path.exists() or path.stat().st_size == 0:
        return set(), None
    sections = read_records(path, allow_truncated_tail=True)
    ident = measurement_identity(header)
    done: set[tuple[int, IterationShape]] = set()
    for sec in sections:
        if measurement_identity(sec.header) != ident:
            continue
        for s in sec.samples:
            if s.op == "iteration":
                done.add((s.tp, IterationShape.from_dict(s.shape)))
    last = sections[-1].header
    return done, (last if measurement_identity(last) == ident else None)


def record_grid(
    engine_for_tp: Callable[[int], IterationEngine],
    grid: Grid,
    out: str | Path,
    *,
    time_budget_s: float | None = None,
    log: Callable[[str], None] = print,
) -> RecordSummary:
    """Measure every shape of ``grid`` (at every TP of the grid) not yet in ``out``.

    ``engine_for_tp(tp)`` returns the engine measuring at that TP.  Stops starting new
    shapes once ``time_budget_s`` (default: the grid's) has elapsed; a rerun continues.
    """
    path = Path(out)
    budget = time_budget_s if time_budget_s is not None else grid.time_budget_s
    t0 = time.perf_counter()
    summary = RecordSummary(path=str(path))
    for tp in grid.tp:
        engine = engine_for_tp(tp)
        header = engine.header(tp)
        done, cont = _existing(path, header)
        if cont is not None:
            header = cont
        todo = [s for s in grid.shapes if (tp, s) not in done]
        summary.skipped += len(grid.shapes) - len(todo)
        if len(todo) < len(grid.shapes):
            log(
                f"resuming {path}: {len(grid.shapes) - len(todo)} of {len(grid.shapes)} shapes at tp={tp} already recorded"
            )
        for i, shape in enumerate(todo):
            if budget is not None and time.perf_counter() - t0 > budget:
                summary.remaining += len(todo) - i
                log(
                    f"time budget of {budget:.0f} s spent: {len(todo) - i} shapes left at tp={tp} (rerun to resume)"
                )
                break
            ts = time.perf_counter()
            try:
                xs = engine.measure(shape, grid.warmup, grid.repeats)
            except ShapeUnsupported as e:
                summary.unsupported.append((shape, str(e)))
                log(f"  skip {shape.describe()}: {e}")
                continue
            append_samples(
                path, header, [Sample(op="iteration", tp=tp, shape=shape.as_dict(), samples_s=xs)]
            )
            summary.measured += 1
            med = sorted(xs)[len(xs) // 2]
            log(
                f"  [{i + 1}/{len(todo)}] tp={tp} {shape.describe()}: median {med * 1e3:.3f} ms "
                f"({len(xs)} repeats, {time.perf_counter() - ts:.1f} s)"
            )
    summary.wall_s = time.perf_counter() - t0
    return summary
