"""Measured vs simulated serving metrics: per run and stage, and the MAPE per metric.

:func:`validate_runs` simulates every run (in a process pool when ``workers`` > 1; each
run is independent and deterministic, so the result does not depend on the pool) and
returns a :class:`Validation`.  MAPE (mean absolute percentage error, percent) is taken
over the *stage* rows (``stage`` = 0, 1, ...); the ``all`` rows repeat single-stage runs
and are reported separately (``mape_all``).  A stage is flagged overloaded when its
simulated mean TTFT exceeds :data:`sim.serving.replay.OVERLOAD_TTFT_S`, and
``served_but_overloaded`` counts the stages the real server served (measured mean TTFT
under that threshold) that the simulator overloads.

Units: seconds inside, milliseconds in the tables and JSON.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

from sim.costmodel.base import CostModel
from sim.costmodel.loader import resolve_cost_model
from sim.serving.replay import OVERLOAD_TTFT_S, RunResult, simulate_run
from sim.serving.runs import RunSpec

#: The metrics whose MAPE is reported (the ``--json`` contract).
MAPE_METRICS = ("ttft_mean", "ttft_p90", "e2e_mean", "e2e_p90", "itl_mean")


@dataclass(frozen=True, slots=True)
class Validation:
    """Every run's simulation against its measurements."""

    results: tuple[RunResult, ...]
    costmodel: dict[str, Any]
    wall_s: float

    def rows(self, include_all: bool = False) -> list[tuple[RunSpec, Any, Any]]:
        """(run, measured, simulated) per stage row (and ``all`` rows if asked)."""
        out = []
        for r in self.results:
            for m in r.run.measured:
                if m.stage is None and not include_all:
                    continue
                out.append((r.run, m, r.stage(m.stage)))
        return out

    def mape(
        self, include_all: bool = False, where: Callable[[RunSpec], bool] | None = None
    ) -> dict[str, float]:
        """MAPE per metric in percent over the stage rows (of runs ``where`` accepts)."""
        rows = [x for x in self.rows(include_all) if where is None or where(x[0])]
        if include_all:
            rows = [x for x in rows if x[1].stage is None]
        out = {}
        for k in MAPE_METRICS:
            errs = [ape(sim.metrics[k], m.metrics[k]) for _, m, sim in rows]
            out[k] = float(sum(errs) / len(errs)) if errs else math.nan
        return out

    def served_but_overloaded(self) -> list[tuple[str, int | None]]:
        """(run_id, stage) of stages measured under the overload threshold but simulated over it."""
        return [
            (run.run_id, m.stage)
            for run, m, sim in self.rows()
            if m.metrics["ttft_mean"] < OVERLOAD_TTFT_S and sim.overloaded
        ]

    def to_dict(self) -> dict[str, Any]:
        runs = []
        for r in self.results:
            stages = []
            for m in r.run.measured:
                sim = r.stage(m.stage)
                stages.append(
                    {
                        "stage": m.label,
                        "rate_rps": None if m.stage is None else r.run.stages[m.stage].rate_rps,
                        "requests": sim.requests,
                        "overloaded": sim.overloaded,
                        "measured_ms": {k: _ms(v) for k, v in m.metrics.items()},
                        "simulated_ms": {k: _ms(v) for k, v in sim.metrics.items()},
                        "error_pct": {
                            k: round(100.0 * (sim.metrics[k] / m.metrics[k] - 1.0), 3)
                            for k in MAPE_METRICS
                        },
                    }
                )
            runs.append(
                {
                    "run_id": r.run.run_id,
                    "model": r.run.model,
                    "gpu": r.run.gpu,
                    "tp": r.run.tp,
                    "workload": r.run.workload,
                    "kv_blocks": r.kv_blocks,
                    "prefix_hit_rate": round(r.prefix_hit_rate, 6),
                    "preemptions": r.preemptions,
                    "stages": stages,
                }
            )
        return {
            "runs": runs,
            "mape": {k: round(v, 3) for k, v in self.mape().items()},
            "mape_all": {k: round(v, 3) for k, v in self.mape(include_all=True).items()},
            "served_but_overloaded": [f"{a}/{b}" for a, b in self.served_but_overloaded()],
            "costmodel": self.costmodel,
        }


def ape(sim: float, meas: float) -> float:
    """Absolute percentage error of ``sim`` against ``meas`` (percent)."""
    return abs(sim / meas - 1.0) * 100.0


