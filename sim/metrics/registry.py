"""The metric registry: every ``summary.json`` metric's unit, better direction and
default regression tolerance, in one place.

A metric is named by its dotted path in ``summary.json`` (``ttft_s.p99``,
``bytes_moved.nvlink``); the registry describes it by its top-level key (every
percentile of ``ttft_s`` is in seconds, lower is better).  Readers:

- ``agentsim compare`` (:func:`sim.api.compare`) ranks policies by
  :attr:`Metric.better` (``higher`` sorts descending, anything else ascending);
- ``agentsim regress`` (:mod:`sim.experiments.regress`) gives a metric its default
  direction and tolerance when a baseline is created or gains a metric.

A metric passes the regression gate when ``|now - baseline| <= max(abs_tol, rel_tol *
|baseline|)``; ``better = "none"`` (counts and settings that must not move, and
measures with no good direction) makes any move beyond that a change to look at.
``tests/test_regress.py`` fails when ``summary.json`` gains a numeric key this registry
does not name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The better directions of a metric.
DIRECTIONS = ("lower", "higher", "none")


@dataclass(frozen=True)
class Metric:
    """One summary metric (by top-level key).

    ``unit``: what its numbers count (``s``, ``tokens/s``, ``fraction``, ``USD`` ...);
    ``better``: ``lower``, ``higher`` or ``none``; ``rel_tol`` (a fraction of the
    baseline) and ``abs_tol`` (in ``unit``): the default regression tolerance.
    """

    key: str
    unit: str
    better: str
    rel_tol: float
    abs_tol: float


def _m(key: str, unit: str, better: str, rel_tol: float, abs_tol: float) -> Metric:
    return Metric(key, unit, better, rel_tol, abs_tol)


#: Every summary metric by top-level key, in ``summary.json`` order.
METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        # the run summary (sim/metrics/recorder.py)
        _m("requests", "calls", "none", 0.0, 0.0),
        _m("completed_requests", "calls", "higher", 0.0, 0.0),
        _m("failed_requests", "calls", "lower", 0.0, 0.0),
        _m("sessions", "sessions", "none", 0.0, 0.0),
        _m("ttft_s", "s", "lower", 0.02, 0.001),
        _m("tpot_s", "s", "lower", 0.02, 0.0002),
        _m("e2e_s", "s", "lower", 0.02, 0.01),
        _m("session_s", "s", "lower", 0.02, 0.05),
        _m("throughput_tokens_per_s", "tokens/s", "higher", 0.01, 0.0),
        _m("prefix_hit_rate", "fraction", "higher", 0.0, 0.005),
        _m("preemptions", "preemptions", "lower", 0.05, 2.0),
        _m("cold_starts", "cold starts", "lower", 0.0, 0.0),
        _m("gpu_hours", "GPU-hours", "lower", 0.01, 0.0),
        _m("cost_usd", "USD", "lower", 0.01, 0.0),
        _m("makespan_s", "s", "lower", 0.01, 0.0),
        _m("failovers", "calls", "lower", 0.0, 0.0),
        _m("recomputed_tokens", "tokens", "lower", 0.02, 0.0),
        # request length limits and skipped input (counts: any change is looked at)
        _m("trace_skipped_records", "records", "none", 0.0, 0.0),
        _m("max_model_len", "tokens", "none", 0.0, 0.0),
        _m("rejected_too_long", "calls", "lower", 0.0, 0.0),
        _m("truncated_calls", "calls", "lower", 0.0, 0.0),
        _m("truncated_prompt_tokens", "tokens", "lower", 0.0, 0.0),
        _m("truncated_output_tokens", "tokens", "lower", 0.0, 0.0),
        _m("faults_ignored", "faults", "none", 0.0, 0.0),
        # the overload detector's inputs (the boolean `overloaded` is not a metric)
        _m("offered_load_rps", "calls/s", "none", 0.001, 0.0),
        _m("served_load_rps", "calls/s", "higher", 0.01, 0.0),
        _m("mean_queue_s", "s", "lower", 0.02, 0.01),
        _m("mean_service_s", "s", "lower", 0.02, 0.01),
        # the report metrics (sim/report/results.py)
        _m("slo", "s", "none", 0.0, 0.0),
        _m("slo_attainment", "fraction", "higher", 0.0, 0.005),
        _m("ttft_slo_attainment", "fraction", "higher", 0.0, 0.005),
        _m("tpot_slo_attainment", "fraction", "higher", 0.0, 0.005),
        _m("goodput_calls_per_s", "calls/s", "higher", 0.01, 0.0),
        _m("goodput_tokens_per_s", "tokens/s", "higher", 0.01, 0.0),
        _m("calls_per_s", "calls/s", "higher", 0.01, 0.0),
        _m("usd_per_m_output_tokens", "USD/M tokens", "lower", 0.01, 0.0),
        _m("usd_per_m_tokens", "USD/M tokens", "lower", 0.01, 0.0),
        _m("gpu_busy_hours", "GPU-hours", "none", 0.02, 0.0),
        _m("cold_start_gpu_hours", "GPU-hours", "lower", 0.01, 0.0),
        _m("gpu_idle_hours", "GPU-hours", "lower", 0.01, 0.0),
        _m("gpu_utilization", "fraction", "higher", 0.0, 0.005),
        _m("cold_start_usd", "USD", "lower", 0.01, 0.0),
        _m("kv_evictions", "blocks", "lower", 0.05, 2.0),
        _m("kv_occupancy_mean", "fraction", "none", 0.02, 0.0),
        _m("kv_occupancy_peak", "fraction", "none", 0.02, 0.0),
        _m("bytes_moved", "bytes", "lower", 0.01, 0.0),
        # fault injection (sim/cluster/faults.py) and the service mesh (sim/cluster/mesh.py)
        _m("faults", "count / tokens / s", "none", 0.02, 0.0),
        _m("mesh_calls", "calls", "none", 0.02, 0.0),
        _m("mesh_overhead_s", "s", "none", 0.02, 0.0),
        _m("mesh_cpu_hours", "vCPU-hours", "none", 0.02, 0.0),
        _m("mesh_cpu_usd", "USD", "none", 0.02, 0.0),
        # disaggregated serving (sim/cluster/disagg.py; runs with [[pools]] only)
        _m("kv_transfer_bytes", "bytes", "lower", 0.01, 0.0),
        _m("kv_transfer_s", "s", "lower", 0.02, 0.0005),
        _m("kv_transfer_wait_s", "s", "lower", 0.02, 0.001),
        _m("kv_transfers", "transfers", "none", 0.01, 0.0),
        _m("local_prefills", "calls", "none", 0.01, 0.0),
        _m("remote_prefills", "calls", "none", 0.01, 0.0),
        _m("rejected_overload", "calls", "lower", 0.0, 0.0),
        _m("pool_utilization", "fraction", "none", 0.02, 0.005),
        _m("kv_transfer_busiest_links", "bytes / links", "none", 0.01, 0.0),
        _m("role_moves", "instances", "none", 0.0, 0.0),
        # the shared KV store (sim/cluster/kvstore.py; runs with [[kv_store]] only)
        _m("kv_store_hit_rate", "fraction", "higher", 0.0, 0.005),
        _m("kv_store_loads", "loads", "none", 0.01, 0.0),
        _m("kv_store_load_s", "s", "none", 0.02, 0.0),
        _m("kv_store_peak_bytes", "bytes", "none", 0.01, 0.0),
    )
}

#: A metric agentsim does not know (a newer version's, a plugin's): any move beyond
#: 2% is a change to look at, and it ranks ascending.
UNKNOWN = Metric("", "", "none", 0.02, 0.0)

#: Summary keys that identify a run rather than measure it.
IDENTITY_KEYS = ("seed", "policy")


def metric(name: str) -> Metric:
    """The registry entry of a dotted metric name (``ttft_s.p50``); :data:`UNKNOWN` for
    a name the registry does not know."""
    return METRICS.get(name.split(".")[0], UNKNOWN)


def higher_is_better(name: str) -> bool:
    """Whether a larger value of the dotted metric ``name`` is better."""
    return metric(name).better == "higher"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys: ``{"ttft_s": {"p50": x}}`` -> ``{"ttft_s.p50": x}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def numeric_metrics(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """Every numeric metric of a summary by dotted name (identity keys, booleans and
    strings left out; a non-finite value is None)."""
    out: dict[str, float | None] = {}
    for k, v in flatten(summary).items():
        if k in IDENTITY_KEYS or isinstance(v, bool | str):
            continue
        if v is None or isinstance(v, int | float):
            out[k] = None if v is None or not math.isfinite(v) else v
    return out
