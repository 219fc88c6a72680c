"""Write a run's results to a directory (the output contract) and render its reports.

Files: ``summary.json`` (the contract keys of :data:`sim.metrics.recorder.SUMMARY_KEYS`, then
the report metrics of :func:`report_metrics`), ``calls.parquet`` (one row per call),
``sessions.parquet``, ``timeline.parquet`` (per-replica queue and KV samples at
iteration boundaries), ``replicas.csv``, ``kv_links.csv`` (KV transfers per directed
link; disaggregated runs only), ``config.json`` (cluster, trace, cost model,
memory plan), ``perf.json`` (wall-clock numbers), ``report.md`` and ``report.html``
(the same report, self-contained, with plots embedded as PNG).  All writes are
atomic.  ``summary.json`` is deterministic for a given seed and SLO; wall-clock
numbers go to ``perf.json`` only.  :func:`load_results` reads a directory back, so
reports can be re-rendered without re-simulating (``agentsim report``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.cluster.faults import render_faults_section
from sim.common.io import atomic_write, atomic_write_json, atomic_write_text
from sim.metrics.recorder import SUMMARY_KEYS, llm_masks, overload
from sim.metrics.stats import step_area
from sim.report.titles import cluster_title
from sim.simulation import KV_LINK_COLUMNS, SimResult
from sim.specs.hardware import get_gpu

LINK_TYPES = ("nvlink", "pcie", "network", "host")
#: Columns of ``replicas.csv`` (one row per replica life, :func:`sim.simulation.simulate`).
REPLICA_COLUMNS = (
    "replica",
    "model",
    "gpus",
    "node",
    "start_s",
    "ready_s",
    "stop_s",
    "cold_start_s",
    "busy_s",
    "iterations",
    "preemptions",
    "kv_capacity_blocks",
    "evictions",
    "prompt_tokens",
    "hit_tokens",
)


def replica_frame(replicas: pd.DataFrame) -> pd.DataFrame:
    """``replicas`` with every :data:`REPLICA_COLUMNS` column, even with no replica at
    all (a run whose deployments never got one has an empty frame without columns)."""
    missing = [c for c in REPLICA_COLUMNS if c not in replicas.columns]
    if not missing:
        return replicas
    out = replicas.copy()
    for c in missing:
        out[c] = pd.Series(dtype=str if c == "gpus" else np.float64)
    return out


@dataclass(frozen=True)
class SLO:
    """Per-call service-level objectives, in seconds.

    A call meets the SLO when it completed, its TTFT is at most ``ttft_s`` and its
    TPOT is at most ``tpot_s`` (calls with one output token have no TPOT and meet
    that half).  Failed calls never meet it.
    """

    ttft_s: float = 2.0
    tpot_s: float = 0.1

    def to_dict(self) -> dict[str, float]:
        return {"ttft_s": self.ttft_s, "tpot_s": self.tpot_s}


def _r(x: float) -> float:
    """Round for stable JSON (12 significant digits)."""
    return float(f"{float(x):.12g}")


def _gpu_count(gpus: Any) -> int:
    return len(str(gpus).split(",")) if str(gpus) else 0


def _replica_spans(replicas: pd.DataFrame, makespan_s: float) -> np.ndarray:
    """Seconds each replica was ready to serve (ready to stop, within the run)."""
    if replicas.empty:
        return np.zeros(0)
    stop = replicas["stop_s"].fillna(makespan_s).to_numpy(dtype=np.float64)
    ready = replicas["ready_s"].to_numpy(dtype=np.float64)
    return np.clip(stop - ready, 0.0, None)


_SAMPLE_COLUMNS = ("time_s", "running", "waiting", "kv_used_blocks")


def _replica_rows(timeline: pd.DataFrame | None) -> dict[Any, slice | np.ndarray]:
    """Where each replica's samples are in ``timeline``, keyed by replica id, in row
    order: a slice when its rows are contiguous (a run's timeline is written replica by
    replica), else their positions.  Indexing the columns with them copies one
    replica's samples at a time, where a groupby would copy the whole frame."""
    if timeline is None or timeline.empty:
        return {}
    ids = timeline["replica"].to_numpy()
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    cuts = np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1
    out: dict[Any, slice | np.ndarray] = {}
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(ids)], strict=True):
        at = order[lo:hi]
        contiguous = at[-1] - at[0] == hi - lo - 1
        out[sorted_ids[lo].item()] = slice(int(at[0]), int(at[-1]) + 1) if contiguous else at
    return out


