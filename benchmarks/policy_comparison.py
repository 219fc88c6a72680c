"""Compare every routing policy on the Mooncake conversation trace and the LMCache agent sessions.

Prints one Markdown table per trace: TTFT p50/p99, session time p50, prefix hit
rate, cost, and KV migrations where a router moves KV.  Not a test: a full run
takes a few minutes on two cores.

Usage::

    .venv/bin/python benchmarks/policy_comparison.py [--mooncake PATH] [--lmcache DIR]
        [--cluster TOML] [--mooncake-load-scale X] [--routers a,b,...] [--seed N]

Workloads: the Mooncake conversation trace (sessions reconstructed from prefix
chains by ``sim.workload.traces.load_trace(path, "mooncake")``) and all converted LMCache
sessions (``traces/lmcache/*.jsonl.gz``, merged into one workload, session ids
prefixed by their file).  Cluster: ``examples/clusters/dgx-2node-8b.toml`` (16
single-GPU Llama-3-8B replicas on two DGX A100 nodes) unless ``--cluster`` is given.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from policies.registry import list_policies
from sim.cluster.config import ClusterConfig, load_cluster_config
from sim.simulation import simulate
from sim.workload.calls import Workload, topo_order
from sim.workload.traces import load_trace

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MOONCAKE = ROOT.parent / "shared" / "data" / "mooncake" / "conversation_trace.jsonl"
DEFAULT_LMCACHE = ROOT / "traces" / "lmcache"
DEFAULT_CLUSTER = ROOT / "examples" / "clusters" / "dgx-2node-8b.toml"


def lmcache_workload(directory: Path) -> Workload:
    """All LMCache session files of ``directory`` as one workload (ids prefixed by file)."""
    calls = []
    for path in sorted(directory.glob("*.jsonl.gz")):
        prefix = path.name.split(".")[0]
        for c in load_trace(path).calls:
            calls.append(
                replace(
                    c,
                    call_id=f"{prefix}/{c.call_id}",
                    session_id=f"{prefix}/{c.session_id}",
                    parents=tuple(f"{prefix}/{p}" for p in c.parents),
                )
            )
    return Workload(topo_order(calls), name="lmcache", source=str(directory))


def compare(
    workload: Workload, cfg: ClusterConfig, routers: list[str], load_scale: float, seed: int
) -> list[dict[str, object]]:
    rows = []
    for spec in routers:
        t0 = time.perf_counter()
        run_cfg = replace(cfg, policies=replace(cfg.policies, router=spec))
        res = simulate(workload, run_cfg, seed=seed, load_scale=load_scale)
        s = res.summary
        rows.append(
            {
                "router": spec,
                "ttft_p50": s["ttft_s"]["p50"],
                "ttft_p99": s["ttft_s"]["p99"],
                "session_p50": s["session_s"]["p50"],
                "hit": s["prefix_hit_rate"],
                "cost": s["cost_usd"],
                "failed": s["failed_requests"],
                "wall": time.perf_counter() - t0,
            }
        )
        print(f"  {spec}: {rows[-1]['wall']:.1f} s", file=sys.stderr)
    return rows


def table(title: str, rows: list[dict[str, object]]) -> str:
    out = [
        f"### {title}",
        "",
        "| router | TTFT p50 (s) | TTFT p99 (s) | session p50 (s) | prefix hit rate | cost ($) | failed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['router']} | {r['ttft_p50']:.3f} | {r['ttft_p99']:.3f} | {r['session_p50']:.1f} "
            f"| {r['hit']:.3f} | {r['cost']:.2f} | {r['failed']} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mooncake", type=Path, default=DEFAULT_MOONCAKE)
    p.add_argument("--lmcache", type=Path, default=DEFAULT_LMCACHE)
    p.add_argument("--cluster", type=Path, default=DEFAULT_CLUSTER)
    p.add_argument("--mooncake-load-scale", type=float, default=1.0)
    p.add_argument("--lmcache-load-scale", type=float, default=1.0)
    p.add_argument(
        "--routers",
        default="",
        help="comma-separated router specs (default: every registered routing policy, "
        "least_loaded also with metric=tokens)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.routers:
        routers = [r for r in args.routers.split(";" if ";" in args.routers else ",") if r]
    else:
        routers = [i.name for i in list_policies("routing")]
        routers.insert(routers.index("least_loaded") + 1, "least_loaded:metric=tokens")
    cfg = load_cluster_config(args.cluster)
    print(f"cluster: {cfg.name} ({args.cluster})\n")
    for title, loader, scale in (
        (
            "Mooncake conversation trace",
            lambda: load_trace(args.mooncake, "mooncake"),
            args.mooncake_load_scale,
        ),
        (
            "LMCache agent sessions (all files)",
            lambda: lmcache_workload(args.lmcache),
            args.lmcache_load_scale,
        ),
    ):
        w = loader()
        print(f"{title}: {len(w.calls)} calls, {w.num_sessions} sessions", file=sys.stderr)
        rows = compare(w, cfg, routers, scale, args.seed)
        print(
            table(f"{title} ({len(w.calls)} calls, {w.num_sessions} sessions, load x{scale})", rows)
        )
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
