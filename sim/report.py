"""Write a run's results to a directory (the output contract) and render report.md.

Files: ``summary.json`` (the contract keys of :data:`sim.metrics.SUMMARY_KEYS`),
``calls.parquet`` (one row per call), ``sessions.parquet``, ``timeline.parquet``
(per-replica queue and KV samples at iteration boundaries), ``replicas.csv``,
``config.json`` (cluster, trace, cost model, memory plan) and ``report.md``.  All
writes are atomic.  ``summary.json`` is deterministic for a given seed; wall-clock
numbers go to ``perf.json`` only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from sim.io import atomic_write, atomic_write_json, atomic_write_text
from sim.simulation import SimResult


def _parquet(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_results(result: SimResult, out: str | Path) -> Path:
    """Write every output file of a run into ``out`` (created if needed)."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / "summary.json", result.summary)
    _parquet(result.calls, d / "calls.parquet")
    _parquet(result.sessions, d / "sessions.parquet")
    _parquet(result.timeline, d / "timeline.parquet")
    atomic_write_text(d / "replicas.csv", result.replicas.to_csv(index=False))
    atomic_write_json(d / "config.json", result.config)
    atomic_write_json(d / "perf.json", result.perf)
    atomic_write_text(
        d / "report.md", render_markdown(result.summary, result.config, result.replicas)
    )
    return d


def _fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if unit == "ms":
            return f"{x * 1000:.1f} ms"
        return f"{x:,.4g}{(' ' + unit) if unit else ''}"
    return f"{x:,}{(' ' + unit) if unit else ''}"


def render_markdown(summary: dict[str, Any], config: dict[str, Any], replicas: pd.DataFrame) -> str:
    """A human-readable report of one run."""
    cl = config["cluster"]
    cm = config.get("costmodel", {})
    node_desc = ", ".join(f"{n['count']} x {n['builder']}" for n in cl["nodes"])
    lines = [
        f"# agentsim run: {Path(str(config['trace'])).name} / {summary['policy']} / seed {summary['seed']}",
        "",
        "## Configuration",
        "",
        f"- Trace: `{config['trace']}` (load scale {config.get('load_scale', 1.0)})",
        f"- Cluster: {cl['name']} — {sum(n['count'] * n['gpus'] for n in cl['nodes'])} x {cl['gpu']} "
        f"({node_desc})",
    ]
    for dep in cl["deployments"]:
        lines.append(
            f"- Deployment: {dep['model']} TP={dep['tp']} PP={dep['pp']} x {dep['replicas']} replicas "
            f"(max_num_seqs {dep['max_num_seqs']}, max_num_batched_tokens {dep['max_num_batched_tokens']}, "
            f"block {dep['block_size']} tokens)"
        )
    pol = cl["policies"]
    lines.append("- Policies: " + ", ".join(f"{k}={v}" for k, v in pol.items()))
    val = cm.get("validation")
    val_s = f"; validation {json.dumps(val)}" if val else "; not validated against measurements"
    lines.append(f"- Cost model: {cm.get('name', '?')} ({cm.get('kind', '')}){val_s}")
    lines += [
        "",
        "## Requests",
        "",
        f"- Calls: {summary['requests']} LLM calls in {summary['sessions']} sessions; "
        f"{summary['completed_requests']} completed, {summary['failed_requests']} failed",
        f"- Preemptions: {summary['preemptions']}; cold starts: {summary['cold_starts']}",
        f"- Prefix-cache hit rate: {summary['prefix_hit_rate']:.1%}",
        f"- Throughput: {_fmt(summary['throughput_tokens_per_s'], 'output tokens/s')}; makespan {_fmt(summary['makespan_s'], 's')}",
        "",
        "## Latency",
        "",
        "| metric | mean | p50 | p90 | p99 |",
        "|---|---|---|---|---|",
    ]
    for key, label, unit in (
        ("ttft_s", "TTFT", "ms"),
        ("tpot_s", "TPOT", "ms"),
        ("e2e_s", "end-to-end per call", "s"),
        ("session_s", "session completion", "s"),
    ):
        st = summary[key]
        lines.append(
            f"| {label} | "
            + " | ".join(_fmt(st[q], unit) for q in ("mean", "p50", "p90", "p99"))
            + " |"
        )
    lines += [
        "",
        "## Cost",
        "",
        f"- GPU-hours: {summary['gpu_hours']:.4g}; cost: ${summary['cost_usd']:,.2f}",
        "",
        "## Replicas",
        "",
        "| replica | model | GPUs | busy s | iterations | preemptions | KV blocks | evictions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in replicas.itertuples():
        lines.append(
            f"| {r.replica} | {r.model} | {r.gpus} | {r.busy_s:,.1f} | {r.iterations:,} | {r.preemptions} | "
            f"{r.kv_capacity_blocks:,} | {r.evictions:,} |"
        )
    return "\n".join(lines) + "\n"
