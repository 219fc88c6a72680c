"""Matplotlib figures of a run (and of a comparison of runs).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so
nothing here needs a display or touches pyplot's global state: the CLI renders PNGs
through the Agg canvas (:func:`png_bytes`), and a notebook shows a returned figure
inline.  Long timelines are reduced to at most ``bins`` time-weighted bins per
replica, so drawing cost does not grow with the trace.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from sim.metrics.stats import step_means

BINS = 200
LINK_COLOURS = {"nvlink": "#2ca02c", "pcie": "#1f77b4", "network": "#d62728", "host": "#9467bd"}


def png_bytes(fig: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (Agg canvas; no display needed)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _cdf(ax: Any, values: Any, label: str) -> None:
    a = np.sort(np.asarray(values, dtype=np.float64))
    a = a[np.isfinite(a)]
    if a.size == 0:
        return
    ax.step(a, np.arange(1, a.size + 1) / a.size, where="post", label=label)


def latency_cdfs(runs: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]]) -> Figure:
    """CDFs of TTFT, TPOT, end-to-end latency per call, and session completion time.

    ``runs`` maps a label to ``(calls, sessions)``; several labels overlay their CDFs.
    """
    fig = Figure(figsize=(10, 6.5))
    axes = fig.subplots(2, 2)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.92, hspace=0.3, wspace=0.2)
    panels = (
        ("ttft_s", "TTFT (s)", "calls", True),
        ("tpot_s", "TPOT (s)", "calls", False),
        ("e2e_s", "end-to-end latency per call (s)", "calls", True),
        ("session_s", "session completion time (s)", "sessions", True),
    )
    for ax, (col, xlabel, frame, log) in zip(axes.flat, panels, strict=True):
        for label, (calls, sessions) in runs.items():
            if frame == "sessions":
                _cdf(ax, sessions[col], label)
            else:
                llm = calls[(calls["kind"] == "llm") & (calls["status"] == "completed")]
                _cdf(ax, llm[col], label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction")
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, alpha=0.3)
    if any(ax.get_legend_handles_labels()[1] for ax in axes.flat):
        axes.flat[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Latency CDFs")
    return fig


def _edges(makespan_s: float, bins: int) -> np.ndarray:
    return np.linspace(0.0, max(makespan_s, 1e-9), bins + 1)


def binned(
    timeline: pd.DataFrame, column: str, makespan_s: float, bins: int = BINS
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Bin centres (s) and, per replica, the time-weighted mean of ``column`` per bin."""
    edges = _edges(makespan_s, bins)
    out: dict[int, np.ndarray] = {}
    for key, tl in timeline.groupby("replica", sort=True):
        rid: Any = key
        vals = tl[column].to_numpy(dtype=np.float64)
        out[int(rid)] = step_means(tl["time_s"].to_numpy(dtype=np.float64), vals, edges)
    return (edges[:-1] + edges[1:]) / 2, out


def timeline_figure(timeline: pd.DataFrame, makespan_s: float, bins: int = BINS) -> Figure:
    """Running and waiting sequences per replica over simulated time."""
    fig = Figure(figsize=(10, 5))
    ax_run, ax_wait = fig.subplots(2, 1, sharex=True)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.91, hspace=0.12)
    for ax, col in ((ax_run, "running"), (ax_wait, "waiting")):
        x, per = binned(timeline, col, makespan_s, bins)
        for rid, y in per.items():
            ax.plot(x, y, lw=1, label=f"replica {rid}")
        ax.set_ylabel(f"{col} (seqs)")
        ax.grid(True, alpha=0.3)
    ax_wait.set_xlabel("simulated time (s)")
    if timeline["replica"].nunique() <= 12:
        ax_run.legend(fontsize=7, ncol=4, loc="upper right")
    fig.suptitle("Queue length per replica (time-weighted mean per bin)")
    return fig


def kv_figure(
    timeline: pd.DataFrame, replicas: pd.DataFrame, makespan_s: float, bins: int = BINS
) -> Figure:
    """KV occupancy (used and actively referenced blocks / capacity) over time."""
    fig = Figure(figsize=(10, 3.6))
    ax = fig.subplots()
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.9)
    cap = dict(zip(replicas["replica"], replicas["kv_capacity_blocks"], strict=True))
    x, used = binned(timeline, "kv_used_blocks", makespan_s, bins)
    _, active = binned(timeline, "kv_active_blocks", makespan_s, bins)
    for rid, y in used.items():
        c = max(int(cap.get(rid, 1)), 1)
        (line,) = ax.plot(x, y / c, lw=1.2, label=f"replica {rid} used")
        ax.plot(x, active[rid] / c, lw=0.8, ls="--", color=line.get_color())
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("fraction of KV blocks")
    ax.set_title("KV cache occupancy (solid: used incl. prefix cache; dashed: running sequences)")
    ax.grid(True, alpha=0.3)
    if len(used) <= 12:
        ax.legend(fontsize=7, ncol=4, loc="upper right")
    return fig


def heatmap_figure(timeline: pd.DataFrame, makespan_s: float, bins: int = BINS) -> Figure:
    """Per-replica utilisation heatmap: fraction of each time bin with a running batch."""
    busy = timeline.assign(busy=(timeline["running"] > 0).astype(np.float64))
    x, per = binned(busy, "busy", makespan_s, bins)
    h = 1.4 + 0.35 * max(len(per), 1)
    fig = Figure(figsize=(10, h))
    ax = fig.subplots()
    fig.subplots_adjust(left=0.1, right=0.95, bottom=0.55 / h, top=1 - 0.35 / h)
    ids = sorted(per)
    grid = np.vstack([per[r] for r in ids]) if ids else np.zeros((1, bins))
    im = ax.imshow(
        grid,
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        vmin=0,
        vmax=1,
        extent=(0.0, max(makespan_s, 1e-9), len(ids) - 0.5, -0.5),
    )
    ax.set_yticks(range(len(ids)), [f"replica {r}" for r in ids])
    ax.set_xlabel("simulated time (s)")
    ax.set_title("Replica utilisation (fraction of time with a running batch)")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    return fig