def replica_table(
    replicas: pd.DataFrame, timeline: pd.DataFrame | None, makespan_s: float
) -> pd.DataFrame:
    """Per-replica utilisation and queue statistics.

    Columns added to ``replicas``: ``num_gpus``; ``utilization`` = busy seconds /
    seconds ready (ready to stop); ``mean_running``, ``mean_waiting`` (time-weighted
    over the replica's life, sequences) and ``max_waiting``; ``kv_occupancy_mean``
    (time-weighted used KV blocks / capacity) and ``kv_occupancy_peak``.
    """
    df = replica_frame(replicas).copy()
    df["num_gpus"] = [_gpu_count(g) for g in df["gpus"]] if not df.empty else []
    span = _replica_spans(df, makespan_s)
    with np.errstate(invalid="ignore", divide="ignore"):
        df["utilization"] = np.where(span > 0, df["busy_s"].to_numpy(dtype=float) / span, 0.0)
    stats: dict[str, list[float]] = {
        "mean_running": [],
        "mean_waiting": [],
        "max_waiting": [],
        "kv_occupancy_mean": [],
        "kv_occupancy_peak": [],
    }
    rows = _replica_rows(timeline)
    cols = (
        {c: timeline[c].to_numpy() for c in _SAMPLE_COLUMNS}
        if rows and timeline is not None
        else {}
    )
    for r in df.to_dict("records"):
        at = rows.get(r["replica"])
        start = float(r["start_s"])
        stop = float(r["stop_s"]) if not pd.isna(r["stop_s"]) else makespan_s
        life = max(stop - start, 0.0)
        if at is None or life <= 0:
            for v in stats.values():
                v.append(0.0)
            continue
        tl = {c: a[at] for c, a in cols.items()}  # the replica's samples, in timeline order
        t = tl["time_s"].astype(np.float64)
        edges = np.array([start, stop])
        cap = max(int(r["kv_capacity_blocks"]), 1)
        for col, key in (("running", "mean_running"), ("waiting", "mean_waiting")):
            a = step_area(t, tl[col].astype(np.float64), edges)
            stats[key].append(float(a[1] - a[0]) / life)
        stats["max_waiting"].append(float(tl["waiting"].max()))
        used = tl["kv_used_blocks"].astype(np.float64)
        a = step_area(t, used, edges)
        stats["kv_occupancy_mean"].append(float(a[1] - a[0]) / life / cap)
        stats["kv_occupancy_peak"].append(float(used.max()) / cap)
    for k, v in stats.items():
        df[k] = v
    return df


def weight_load_bytes(replicas: pd.DataFrame, config: dict[str, Any]) -> dict[str, float]:
    """Bytes moved per link type by cold-start weight loads.

    Each GPU of a cold-started replica streams its weight shard (``config['memory']``)
    from the deployment's ``weight_source``; the bytes are counted on the bottleneck
    link type of that load path (:meth:`sim.specs.topology.Topology.load_path`).
    """
    out = dict.fromkeys(LINK_TYPES, 0.0)
    cold = replicas[replicas["cold_start_s"] > 0] if not replicas.empty else replicas
    if cold.empty or "cold_start_s" not in replicas.columns:
        return out
    from sim.specs.models import get_model
    from sim.specs.topology import build_topology

    cl = config["cluster"]
    nodes = [(n["builder"], n["gpus"]) for n in cl["nodes"] for _ in range(n["count"])]
    topo = build_topology(nodes, cl["gpu"])
    sources = {get_model(d["model"]).name: d["weight_source"] for d in cl["deployments"]}
    for r in cold.to_dict("records"):
        model = str(r["model"])
        weights = float(config["memory"][model]["weights"])
        for g in str(r["gpus"]).split(","):
            link = topo.load_path(int(g), sources.get(model, "nvme")).link
            out[link] = out.get(link, 0.0) + weights
    return out


