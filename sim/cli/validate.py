"""``agentsim validate RUNS.csv``: simulate measured vLLM serving runs and compare.

Every run of the CSV (format: :mod:`sim.serving.runs`) is simulated with its workload
(:mod:`sim.serving.workload`) and server settings; the command prints measured vs
simulated TTFT, E2E and ITL per run and stage, the MAPE per metric, and the stages the
simulator overloads.  ``--json`` prints ``{"runs": [...], "mape": {"ttft_mean",
"ttft_p90", "e2e_mean", "e2e_p90", "itl_mean"} (percent), ...}`` instead.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "validate",
        help="simulate measured serving runs (RUNS.csv) and print measured vs simulated",
    )
    p.add_argument("runs", metavar="RUNS.csv", help="measured runs, one row per run and stage")
    p.add_argument(
        "--costmodel",
        help="cost model TOML (default: the calibrated default of each run's GPU)",
    )
    p.add_argument("--json", action="store_true", help="print JSON (keys runs, mape, ...)")
    p.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    p.add_argument(
        "--workers", type=int, default=2, help="simulation processes (default 2; 1: in process)"
    )
    p.add_argument("--run", action="append", help="only this run_id (repeatable)")
    p.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    from sim.common.errors import InputError
    from sim.serving.runs import read_runs
    from sim.serving.validate import format_table, validate_runs

    runs = read_runs(args.runs)
    if args.run:
        keep = set(args.run)
        unknown = keep - {r.run_id for r in runs}
        if unknown:
            raise InputError(
                args.runs, None, "run_id", f"no run {sorted(unknown)[0]!r} in the file"
            )
        runs = [r for r in runs if r.run_id in keep]
    v = validate_runs(runs, costmodel=args.costmodel, seed=args.seed, workers=max(1, args.workers))
    if args.json:
        print(json.dumps(v.to_dict(), indent=2))
    else:
        print(format_table(v))
        print(f"simulated {len(runs)} runs in {v.wall_s:.1f} s")
    return 0