def cost_figure(
    summary: Mapping[str, Any], replicas: pd.DataFrame, price_per_hour: float
) -> Figure:
    """GPU-hours per replica split into busy, idle and cold start, with the cost in $."""
    h = 1.6 + 0.35 * max(len(replicas), 1)
    fig = Figure(figsize=(10, h))
    ax = fig.subplots()
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.6 / h, top=1 - 0.4 / h)
    if not replicas.empty:
        ngpu = np.array([len(str(g).split(",")) for g in replicas["gpus"]], dtype=np.float64)
        stop = replicas["stop_s"].to_numpy(dtype=np.float64)
        held = ngpu * np.clip(stop - replicas["start_s"].to_numpy(dtype=np.float64), 0, None)
        busy = ngpu * replicas["busy_s"].to_numpy(dtype=np.float64)
        cold = ngpu * replicas["cold_start_s"].to_numpy(dtype=np.float64)
        idle = np.clip(held - busy - cold, 0, None)
        y = np.arange(len(replicas))
        left = np.zeros(len(replicas))
        for vals, label, colour in (
            (busy, "busy", "#2ca02c"),
            (idle, "idle", "#bbbbbb"),
            (cold, "cold start", "#ff7f0e"),
        ):
            h = vals / 3600
            ax.barh(y, h, left=left, label=label, color=colour)
            left += h
        ax.set_yticks(y, [f"replica {r}" for r in replicas["replica"]])
        ax.invert_yaxis()
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("GPU-hours")
    ax.set_title(
        f"Cost: {summary['gpu_hours']:.4g} GPU-hours x \\${price_per_hour:,.2f} = \\${summary['cost_usd']:,.2f}"
    )
    ax.grid(True, axis="x", alpha=0.3)
    return fig


_LEVEL = {
    "storage": 5.0,
    "switch": 4.0,
    "nic": 3.0,
    "cpu": 2.2,
    "nvme": 2.2,
    "pcie_switch": 1.3,
    "gpu": 0.0,
    "nvswitch": -1.2,
}


def topology_figure(config: Mapping[str, Any], replicas: pd.DataFrame) -> Figure:
    """The cluster graph: devices in layers per node, GPUs coloured by their replica."""
    from sim.specs.topology import build_topology

    cl = config["cluster"]
    nodes = [(n["builder"], n["gpus"]) for n in cl["nodes"] for _ in range(n["count"])]
    g = build_topology(nodes, cl["gpu"]).graph
    owner: dict[int, int] = {}
    for r in replicas.to_dict("records"):
        for gi in str(r["gpus"]).split(","):
            if gi:
                owner[int(gi)] = int(r["replica"])
    # lay out each node's vertices in rows by kind; fabric vertices centred on top
    groups: dict[tuple[int, str], list[str]] = {}
    for v, d in g.nodes(data=True):
        m = re.match(r"n(\d+)/", v)
        node = int(m.group(1)) if m else -1
        groups.setdefault((node, d["kind"]), []).append(v)
    width = 10.0
    n_nodes = max(len(nodes), 1)
    pos: dict[str, tuple[float, float]] = {}
    for (node, kind), vs in groups.items():
        vs.sort(key=lambda s: (len(s), s))
        lo = 0.0 if node < 0 else node * (width + 2)
        hi = (n_nodes * (width + 2) - 2) if node < 0 else lo + width
        for i, v in enumerate(vs):
            x = (lo + hi) / 2 if len(vs) == 1 else lo + (hi - lo) * i / (len(vs) - 1)
            pos[v] = (x, _LEVEL.get(kind, 2.0))
    fig = Figure(figsize=(min(4 + 5 * n_nodes, 16), 4.2))
    ax = fig.subplots()
    fig.subplots_adjust(left=0.01, right=0.86, bottom=0.02, top=0.92)
    for link, colour in LINK_COLOURS.items():
        segs = [(pos[u], pos[v]) for u, v, d in g.edges(data=True) if d["link"] == link]
        if segs:
            from matplotlib.collections import LineCollection

            ax.add_collection(LineCollection(segs, colors=colour, linewidths=0.8, alpha=0.6))
            ax.plot([], [], color=colour, label=link)
    cmap = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    ]  # fmt: skip
    kinds_drawn: set[str] = set()
    for v, d in g.nodes(data=True):
        x, y = pos[v]
        if d["kind"] == "gpu":
            rid = owner.get(int(d["index"]))
            colour = "white" if rid is None else cmap[rid % len(cmap)]
            ax.scatter([x], [y], s=260, c=colour, edgecolors="black", zorder=3, marker="s")
            ax.annotate(str(d["index"]), (x, y), ha="center", va="center", fontsize=7, zorder=4)
        else:
            ax.scatter([x], [y], s=40, c="#444444", zorder=3)
            if d["kind"] not in kinds_drawn:
                kinds_drawn.add(d["kind"])
                ax.annotate(
                    d["kind"].replace("_", " "),
                    (x, y),
                    textcoords="offset points",
                    xytext=(6, 4),
                    fontsize=7,
                )
    for rid in sorted(set(owner.values())):
        ax.scatter([], [], s=80, c=cmap[rid % len(cmap)], marker="s", label=f"replica {rid}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_axis_off()
    ax.autoscale_view()
    from sim.report.titles import cluster_title

    ax.set_title(f"Topology: {cluster_title(cl)} (GPUs coloured by replica; white = unused)")
    return fig
