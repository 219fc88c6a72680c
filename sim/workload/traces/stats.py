"""Summary statistics of a workload: volume, timing, token sizes, sessions, prefix reuse.

Prefix reuse is measured with an infinite cache, calls taken in recorded issue order:
``block_hit_ratio`` is the share of all prefix blocks already seen in an earlier call
(any session); ``token_hit_ratio`` the share of input tokens covered by the leading run
of already-seen blocks (what a prefix cache can skip); ``session_token_hit_ratio`` the
same counting only earlier calls of the same session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sim.workload.calls import Call, Workload

QUANTILES = (50, 90, 99)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """``mean``, ``p50``, ``p90``, ``p99``, ``min`` and ``max`` of ``values`` ({} when empty)."""
    if not values:
        return {}
    a = np.asarray(values, dtype=float)
    out = {"mean": float(a.mean()), "min": float(a.min())}
    for q, v in zip(QUANTILES, np.percentile(a, QUANTILES), strict=True):
        out[f"p{q}"] = float(v)
    out["max"] = float(a.max())
    return out


@dataclass
class PrefixReuse:
    """Prefix reuse with an infinite cache (ratios in [0, 1]); see the module docstring."""

    blocks: int = 0
    block_hit_ratio: float = 0.0
    token_hit_ratio: float = 0.0
    session_token_hit_ratio: float = 0.0


@dataclass
class TraceStats:
    """What ``agentsim trace stats`` reports.  Times in seconds, sizes in tokens.

    ``calls`` counts every call (LLM and tool); token and per-session figures count LLM
    calls.  ``read`` is the reader's account of lines read vs calls produced.
    """

    calls: int
    llm_calls: int
    tool_calls: int
    sessions: int
    duration_s: float
    arrival_rate_per_s: float
    input_tokens: dict[str, float]
    output_tokens: dict[str, float]
    calls_per_session: dict[str, float]
    session_duration_s: dict[str, float]
    gap_s: dict[str, float]
    tool_duration_s: dict[str, float]
    prefix_reuse: PrefixReuse
    models: list[str]
    read: dict[str, Any] = field(default_factory=dict)
    reconstruction: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def meta_section(w: Workload, key: str) -> dict[str, Any]:
    """A dict-valued entry of ``w.meta`` (``read``, ``reconstruction``), or ``{}``."""
    v = w.meta.get(key)
    return dict(v) if isinstance(v, dict) else {}


def prefix_reuse(llm_calls: Sequence[Call]) -> PrefixReuse:
    """Infinite-cache prefix reuse of LLM calls, in recorded issue order."""
    seen: set[int] = set()
    by_session: dict[str, set[int]] = {}
    blocks = hits = total_tokens = lead_tokens = session_tokens = 0
    for c in sorted(llm_calls, key=lambda c: c.issue_time_s):
        h = c.prefix_hashes
        total_tokens += c.input_tokens
        if not h:
            continue
        own = by_session.setdefault(c.session_id, set())
        blocks += len(h)
        hits += sum(1 for x in h if x in seen)
        lead = next((i for i, x in enumerate(h) if x not in seen), len(h))
        lead_own = next((i for i, x in enumerate(h) if x not in own), len(h))
        lead_tokens += lead * c.block_size
        session_tokens += lead_own * c.block_size
        seen.update(h)
        own.update(h)
    return PrefixReuse(
        blocks=blocks,
        block_hit_ratio=hits / blocks if blocks else 0.0,
        token_hit_ratio=lead_tokens / total_tokens if total_tokens else 0.0,
        session_token_hit_ratio=session_tokens / total_tokens if total_tokens else 0.0,
    )


def trace_stats(w: Workload) -> TraceStats:
    """Compute :class:`TraceStats` of a loaded workload."""
    llm = [c for c in w.calls if c.kind == "llm"]
    tools = [c for c in w.calls if c.kind == "tool"]
    times = [c.issue_time_s for c in w.calls]
    duration = max(times) - min(times) if times else 0.0
    per_session: dict[str, int] = {}
    spans: dict[str, list[float]] = {}
    for c in w.calls:
        if c.kind == "llm":
            per_session[c.session_id] = per_session.get(c.session_id, 0) + 1
        end = c.issue_time_s + c.tool_duration_s
        lo_hi = spans.setdefault(c.session_id, [c.issue_time_s, end])
        lo_hi[0] = min(lo_hi[0], c.issue_time_s)
        lo_hi[1] = max(lo_hi[1], end)
    return TraceStats(
        calls=len(w.calls),
        llm_calls=len(llm),
        tool_calls=len(tools),
        sessions=w.num_sessions,
        duration_s=duration,
        arrival_rate_per_s=len(llm) / duration if duration > 0 else 0.0,
        input_tokens=summarize([c.input_tokens for c in llm]),
        output_tokens=summarize([c.output_tokens for c in llm]),
        calls_per_session=summarize(list(per_session.values())),
        session_duration_s=summarize([hi - lo for lo, hi in spans.values()]),
        gap_s=summarize([c.gap_s for c in w.calls if c.parents]),
        tool_duration_s=summarize([c.tool_duration_s for c in tools]),
        prefix_reuse=prefix_reuse(llm),
        models=sorted({c.model or "(default)" for c in llm}),
        read=meta_section(w, "read"),
        reconstruction=meta_section(w, "reconstruction") or None,
    )


def _fmt(d: dict[str, float], unit: str = "") -> str:
    if not d:
        return "-"
    keys = ("mean", "p50", "p90", "p99", "max")
    return "  ".join(f"{k} {d[k]:,.4g}{unit}" for k in keys)


def format_stats(s: TraceStats, source: str = "") -> str:
    """Human-readable multi-line report of :class:`TraceStats`."""
    r = s.prefix_reuse
    lines = [f"trace: {source}"] if source else []
    if s.read:
        skipped = sum(s.read.get("skipped", {}).values())
        lines.append(
            f"read: {s.read.get('files', 0)} file(s), {s.read.get('lines', 0):,} lines, "
            f"{s.read.get('records', 0):,} records -> {s.read.get('calls', 0):,} calls"
            f" ({skipped:,} skipped)"
        )
        for why, n in {**s.read.get("skipped", {}), **s.read.get("notes", {})}.items():
            lines.append(f"  {why}: {n:,}")
    lines += [
        f"calls: {s.calls:,} ({s.llm_calls:,} llm, {s.tool_calls:,} tool)   sessions: {s.sessions:,}",
        f"duration: {s.duration_s:,.1f} s   arrival rate: {s.arrival_rate_per_s:.3f} llm calls/s",
        f"models: {', '.join(s.models) or '-'}",
        f"input tokens:      {_fmt(s.input_tokens)}",
        f"output tokens:     {_fmt(s.output_tokens)}",
        f"calls per session: {_fmt(s.calls_per_session)}",
        f"session span:      {_fmt(s.session_duration_s, ' s')}",
        f"gap after parent:  {_fmt(s.gap_s, ' s')}",
        f"tool duration:     {_fmt(s.tool_duration_s, ' s')}",
        f"prefix reuse (infinite cache): {r.block_hit_ratio:.1%} of {r.blocks:,} blocks seen before; "
        f"{r.token_hit_ratio:.1%} of input tokens in a cached prefix; "
        f"{r.session_token_hit_ratio:.1%} from the same session",
    ]
    if s.reconstruction:
        rc = s.reconstruction
        tps = rc.get("turns_per_session", {})
        lines.append(
            f"sessions reconstructed from prefix chains: {rc['sessions']:,} sessions from "
            f"{rc['requests']:,} requests ({rc['multi_turn_sessions']:,} multi-turn; turns/session "
            f"mean {tps.get('mean', 0):.2f}, p90 {tps.get('p90', 0):g}, max {tps.get('max', 0):g}); "
            f"{rc['linked']:,} later turns linked, reusing {rc['reused_tokens_from_parent']:.1%} "
            f"of input tokens from their parent; {rc['clamped_gaps']:,} gaps clamped to 0 "
            f"(estimate {rc['estimate']})"
        )
    return "\n".join(lines)
