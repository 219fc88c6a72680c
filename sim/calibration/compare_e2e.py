"""End-to-end validation: simulate an HTTP replay and compare latencies with what was measured.

An ``http`` records section (written by ``agentsim calibrate record --engine http``) holds
every call of the replayed trace (DAG, recorded issue times, gaps, tool durations, token
counts) and what the client measured.  :func:`compare` rebuilds that workload, simulates it
on one replica of the same model and hardware (:func:`sim.simulation.simulate`, closed
loop as the replay was) with a given cost model, and compares, per metric, the mean and the
p50/p90/p99 of:

- ``ttft_s``: time to first token (issue to first streamed token);
- ``itl_s``: per-call mean inter-token latency ((e2e - ttft) / (output tokens - 1), the
  simulator's ``tpot_s``);
- ``e2e_s``: issue to last token.

Errors are relative: (simulated - measured) / measured.  When the server was agentsim's
own (:mod:`sim.calibration.server`), the replica copies its limits (``max_batch`` ->
``max_num_seqs``, ``max_num_batched_tokens``), has no prefix cache (calls lose their
``prefix_hashes``) and no KV limit (the server's caches grow in host/GPU memory).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.calibration.engines.devices import register_cpu
from sim.calibration.records import Section, read_records
from sim.common.errors import AgentsimError, InputError
from sim.workload.calls import Call, Workload

METRICS = ("ttft_s", "itl_s", "e2e_s")
STATS = ("mean", "p50", "p90", "p99")


@dataclass
class MetricComparison:
    """One latency metric, measured vs simulated (seconds) and relative errors."""

    metric: str
    measured: dict[str, float]
    simulated: dict[str, float]
    rel_error: dict[str, float]


@dataclass
class E2EComparison:
    """The result of :func:`compare`."""

    records: str
    costmodel: str
    calls: int
    metrics: list[MetricComparison] = field(default_factory=list)
    replica: dict[str, Any] = field(default_factory=dict)
    measured_makespan_s: float = 0.0
    simulated_makespan_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "costmodel": self.costmodel,
            "calls": self.calls,
            "replica": self.replica,
            "measured_makespan_s": self.measured_makespan_s,
            "simulated_makespan_s": self.simulated_makespan_s,
            "metrics": {
                m.metric: {
                    "measured": m.measured,
                    "simulated": m.simulated,
                    "rel_error": m.rel_error,
                }
                for m in self.metrics
            },
        }


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return {s: math.nan for s in STATS}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean": float(a.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def http_section(path: str | Path) -> Section:
    """The last ``http`` section of a records file (with its ``call`` lines)."""
    sections = [s for s in read_records(path) if s.header.engine == "http"]
    if not sections:
        raise InputError(
            str(path), None, "engine", "no http section: record one with --engine http"
        )
    sec = sections[-1]
    if not any(o.get("type") == "call" for o in sec.other):
        raise InputError(str(path), sec.line, None, "the http section has no call lines")
    return sec


def workload_of(sec: Section, keep_prefix_hashes: bool = True) -> Workload:
    """The replayed workload, rebuilt from a section's ``call`` lines."""
    calls: list[Call] = []
    for o in sec.other:
        if o.get("type") != "call":
            continue
        try:
            kind = str(o.get("kind", "llm"))
            calls.append(
                Call(
                    call_id=str(o["call_id"]),
                    session_id=str(o["session_id"]),
                    kind="tool" if kind == "tool" else "llm",
                    parents=tuple(str(p) for p in o.get("parents", [])),
                    issue_time_s=float(o["issue_time_s"]),
                    gap_s=float(o.get("gap_s", 0.0)),
                    input_tokens=int(o.get("input_tokens", 0)),
                    output_tokens=int(o.get("output_tokens", 0)),
                    prefix_hashes=tuple(int(h) for h in o.get("prefix_hashes", []))
                    if keep_prefix_hashes
                    else (),
                    block_size=int(o.get("block_size", 16)),
                    tool_duration_s=float(o.get("tool_duration_s", 0.0)),
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(
                str(sec.path), None, "call", f"call line {o.get('call_id')!r} is malformed: {e}"
            ) from None
    return Workload(
        calls=calls, name=str(sec.header.extra.get("trace", "http-replay")), source=str(sec.path)
    )


def _measured(sec: Section) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {m: [] for m in METRICS}
    for o in sec.other:
        if o.get("type") != "call" or o.get("kind") == "tool" or o.get("error"):
            continue
        ttft, e2e, n = o.get("ttft_s"), o.get("e2e_s"), int(o.get("output_tokens", 0))
        if ttft is None or e2e is None:
            continue
        out["ttft_s"].append(float(ttft))
        out["e2e_s"].append(float(e2e))
        if n > 1:
            out["itl_s"].append((float(e2e) - float(ttft)) / (n - 1))
    return out


# long: one linear recipe (rebuild the measured deployment, simulate, pair latencies per call); the steps share a dozen locals
def compare(
    records: str | Path,
    costmodel: str,
    *,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    seed: int = 0,
) -> E2EComparison:
    """Simulate the last http replay in ``records`` with ``costmodel`` (a fitted TOML
    path, or ``"roofline"``) and compare latency statistics (see module doc)."""
    from sim.cluster.config import ClusterConfig, Deployment, NodeGroup, PolicyConfig, validate
    from sim.costmodel.base import CostModel, RooflineCostModel
    from sim.simulation import simulate

    register_cpu()
    sec = http_section(records)
    h = sec.header
    server = h.extra.get("server") if isinstance(h.extra.get("server"), dict) else None
    limits = server.get("server", {}) if server else {}
    own_server = bool(limits)
    workload = workload_of(
        sec, keep_prefix_hashes=not (own_server and limits.get("prefix_caching") is False)
    )
    seqs = max_num_seqs or int(limits.get("max_batch", 0)) or 256
    tokens = max_num_batched_tokens or int(limits.get("max_num_batched_tokens", 0)) or 8192
    cm: CostModel
    if costmodel == "roofline":
        cm = RooflineCostModel()
    else:
        from sim.costmodel.fitted import load_costmodel

        cm = load_costmodel(costmodel)
    if not h.model_config:
        raise InputError(
            str(records), sec.line, "model_config", "the http header carries no model config"
        )
    cfg_dict = dict(h.model_config)
    if h.layers_measured:
        cfg_dict["num_hidden_layers"] = h.layers_measured
    block = 16
    total_tokens = sum(c.input_tokens + c.output_tokens for c in workload.calls if c.is_llm)
    with tempfile.TemporaryDirectory(prefix="agentsim-e2e-") as tmp:
        model_dir = Path(tmp) / h.model.replace("/", "_")
        model_dir.mkdir()
        cfg_path = model_dir / "config.json"
        cfg_path.write_text(json.dumps(cfg_dict))
        dep = Deployment(
            model=str(cfg_path),
            tp=h.tp,
            pp=1,
            replicas=1,
            max_num_seqs=seqs,
            max_num_batched_tokens=max(tokens, seqs),
            block_size=block,
            cold_start=False,
            num_gpu_blocks_override=(total_tokens // block + len(workload.calls) + 1)
            if own_server
            else 0,
        )
        cluster = validate(
            ClusterConfig(
                name=f"one replica of {h.model} on {h.gpu}",
                gpu=h.gpu,
                nodes=(NodeGroup("pcie-server", 1, max(h.tp, 1)),),
                deployments=(dep,),
                policies=PolicyConfig(),
                source=str(records),
            )
        )
        try:
            result = simulate(workload, cluster, seed=seed, cost_model=cm)
        except AgentsimError as e:
            raise AgentsimError(f"compare-e2e: simulating {records}: {e}") from None
    sim_calls = result.calls[result.calls["kind"] == "llm"]
    simulated = {
        "ttft_s": list(sim_calls["ttft_s"]),
        "itl_s": list(sim_calls["tpot_s"]),
        "e2e_s": list(sim_calls["e2e_s"]),
    }
    measured = _measured(sec)
    out = E2EComparison(
        records=str(records),
        costmodel=costmodel,
        calls=len(measured["e2e_s"]),
        replica={
            "model": h.model,
            "gpu": h.gpu,
            "tp": h.tp,
            "max_num_seqs": seqs,
            "max_num_batched_tokens": dep.max_num_batched_tokens,
            "prefix_caching": not (own_server and limits.get("prefix_caching") is False),
        },
        simulated_makespan_s=float(result.summary.get("makespan_s") or 0.0),
    )
    arrivals = [
        float(o["arrival_s"]) + float(o.get("e2e_s") or 0.0)
        for o in sec.other
        if o.get("type") == "call"
    ]
    out.measured_makespan_s = max(arrivals, default=0.0)
    for m in METRICS:
        ms, ss = _stats(measured[m]), _stats(simulated[m])
        err = {k: (ss[k] - ms[k]) / ms[k] if ms[k] else math.nan for k in STATS}
        out.metrics.append(MetricComparison(m, ms, ss, err))
    return out


def format_comparison(c: E2EComparison) -> str:
    """A plain-text table of the comparison (milliseconds and relative errors)."""
    r = c.replica
    lines = [
        f"compare-e2e: {c.calls} LLM calls of {c.records} vs {c.costmodel}",
        f"replica: {r['model']} on {r['gpu']} tp={r['tp']}, max_num_seqs={r['max_num_seqs']}, "
        f"max_num_batched_tokens={r['max_num_batched_tokens']}, prefix caching {'on' if r['prefix_caching'] else 'off'}",
        f"makespan: measured {c.measured_makespan_s:.3f} s, simulated {c.simulated_makespan_s:.3f} s",
        f"{'metric':<8} {'stat':<5} {'measured ms':>12} {'simulated ms':>13} {'error':>8}",
    ]
    for m in c.metrics:
        for k in STATS:
            lines.append(
                f"{m.metric:<8} {k:<5} {m.measured[k] * 1e3:>12.3f} {m.simulated[k] * 1e3:>13.3f} {m.rel_error[k]:>+8.1%}"
            )
    return "\n".join(lines)