def report_metrics(
    summary: dict[str, Any],
    calls: pd.DataFrame,
    replicas: pd.DataFrame,
    timeline: pd.DataFrame | None,
    config: dict[str, Any],
    slo: SLO | None = None,
    table: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The report's derived metrics (added to ``summary.json`` after the contract keys;
    ``table``: :func:`replica_table` of ``replicas``, if the caller has it).  Keys
    (seconds, hours, USD, bytes):

    - ``slo``: the objectives used; ``slo_attainment``: fraction of LLM calls meeting
      both; ``ttft_slo_attainment``, ``tpot_slo_attainment``: each alone.
    - ``goodput_calls_per_s`` / ``goodput_tokens_per_s``: calls (output tokens) meeting
      the SLO per second of makespan; ``calls_per_s``: completed LLM calls per second.
    - ``usd_per_m_output_tokens``: cost per million output tokens of completed calls;
      ``usd_per_m_tokens``: per million input + output tokens of completed calls.
    - ``gpu_busy_hours``: GPUs x seconds iterating; ``cold_start_gpu_hours``: GPUs x
      seconds loading weights (billed); ``gpu_idle_hours``: the rest of ``gpu_hours``;
      ``gpu_utilization`` = busy / gpu_hours; ``cold_start_usd``: billed cold starts.
    - ``kv_evictions``: prefix-cache blocks evicted; ``kv_occupancy_mean``: mean over
      replicas of time-weighted used blocks / capacity; ``kv_occupancy_peak``: largest.
    - ``bytes_moved``: bytes per link type (``nvlink``, ``pcie``, ``network``,
      ``host``, and ``nvme`` when weights were read from a node's NVMe drive) by cold-start
      weight loads, counted on each load path's bottleneck link.
    - ``overloaded``, ``offered_load_rps``, ``served_load_rps``, ``mean_queue_s``,
      ``mean_service_s``: whether arrivals outpaced service (:func:`sim.metrics.recorder.overload`
      gives the criterion).
    """
    slo = slo or SLO()
    makespan = float(summary["makespan_s"])
    llm, ok = llm_masks(calls)  # the LLM calls' columns, copying only those used
    done = ok[llm]
    ttft = calls["ttft_s"].to_numpy(dtype=float)[llm]
    tpot = calls["tpot_s"].to_numpy(dtype=float)[llm]
    ttft_ok = done & (ttft <= slo.ttft_s)
    tpot_ok = done & (np.isnan(tpot) | (tpot <= slo.tpot_s))
    met = ttft_ok & tpot_ok
    n = int(llm.sum())
    out_tok = calls["output_tokens"].to_numpy(dtype=float)[llm]
    in_tok = calls["input_tokens"].to_numpy(dtype=float)[llm]

    def frac(mask: np.ndarray) -> float:
        return _r(mask.sum() / n) if n else 0.0

    def rate(x: float) -> float:
        return _r(x / makespan) if makespan > 0 else 0.0

    cost = float(summary["cost_usd"])
    gpu_hours = float(summary["gpu_hours"])
    done_out = float(out_tok[done].sum())
    done_all = done_out + float(in_tok[done].sum())
    rt = table if table is not None else replica_table(replicas, timeline, makespan)
    ngpu = rt["num_gpus"].to_numpy(dtype=float) if not rt.empty else np.zeros(0)
    busy_h = float((rt["busy_s"].to_numpy(dtype=float) * ngpu).sum() / 3600)
    cold_h = float((rt["cold_start_s"].to_numpy(dtype=float) * ngpu).sum() / 3600)
    price = get_gpu(config["cluster"]["gpu"]).price_per_hour
    return {
        **overload(calls),
        "slo": slo.to_dict(),
        "slo_attainment": frac(met),
        "ttft_slo_attainment": frac(ttft_ok),
        "tpot_slo_attainment": frac(tpot_ok),
        "goodput_calls_per_s": rate(float(met.sum())),
        "goodput_tokens_per_s": rate(float(out_tok[met].sum())),
        "calls_per_s": rate(float(done.sum())),
        "usd_per_m_output_tokens": _r(cost / done_out * 1e6) if done_out else None,
        "usd_per_m_tokens": _r(cost / done_all * 1e6) if done_all else None,
        "gpu_busy_hours": _r(busy_h),
        "cold_start_gpu_hours": _r(cold_h),
        "gpu_idle_hours": _r(max(gpu_hours - busy_h - cold_h, 0.0)),
        "gpu_utilization": _r(busy_h / gpu_hours) if gpu_hours > 0 else 0.0,
        "cold_start_usd": _r(cold_h * price),
        "kv_evictions": int(rt["evictions"].sum()) if not rt.empty else 0,
        "kv_occupancy_mean": _r(rt["kv_occupancy_mean"].mean()) if not rt.empty else 0.0,
        "kv_occupancy_peak": _r(rt["kv_occupancy_peak"].max()) if not rt.empty else 0.0,
        "bytes_moved": {k: _r(v) for k, v in weight_load_bytes(replicas, config).items()},
    }


def enrich_summary(
    result: SimResult, slo: SLO | None = None, table: pd.DataFrame | None = None
) -> dict[str, Any]:
    """``result.summary``'s contract keys followed by :func:`report_metrics` (``table``
    as there)."""
    base = {k: v for k, v in result.summary.items() if k in SUMMARY_KEYS}
    extra = {k: v for k, v in result.summary.items() if k not in SUMMARY_KEYS}
    extra.update(
        report_metrics(
            result.summary,
            result.calls,
            result.replicas,
            result.timeline,
            result.config,
            slo,
            table,
        )
    )
    return base | extra


def _parquet(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_results(
    result: SimResult,
    out: str | Path,
    slo: SLO | None = None,
    html: bool = True,
    replace: bool = True,
) -> Path:
    """Write every output file of a run as the directory ``out``, atomically.

    The files are written into a hidden temporary sibling that is renamed onto ``out``
    only when all of them are complete (:func:`sim.common.io.atomic_dir`): an interrupted or
    failed write leaves ``out`` as it was, and ``out`` never mixes files of two runs.
    An earlier run directory at ``out`` is replaced whole (``replace=False``: it is an
    error, for a directory that appeared since the caller checked); a non-empty
    directory agentsim did not write is never replaced.

    ``summary.json`` gets the report metrics for ``slo``; ``html=False`` skips
    ``report.html`` (the slowest file: it draws the plots).  ``perf.json`` gets
    ``report_render_s``, the wall seconds spent rendering the reports.
    """
    from sim.common.io import atomic_dir, check_output_dir

    target = Path(out)
    check_output_dir(target, force=True)
    with atomic_dir(target, replace=replace) as d:
        _write_run_files(result, d, slo, html)
    return target


def _write_run_files(result: SimResult, d: Path, slo: SLO | None, html: bool) -> None:
    # the per-replica table feeds summary.json and report.md: computed once
    table = replica_table(result.replicas, result.timeline, float(result.summary["makespan_s"]))
    summary = enrich_summary(result, slo, table)
    atomic_write_json(d / "summary.json", summary)
    _parquet(result.calls, d / "calls.parquet")
    _parquet(result.sessions, d / "sessions.parquet")
    _parquet(result.timeline, d / "timeline.parquet")
    atomic_write_text(d / "replicas.csv", result.replicas.to_csv(index=False))
    if not result.links.empty:
        atomic_write_text(d / "kv_links.csv", result.links.to_csv(index=False))
    atomic_write_json(d / "config.json", result.config)
    render_s = write_reports(result, d, summary=summary, html=html, table=table)
    atomic_write_json(d / "perf.json", {**result.perf, "report_render_s": render_s})


def write_reports(
    result: SimResult,
    out: str | Path,
    summary: dict[str, Any] | None = None,
    html: bool = True,
    table: pd.DataFrame | None = None,
) -> float:
    """Write ``report.md`` (and ``report.html``) for ``result``; returns seconds taken.

    ``summary`` is the enriched summary (default: ``result.summary`` as is); ``table``
    the :func:`replica_table` of its replicas, when the caller has it.
    """
    t0 = time.perf_counter()
    d = Path(out)
    s = summary if summary is not None else result.summary
    md = render_markdown(
        s, result.config, result.replicas, result.timeline, result.links, table=table
    )
    atomic_write_text(d / "report.md", md)
    if html:
        from sim.report.html import render_report_html

        atomic_write_text(d / "report.html", render_report_html(md, result, s))
    return time.perf_counter() - t0


def load_results(path: str | Path) -> SimResult:
    """Read a run directory written by :func:`write_results` back into a SimResult."""
    from sim.common.errors import InputError

    d = Path(path)
    need = ("summary.json", "config.json", "calls.parquet", "replicas.csv")
    missing = [f for f in need if not (d / f).exists()]
    if missing:
        raise InputError(str(d), None, None, f"not a run directory (missing {', '.join(missing)})")

    def opt_parquet(name: str) -> pd.DataFrame:
        p = d / name
        return pd.read_parquet(p) if p.exists() else pd.DataFrame()

    from sim.metrics.recorder import session_frame
    from sim.simulation import TIMELINE_COLUMNS

    calls = pd.read_parquet(d / "calls.parquet")
    sessions = opt_parquet("sessions.parquet")
    timeline = opt_parquet("timeline.parquet")
    perf_p = d / "perf.json"
    links_p = d / "kv_links.csv"
    return SimResult(
        summary=json.loads((d / "summary.json").read_text(encoding="utf-8")),
        calls=calls,
        sessions=sessions if not sessions.empty else session_frame(calls),
        timeline=timeline if not timeline.empty else pd.DataFrame(columns=TIMELINE_COLUMNS),
        replicas=_read_replicas(d / "replicas.csv"),
        config=json.loads((d / "config.json").read_text(encoding="utf-8")),
        perf=json.loads(perf_p.read_text(encoding="utf-8")) if perf_p.exists() else {},
        links=pd.read_csv(links_p) if links_p.exists() else pd.DataFrame(),
    )


def _read_replicas(path: Path) -> pd.DataFrame:
    """``replicas.csv`` (an empty file when the run had no replica at all)."""
    try:
        df = pd.read_csv(path, dtype={"gpus": str})
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    return replica_frame(df)


# ---- markdown ------------------------------------------------------------------------


def duration_unit(seconds: float) -> tuple[float, str, int]:
    """How to print a duration of about ``seconds``: (seconds per unit, unit, decimals).

    Under 1 s in ms, under 2 min in s, under 2 h in min, else in h: a latency of
    8536.9 s prints as 2.4 h, not 8536928.8 ms."""
    a = abs(seconds)
    if a < 1.0:
        return 1e-3, "ms", 1
    if a < 120.0:
        return 1.0, "s", 2
    if a < 7200.0:
        return 60.0, "min", 1
    return 3600.0, "h", 1


def fmt_duration(seconds: Any) -> str:
    """A duration in seconds for humans (:func:`duration_unit`); None/NaN: ``n/a``."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "n/a"
    scale, unit, dec = duration_unit(float(seconds))
    return f"{float(seconds) / scale:,.{dec}f} {unit}"


