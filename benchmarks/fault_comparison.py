"""Persistence strategies under the same fault schedule, on Mooncake and LMCache traces.

Prints one Markdown table per trace: for the run without faults and for each
persistence strategy (``none``, ``host_offload``, ``remote_store``, ``migrate``) under
one fault schedule: failed-over calls, failed calls, recomputed tokens, tokens reloaded
from surviving copies, TTFT p50/p99, session time p50, cost and the extra cost
against the run without faults.  Not a test: takes a few minutes on two cores.

Usage::

    .venv/bin/python benchmarks/fault_comparison.py [--mooncake PATH] [--lmcache DIR]
        [--cluster TOML] [--router SPEC] [--seed N]

The schedule is placed on each trace's recorded call times (quantiles q of every
call's ``issue_time_s``, so that faults hit while calls are in flight): spot
preemption of node 1 at q=0.3 (30 s notice, capacity back 600 s later), two pod
crashes (replicas 2 and 3) at q=0.45, and a failure of node 0 at q=0.6 repaired after
900 s; every restart pays a cold start.  Cluster: ``examples/clusters/dgx-2node-8b.toml``
(16 single-GPU Llama-3-8B replicas on two DGX A100 nodes) with session-affinity routing
(sessions stick to a replica, so their cached context is what a fault destroys).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sim.cluster.config import ClusterConfig, load_cluster_config
from sim.cluster.faults import Fault, FaultSchedule
from sim.simulation import simulate
from sim.workload.calls import Workload
from sim.workload.traces import load_trace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from policy_comparison import (  # noqa: E402
    DEFAULT_CLUSTER,
    DEFAULT_LMCACHE,
    DEFAULT_MOONCAKE,
    lmcache_workload,
)

STRATEGIES = ("none", "host_offload", "remote_store", "migrate")


def schedule_for(w: Workload) -> FaultSchedule:
    """The comparison's fault schedule scaled to the trace's span (see module docstring)."""
    t = np.quantile([c.issue_time_s for c in w.calls], [0.3, 0.45, 0.6])
    faults = (
        Fault(float(t[0]), "spot", node=1, notice_s=30.0, repair_s=600.0),
        Fault(float(t[1]), "replica_restart", replica=2, repair_s=0.0),
        Fault(float(t[1]), "replica_restart", replica=3, repair_s=0.0),
        Fault(float(t[2]), "node", node=0, repair_s=900.0),
    )
    at = ", ".join(f"{x:,.0f} s" for x in t)
    return FaultSchedule(faults, None, f"<comparison schedule at {at}>")


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1000:,.0f} ms"


def _s(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.1f} s"


def compare(w: Workload, cfg: ClusterConfig, seed: int) -> list[dict[str, Any]]:
    """Rows: the run without faults, then one per persistence strategy under faults."""
    sched = schedule_for(w)
    base = simulate(w, cfg, seed=seed).summary
    rows = [{"run": "no faults", **base}]
    for name in STRATEGIES:
        c = replace(cfg, policies=replace(cfg.policies, persistence=name))
        s = simulate(w, c, seed=seed, faults=sched).summary
        rows.append({"run": name, **s, "extra_cost_usd": s["cost_usd"] - base["cost_usd"]})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| run | failovers | failed calls | recomputed tokens | reloaded tokens | TTFT p50 | "
        "TTFT p99 | session p50 | cost | extra cost |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r.get("faults", {})
        extra = r.get("extra_cost_usd")
        out.append(
            f"| {r['run']} | {r['failovers']:,} | {r['failed_requests']:,} | "
            f"{r['recomputed_tokens']:,} | {f.get('restored_tokens', 0):,} | "
            f"{_ms(r['ttft_s']['p50'])} | {_ms(r['ttft_s']['p99'])} | {_s(r['session_s']['p50'])} | "
            f"${r['cost_usd']:,.2f} | {'' if extra is None else f'${extra:+,.2f}'} |"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mooncake", default=str(DEFAULT_MOONCAKE))
    ap.add_argument("--lmcache", default=str(DEFAULT_LMCACHE))
    ap.add_argument("--cluster", default=str(DEFAULT_CLUSTER))
    ap.add_argument("--router", default="session_affinity")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cfg = load_cluster_config(a.cluster)
    cfg = replace(cfg, policies=replace(cfg.policies, router=a.router))
    traces = [
        ("Mooncake conversation trace", lambda: load_trace(a.mooncake, "mooncake")),
        ("LMCache agent sessions", lambda: lmcache_workload(Path(a.lmcache))),
    ]
    for title, load in traces:
        w = load()
        print(f"\n### {title} ({len(w.calls):,} calls, {w.num_sessions:,} sessions)\n")
        print(f"Schedule: {schedule_for(w).source}; cluster {cfg.name}; router {a.router}\n")
        print(table(compare(w, cfg, a.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
