"""``agentsim run``: simulate one trace on one cluster under one set of policies."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sim.cli.common import (
    add_run_arguments,
    cluster_from_args,
    faults_from_args,
    prepare_out,
    replay_from_args,
    run_config_hash,
    trace_path,
)
from sim.cli.report import add_slo_arguments, slo_from_args
from sim.common.paths import RESULTS_DIR
from sim.metrics.recorder import overload
from sim.report.results import fmt_duration, write_results
from sim.simulation import simulate


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="simulate a trace on a cluster and write a report",
        description="Simulate a trace on a cluster under the chosen policies; writes summary.json, "
        "calls.parquet, report.md and report.html to --out "
        "(default results/<trace>-<policy>-seed<N>-<hash>/, where <hash> names the whole "
        "configuration: other flags give another directory).  The directory is written "
        "whole at the end (Ctrl-C leaves nothing); an --out holding results needs --force.",
    )
    add_run_arguments(p)
    add_slo_arguments(p)
    p.add_argument("--out", help="output directory")
    p.set_defaults(func=run)


def default_run_name(trace: str, policy: str, seed: int, config_hash: str = "") -> str:
    """``<trace>-<policy>-seed<N>-<hash>``: ``config_hash`` (:func:`run_config_hash`)
    tells apart runs that differ in any other flag."""
    stem = Path(trace).name.split(".")[0]
    pol = policy.split(":")[0]
    name = f"{stem}-{pol}-seed{seed}"
    return f"{name}-{config_hash}" if config_hash else name


def kv_line(model: str, plan: dict[str, Any]) -> str:
    """One line naming a deployment's KV blocks and the per-GPU memory plan behind them."""
    g = 1024**3
    line = (
        f"KV cache {model}: {plan['kv_blocks']:,} blocks per replica (per GPU: "
        f"{plan['usable'] / g:.2f} GiB usable of {plan['total'] / g:.2f}, weights "
        f"{plan['weights'] / g:.2f}, profiling peak {plan['activations'] / g:.2f}, non-torch "
        f"{plan['non_torch'] / g:.2f}, KV {plan['kv'] / g:.2f} GiB)"
    )
    if plan["kv_blocks"] != plan["kv_blocks_from_memory"]:
        line += f"; set by --gpu-kv-blocks (memory gives {plan['kv_blocks_from_memory']:,})"
    return line


def run(args: argparse.Namespace) -> int:
    cfg = cluster_from_args(args)
    slo = slo_from_args(args)
    trace = trace_path(args)
    out, replace = prepare_out(
        args,
        lambda: (
            RESULTS_DIR
            / default_run_name(trace, cfg.policies.router, args.seed, run_config_hash(args, cfg))
        ),
        (trace, args.cluster, args.faults, args.costmodel),
    )
    workload = replay_from_args(args)
    result = simulate(
        workload,
        cfg,
        seed=args.seed,
        load_scale=args.load_scale,
        progress=not args.quiet,
        faults=faults_from_args(args),
    )
    write_results(result, out, slo=slo, html=not args.no_html, replace=replace)
    if not args.quiet:
        s = result.summary
        p = result.perf
        print(
            f"{s['completed_requests']}/{s['requests']} calls, {s['sessions']} sessions | "
            f"TTFT p50 {_ms(s['ttft_s']['p50'])} p99 {_ms(s['ttft_s']['p99'])} | "
            f"session p50 {_s(s['session_s']['p50'])} | hit rate {s['prefix_hit_rate']:.1%} | "
            f"${s['cost_usd']:,.2f}",
            file=sys.stderr,
        )
        warning = overload_line(overload(result.calls))
        if warning:
            print(warning, file=sys.stderr)
        for model, plan in result.config["memory"].items():
            print(kv_line(model, plan), file=sys.stderr)
        print(
            f"simulated {s['makespan_s']:,.0f} s in {p['wall_s']:.2f} s wall "
            f"({p['events']:,} events, {p['events_per_s']:,.0f} events/s; "
            + ("compiled engine)" if p["native"] == "on" else f"engine as Python: {p['native']})"),
            file=sys.stderr,
        )
        if not args.no_html:
            print(f"report: {out / 'report.md'}", file=sys.stderr)
    print(out / ("report.md" if args.no_html else "report.html"))
    return 0


def _ms(x: float | None) -> str:
    return fmt_duration(x)


def _s(x: float | None) -> str:
    return fmt_duration(x)


def overload_line(ov: dict[str, Any]) -> str:
    """The CLI's warning line for an overloaded run (:func:`sim.metrics.recorder.overload`), or ""."""
    if not ov["overloaded"]:
        return ""

    def rate(x: float | None) -> str:
        return "n/a" if x is None else f"{x:,.3g} calls/s"

    return (
        f"agentsim: warning: overloaded: calls waited {fmt_duration(ov['mean_queue_s'])} on "
        f"average for a replica (then served in {fmt_duration(ov['mean_service_s'])}); "
        f"offered {rate(ov['offered_load_rps'])}, served {rate(ov['served_load_rps'])}: "
        "latencies are mostly queueing (add replicas or lower --load-scale)"
    )