def _fmt(x: Any, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float):
        if unit == "ms":
            return f"{x * 1000:.1f} ms"
        return f"{x:,.4g}{(' ' + unit) if unit else ''}"
    return f"{x:,}{(' ' + unit) if unit else ''}"


def _validation_summary(val: Any) -> str:
    """A cost model's validation errors in a few words (the full record stays in
    ``config.json``): the MAPE of each validation, a range over leave-one-out folds."""
    if not isinstance(val, dict) or not val:
        return "not validated against measurements"
    parts = []
    for name, v in val.items():
        label = name.replace("_", " ")
        if isinstance(v, dict) and isinstance(v.get("mape"), int | float):
            n = f", n={v['n']:,}" if isinstance(v.get("n"), int) else ""
            p90 = f", p90 {v['p90_ape']:.1f}%" if isinstance(v.get("p90_ape"), int | float) else ""
            parts.append(f"{label} MAPE {v['mape']:.1f}%{p90}{n}")
        elif isinstance(v, list):
            m = [
                x["mape"]
                for x in v
                if isinstance(x, dict) and isinstance(x.get("mape"), int | float)
            ]
            if m:
                rng = f"{min(m):.1f}%" if len(m) == 1 else f"{min(m):.1f}-{max(m):.1f}%"
                parts.append(f"{label} MAPE {rng} ({len(m)} folds)")
    return "validation: " + "; ".join(parts) if parts else "validation recorded in config.json"