def _ms(x: float) -> float:
    return round(x * 1000.0, 3)


@cache
def _cost_model(path: str | None, gpu: str | None) -> CostModel:
    return resolve_cost_model(path, gpu=gpu)


def _one(args: tuple[RunSpec, str | None, CostModel | None, int, float | None]) -> RunResult:
    run, path, cm, seed, max_stage_s = args
    model = cm if cm is not None else _cost_model(path, None if path else run.gpu)
    return simulate_run(run, model, seed=seed, max_stage_s=max_stage_s)


def validate_runs(
    runs: Sequence[RunSpec],
    costmodel: str | None = None,
    cost_model: CostModel | None = None,
    seed: int = 0,
    workers: int = 2,
    max_stage_s: float | None = None,
) -> Validation:
    """Simulate every run with the cost model at ``costmodel`` (a TOML path; None: the
    per-GPU default) or the object ``cost_model``, and collect the results."""
    t0 = time.perf_counter()
    jobs = [(r, costmodel, cost_model, seed, max_stage_s) for r in runs]
    if workers > 1 and len(jobs) > 1:
        # longest runs first so that the pool's two halves finish together
        order = sorted(range(len(jobs)), key=lambda i: -_work(runs[i]))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(_one, [jobs[i] for i in order]))
        results: list[RunResult | None] = [None] * len(jobs)
        for i, res in zip(order, done, strict=True):
            results[i] = res
        out = tuple(r for r in results if r is not None)
    else:
        out = tuple(_one(j) for j in jobs)
    if cost_model is not None:
        desc = cost_model.describe()
    else:
        gpus = sorted({r.gpu for r in runs}) if costmodel is None else [None]
        descs = {g or "": _cost_model(costmodel, g).describe() for g in gpus}
        desc = (
            next(iter(descs.values()))
            if len({d["name"] for d in descs.values()}) == 1
            else {
                "name": ", ".join(f"{g}: {d['name']}" for g, d in descs.items()),
                "kind": "per-GPU defaults",
            }
        )
    return Validation(out, desc, time.perf_counter() - t0)


def _work(run: RunSpec) -> float:
    """A run's simulation work, roughly: requests x output tokens."""
    return sum(s.rate_rps * s.duration_s for s in run.stages) * run.output_tokens


def format_table(v: Validation) -> str:
    """The per-run, per-stage table (ms) and the MAPE lines."""
    head = (
        f"{'run':>4} {'model':<30} {'gpu':<10} {'tp':>2} {'workload':<14} {'stage':>5} {'rps':>5} "
        f"{'TTFT meas':>9} {'sim':>9} {'err%':>7} {'E2E meas':>9} {'sim':>9} {'err%':>7} "
        f"{'ITL meas':>8} {'sim':>7} {'err%':>7}  flags"
    )
    lines = [head, "-" * len(head)]
    for run, m, sim in v.rows(include_all=True):
        rate = "" if m.stage is None else f"{run.stages[m.stage].rate_rps:g}"
        cols = []
        for k in ("ttft_mean", "e2e_mean", "itl_mean"):
            a, b = m.metrics[k] * 1000, sim.metrics[k] * 1000
            cols.append((a, b, 100 * (b / a - 1)))
        flags = "OVERLOADED" if sim.overloaded else ""
        lines.append(
            f"{run.run_id:>4} {run.model.rsplit('/', 1)[-1][:30]:<30} {run.gpu:<10} {run.tp:>2} "
            f"{run.workload[:14]:<14} {m.label:>5} {rate:>5} "
            f"{cols[0][0]:9.1f} {cols[0][1]:9.1f} {cols[0][2]:+7.1f} "
            f"{cols[1][0]:9.0f} {cols[1][1]:9.0f} {cols[1][2]:+7.1f} "
            f"{cols[2][0]:8.2f} {cols[2][1]:7.2f} {cols[2][2]:+7.1f}  {flags}"
        )
    mp = v.mape()
    lines.append("")
    lines.append("MAPE over stage rows (%): " + ", ".join(f"{k} {mp[k]:.1f}" for k in MAPE_METRICS))
    bad = v.served_but_overloaded()
    lines.append(
        f"stages served by the real server but simulated overloaded: {len(bad)}"
        + (f" ({', '.join(f'{a}/{b}' for a, b in bad)})" if bad else "")
    )
    lines.append(f"cost model: {v.costmodel.get('name')} ({v.costmodel.get('kind')})")
    return "\n".join(lines)
