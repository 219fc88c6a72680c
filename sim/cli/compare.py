"""``agentsim compare``: run several policies on the same workload and compare them."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from sim.cli.common import (
    add_run_arguments,
    cluster_from_args,
    faults_from_args,
    prepare_out,
    run_config_hash,
    trace_path,
    workload_from_args,
)
from sim.cli.report import add_slo_arguments, slo_from_args
from sim.common.paths import RESULTS_DIR


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="run several policies on the same trace and compare them",
        description="Run each policy of --policies on the same workload and cluster with seeds "
        "--seed .. --seed+N-1; writes comparison.csv (one row per policy: the summary.json metrics "
        "flattened, mean over seeds, 95% confidence half-widths and paired t-tests against the "
        "first policy), comparison.md, comparison.html with overlaid latency CDFs, and every run's "
        "files under runs/.  Takes every flag of 'agentsim run'; policy flags set the base that "
        "each --policies entry overrides.",
    )
    p.add_argument(
        "--policies",
        required=True,
        help="comma-separated policies: router specs (prefix_affinity:cache_threshold=0.5) or "
        "kind=spec (batching=fcfs); join kinds with + (least_loaded+batching=fcfs)",
    )
    add_run_arguments(p)
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="runs per policy (default 1), with seeds --seed .. --seed+N-1: each seed seeds "
        "the policies' randomness and, with N > 1, the arrival jitter (see --jitter, --retime)",
    )
    p.add_argument(
        "--rank-by",
        default="session_s.mean",
        help="flattened summary metric that ranks the policies (default session_s.mean)",
    )
    p.add_argument(
        "--retime",
        action="store_true",
        help="per seed, replace the trace's session start times by a Poisson process at the "
        "trace's mean session rate (calls inside a session keep their timing; all policies "
        "see the same workload per seed): seeds then vary the arrival process itself, and "
        "bursts of the recorded arrivals are lost. Without it the recorded arrivals are "
        "used, jittered per seed (see --jitter)",
    )
    p.add_argument(
        "--jitter",
        choices=("auto", "on", "off"),
        default="auto",
        help="arrival jitter: per seed, shift each session by a random offset within +-half "
        "the mean gap between session starts, keeping the trace's arrival pattern. auto "
        "(default): on when --seeds > 1 (else seeds vary only the policies' own randomness, "
        "and deterministic policies give the same numbers for every seed); off with --retime",
    )
    add_slo_arguments(p)
    p.add_argument(
        "--out",
        help="output directory (default results/compare-<trace>-<hash>/, <hash> naming the "
        "whole configuration); written whole at the end, an --out holding results needs --force",
    )
    p.add_argument(
        "--run-reports",
        action="store_true",
        help="also render report.html of every run (slower; 'agentsim report' can do it later)",
    )
    p.set_defaults(func=run)


def _dirname(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_") or "policy"


def run(args: argparse.Namespace) -> int:
    from sim.api import Result, compare
    from sim.common.io import atomic_dir
    from sim.report.results import write_results

    cfg = cluster_from_args(args)
    slo = slo_from_args(args)
    trace = trace_path(args)
    out, replace = prepare_out(
        args,
        lambda: (
            RESULTS_DIR / f"compare-{Path(trace).name.split('.')[0]}-{run_config_hash(args, cfg)}"
        ),
        (trace, args.cluster, args.faults, args.costmodel),
    )
    # Every file (the runs, then the tables) goes into a temporary sibling that is
    # renamed onto --out at the end: Ctrl-C or an error leaves --out as it was.
    with atomic_dir(out, replace=replace) as tmp:

        def save(label: str, seed: int, res: Result) -> None:
            write_results(
                res.raw,
                tmp / "runs" / f"{_dirname(label)}-seed{seed}",
                slo,
                args.run_reports and not args.no_html,
            )

        cmp = compare(
            workload_from_args(args),
            cfg,
            args.policies,
            seeds=args.seeds,
            seed=args.seed,
            load_scale=args.load_scale,
            slo=slo,
            rank_by=args.rank_by,
            retime=args.retime,
            jitter={"auto": None, "on": True, "off": False}[args.jitter],
            faults=faults_from_args(args),
            progress=not args.quiet,
            on_run=save,
        )
        cmp.save(tmp)
    if not args.quiet:
        print(cmp.markdown())
        print(f"comparison: {out / 'comparison.csv'}", file=sys.stderr)
    print(out / "comparison.html")
    return 0