def costmodel_line(cm: dict[str, Any]) -> str:
    """The report's one-line cost-model description: name, kind, source, validation."""
    src = f"; source `{cm['source']}`" if cm.get("source") else ""
    return (
        f"- Cost model: {cm.get('name', '?')} ({cm.get('kind', '')}){src}; "
        f"{_validation_summary(cm.get('validation'))}"
    )


def overload_warning(summary: dict[str, Any]) -> list[str]:
    """The report's warning lines when ``summary['overloaded']`` (else none)."""
    if not summary.get("overloaded"):
        return []

    def rate(x: Any) -> str:
        return "n/a" if x is None else f"{x:,.3g} calls/s"

    q, sv = summary.get("mean_queue_s"), summary.get("mean_service_s")
    return [
        "> **Warning: overloaded.** Arrivals outpaced service: LLM calls waited "
        f"{fmt_duration(q)} on average for a replica and were then served in "
        f"{fmt_duration(sv)}; offered {rate(summary.get('offered_load_rps'))}, served "
        f"{rate(summary.get('served_load_rps'))}. The latencies below are mostly queueing "
        "for capacity, not service: add replicas or lower --load-scale (criterion: "
        "sim/metrics/recorder.py overload).",
        "",
    ]


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _usd(x: Any) -> str:
    return "n/a" if x is None else f"${x:,.2f}"


def _bytes(x: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= scale:
            return f"{x / scale:,.2f} {unit}"
    return f"{x:,.0f} B"


def limits_lines(summary: dict[str, Any]) -> list[str]:
    """Report lines on what was not simulated as recorded: trace records skipped by
    the reader, calls longer than ``max_model_len`` (rejected or truncated), faults
    after the run.  Always states the length limit; the rest only when non-zero."""
    limits = summary.get("max_model_len") or {}
    out = []
    if limits:
        out.append(
            "- max_model_len: "
            + ", ".join(f"{m} {n:,} tokens" for m, n in limits.items())
            + f"; rejected as longer: {summary.get('rejected_too_long', 0):,}"
            + f"; truncated: {summary.get('truncated_calls', 0):,}"
        )
    if summary.get("trace_skipped_records"):
        out.append(
            f"- Trace records skipped by the reader (0 prompt or output tokens, ...): "
            f"{summary['trace_skipped_records']:,} (config.json trace_read.skipped)"
        )
    if summary.get("faults_ignored"):
        out.append(
            f"- Faults scheduled after the run ended, not applied: {summary['faults_ignored']:,}"
        )
    return out


def _store_section(summary: dict[str, Any]) -> list[str]:
    """The shared KV store's section (empty without ``[[kv_store]]``): hit rate and
    peak occupancy per tier."""
    hits = summary.get("kv_store_hit_rate")
    if not hits:
        return []
    peak = summary.get("kv_store_peak_bytes", {})
    lines = ["", "## Shared KV store", "", "| tier | hit rate | peak occupancy |", "|---|---|---|"]
    for tier, rate in hits.items():
        occ = _bytes(peak[tier]) if tier in peak else "(instances' own)"
        lines.append(f"| {tier} | {_pct(rate)} | {occ} |")
    lines.append(
        f"\n- Loads: {summary.get('kv_store_loads', 0):,}, "
        f"{fmt_duration(summary.get('kv_store_load_s', 0.0))} in total"
    )
    return lines


#: How many links the report lists by name (all of them are in ``kv_links.csv``).
REPORT_LINKS = 10


def _pools_section(
    summary: dict[str, Any], config: dict[str, Any], links: pd.DataFrame | None = None
) -> list[str]:
    """The disaggregation section of a run with ``[[pools]]`` (empty otherwise): the
    pools, the KV transfers, the links they loaded most per link type and, from
    ``links`` (``kv_links.csv``), the transfers and bytes of the busiest links."""
    pools = config.get("cluster", {}).get("pools") or []
    if not pools or "kv_transfer_s" not in summary:
        return []
    util = summary.get("pool_utilization", {})
    lines = ["", "## Disaggregation (prefill / decode pools)", ""]
    lines += ["| role | model | TP | instances | utilisation |", "|---|---|---|---|---|"]
    for p in pools:
        model = p.get("model") or "(first deployment)"
        lines.append(
            f"| {p['role']} | {model} | {p.get('tp') or '(deployment)'} | {p['count']} | "
            f"{_pct(util.get(p['role']))} |"
        )
    t, w = summary["kv_transfer_s"], summary["kv_transfer_wait_s"]
    lines += [
        "",
        f"- Prefills: {summary.get('remote_prefills', 0):,} on a prefill instance, "
        f"{summary.get('local_prefills', 0):,} local on the decode instance; "
        f"{summary.get('rejected_overload', 0):,} calls rejected early",
        f"- KV transfers: {summary.get('kv_transfers', 0):,}, {_bytes(summary['kv_transfer_bytes'])}; "
        f"time p50 {fmt_duration(t['p50'])}, p99 {fmt_duration(t['p99'])}; "
        f"wait for decode room p99 {fmt_duration(w['p99'])}",
        "",
        "| link type | links used | busiest link | its bytes |",
        "|---|---|---|---|",
    ]
    for kind, b in summary.get("kv_transfer_busiest_links", {}).items():
        lines.append(f"| {kind} | {b['links']} | {b['link']} | {_bytes(b['bytes'])} |")
    if links is not None and not links.empty:
        shown = links.head(REPORT_LINKS)
        lines += [
            "",
            f"Transfers per link, busiest {len(shown)} of {len(links)} (all in kv_links.csv):",
            "",
            "| link | type | transfers | bytes |",
            "|---|---|---|---|",
        ]
        for link, kind, transfers, nbytes in shown[KV_LINK_COLUMNS].itertuples(index=False):
            lines.append(f"| {link} | {kind} | {int(transfers):,} | {_bytes(float(nbytes))} |")
    return lines


# long: the report's sections in output order; each is a few lines of formatting of the same summary
def render_markdown(
    summary: dict[str, Any],
    config: dict[str, Any],
    replicas: pd.DataFrame,
    timeline: pd.DataFrame | None = None,
    links: pd.DataFrame | None = None,
    table: pd.DataFrame | None = None,
) -> str:
    """A human-readable report of one run (``links``: ``kv_links.csv``'s rows;
    ``table``: :func:`replica_table` of ``replicas``, computed here when None).

    Sections whose numbers come from :func:`report_metrics` (SLO, cost breakdown,
    KV cache) appear when ``summary`` carries them (:func:`enrich_summary`).
    """
    cl = config["cluster"]
    cm = config.get("costmodel", {})
    node_desc = ", ".join(f"{n['count']} x {n['builder']}" for n in cl["nodes"])
    num_gpus = sum(n["count"] * n["gpus"] for n in cl["nodes"])
    price = get_gpu(cl["gpu"]).price_per_hour
    lines = [
        f"# agentsim run: {Path(str(config['trace'])).name} / {summary['policy']} / seed {summary['seed']}",
        "",
        *overload_warning(summary),
        "## Configuration",
        "",
        f"- Trace: `{config['trace']}` (load scale {config.get('load_scale', 1.0)})",
        f"- Cluster: {cluster_title(cl)} — {num_gpus} x {cl['gpu']} ({node_desc}), ${price:,.2f} per GPU-hour",
    ]
    for dep in cl["deployments"]:
        lines.append(
            f"- Deployment: {dep['model']} TP={dep['tp']} PP={dep['pp']} x {dep['replicas']} replicas "
            f"(max_num_seqs {dep['max_num_seqs']}, max_num_batched_tokens {dep['max_num_batched_tokens']}, "
            f"block {dep['block_size']} tokens)"
        )
    pol = cl["policies"]
    lines.append("- Policies: " + ", ".join(f"{k}={v}" for k, v in pol.items()))
    lines.append(f"- Seed: {summary['seed']}")
    lines.append(costmodel_line(cm))
    lines += [
        "",
        "## Requests",
        "",
        f"- Calls: {summary['requests']} LLM calls in {summary['sessions']} sessions; "
        f"{summary['completed_requests']} completed, {summary['failed_requests']} failed",
        f"- Preemptions: {summary['preemptions']}; cold starts: {summary['cold_starts']}",
        f"- Makespan: {_fmt(summary['makespan_s'], 's')}",
        *limits_lines(summary),
        "",
        "## Latency",
        "",
        "| metric | mean | p50 | p90 | p99 |",
        "|---|---|---|---|---|",
    ]
    for key, label in (
        ("ttft_s", "TTFT"),
        ("tpot_s", "TPOT"),
        ("e2e_s", "end-to-end per call"),
        ("session_s", "session completion"),
    ):
        st = summary[key]
        lines.append(
            f"| {label} | "
            + " | ".join(fmt_duration(st[q]) for q in ("mean", "p50", "p90", "p99"))
            + " |"
        )
    if "slo" in summary:
        slo = summary["slo"]
        lines += [
            "",
            "## SLO attainment and goodput",
            "",
            f"- SLO: TTFT <= {_fmt(float(slo['ttft_s']), 'ms')}, TPOT <= {_fmt(float(slo['tpot_s']), 'ms')}",
            f"- Attainment: {_pct(summary['slo_attainment'])} of LLM calls meet both "
            f"(TTFT alone {_pct(summary['ttft_slo_attainment'])}, TPOT alone {_pct(summary['tpot_slo_attainment'])})",
            f"- Goodput: {_fmt(summary['goodput_calls_per_s'], 'calls/s')}, "
            f"{_fmt(summary['goodput_tokens_per_s'], 'output tokens/s')}",
        ]
    lines += [
        "",
        "## Throughput",
        "",
        f"- {_fmt(summary['throughput_tokens_per_s'], 'output tokens/s')}"
        + (f"; {_fmt(summary['calls_per_s'], 'calls/s')}" if "calls_per_s" in summary else ""),
        "",
        "## Cost",
        "",
        f"- GPU-hours: {summary['gpu_hours']:.4g}; cost: {_usd(summary['cost_usd'])} "
        f"(= {summary['gpu_hours']:.4g} GPU-hours x ${price:,.2f})",
    ]
    if "gpu_busy_hours" in summary:
        lines += [
            f"- $ per million tokens: {_usd(summary['usd_per_m_output_tokens'])} per M output tokens; "
            f"{_usd(summary['usd_per_m_tokens'])} per M input + output tokens",
            f"- GPU time: busy {summary['gpu_busy_hours']:.4g} h, idle {summary['gpu_idle_hours']:.4g} h, "
            f"cold start {summary['cold_start_gpu_hours']:.4g} h (billed {_usd(summary['cold_start_usd'])}); "
            f"utilisation {_pct(summary['gpu_utilization'])}",
            "",
            "## KV cache",
            "",
            f"- Prefix-cache hit rate: {summary['prefix_hit_rate']:.1%}",
            f"- Occupancy: mean {_pct(summary['kv_occupancy_mean'])}, peak {_pct(summary['kv_occupancy_peak'])} of blocks",
            f"- Evictions: {summary['kv_evictions']:,} blocks; preemptions: {summary['preemptions']:,}",
            "- Bytes moved (weight loads): "
            + ", ".join(f"{k} {_bytes(v)}" for k, v in summary["bytes_moved"].items()),
        ]
    else:
        lines.append(f"- Prefix-cache hit rate: {summary['prefix_hit_rate']:.1%}")
    lines += render_faults_section(summary)  # sim/cluster/faults.py; empty without faults
    lines += _pools_section(summary, config, links)
    lines += _store_section(summary)
    rt = (
        table
        if table is not None
        else replica_table(replicas, timeline, float(summary["makespan_s"]))
    )
    lines += [
        "",
        "## Replicas",
        "",
        "| replica | model | GPUs | busy s | utilisation | mean running | mean waiting | max waiting "
        "| KV mean | iterations | preemptions | KV blocks | evictions |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rt.itertuples():
        lines.append(
            f"| {r.replica} | {r.model} | {r.gpus} | {r.busy_s:,.1f} | {r.utilization:.1%} | "
            f"{r.mean_running:.2f} | {r.mean_waiting:.2f} | {r.max_waiting:.0f} | "
            f"{r.kv_occupancy_mean:.1%} | {r.iterations:,} | {r.preemptions} | "
            f"{r.kv_capacity_blocks:,} | {r.evictions:,} |"
        )
    return "\n".join(lines) + "\n"
