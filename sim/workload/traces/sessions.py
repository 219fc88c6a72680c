"""Session reconstruction for traces without session ids, from prefix-block chains.

A later turn of a conversation (or agent loop) re-sends the whole earlier prompt plus
the earlier answer and new input, so its prefix blocks *extend* the earlier request's
full blocks.  With chain hashes (hash ``i`` identifies the first ``i + 1`` blocks) the
last full-block hash of a request names its whole block path, so the prefix tree is a
dict from hash to the requests whose full-block path ends there.

Rules:

* request B is a later turn of an earlier request A (arrival strictly before B) when
  A's full-block path is a prefix of B's;
* when several earlier requests match, the longest match wins (ties: the latest);
* a path ending on a *shared* node, one that branches into at least ``shared_fanout``
  different next blocks across the trace (a system prompt every conversation starts
  with), is no evidence of a conversation and never matches;
* B joins A's session with A as its single parent, and its think/tool gap is
  ``B.arrival - (A.arrival + estimate(A))`` clamped at 0 (clamps are counted).

Memory is linear in the number of distinct blocks, as any prefix tree must be.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from sim.workload.calls import Call
from sim.workload.traces.estimate import ServiceEstimate

#: Default branching factor from which a prefix-tree node counts as a shared prompt.
SHARED_FANOUT = 16


@dataclass
class ReconstructionReport:
    """What session reconstruction found.

    Attributes:
        requests: requests examined.
        sessions: sessions formed.
        turns_per_session: mean / p50 / p90 / max requests per session.
        multi_turn_sessions: sessions with more than one request.
        linked: requests attached to an earlier request.
        shared_nodes: prefix-tree nodes treated as shared prompts.
        reused_tokens_from_parent: share of all input tokens covered by the parent's
            full blocks (the prefix reuse between turns that was found).
        clamped_gaps: gaps that came out negative under the estimate and were set to 0.
        estimate: the service-time estimate used for gaps.
    """

    requests: int = 0
    sessions: int = 0
    turns_per_session: dict[str, float] = field(default_factory=dict)
    multi_turn_sessions: int = 0
    linked: int = 0
    shared_nodes: int = 0
    reused_tokens_from_parent: float = 0.0
    clamped_gaps: int = 0
    estimate: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "sessions": self.sessions,
            "turns_per_session": dict(self.turns_per_session),
            "multi_turn_sessions": self.multi_turn_sessions,
            "linked": self.linked,
            "shared_nodes": self.shared_nodes,
            "reused_tokens_from_parent": self.reused_tokens_from_parent,
            "clamped_gaps": self.clamped_gaps,
            "estimate": dict(self.estimate),
        }


def _shared_nodes(calls: Sequence[Call], shared_fanout: int) -> set[int]:
    edges: set[tuple[int, int]] = set()
    for c in calls:
        h = c.prefix_hashes
        edges.update(zip(h, h[1:], strict=False))
    fanout = Counter(a for a, _ in edges)
    return {n for n, k in fanout.items() if k >= shared_fanout}


def reconstruct_sessions(
    calls: Sequence[Call],
    est: ServiceEstimate | None = None,
    shared_fanout: int = SHARED_FANOUT,
    session_prefix: str = "s",
) -> ReconstructionReport:
    """Group independent LLM calls, given in arrival order, into sessions, in place.

    Sets each call's ``session_id`` (``f"{session_prefix}{k}"``, numbered by first
    arrival), ``parents`` and ``gap_s``; the order stays valid (parents arrive first).
    """
    est = est or ServiceEstimate()
    shared = _shared_nodes(calls, shared_fanout)
    ends: dict[int, list[int]] = {}
    session_of: list[int] = []
    sizes: list[int] = []
    rep = ReconstructionReport(
        requests=len(calls), shared_nodes=len(shared), estimate=est.as_dict()
    )
    reused = total = 0
    for i, c in enumerate(calls):
        h = c.prefix_hashes
        parent = -1
        depth = 0
        for m in range(len(h), 0, -1):
            node = h[m - 1]
            if node in shared:
                break
            for j in reversed(ends.get(node, ())):
                if calls[j].issue_time_s < c.issue_time_s:
                    parent, depth = j, m
                    break
            if parent >= 0:
                break
        total += c.input_tokens
        if parent < 0:
            session_of.append(len(sizes))
            sizes.append(1)
            c.parents, c.gap_s = (), 0.0
        else:
            p = calls[parent]
            raw_gap = c.issue_time_s - (p.issue_time_s + est.seconds(p.output_tokens))
            if raw_gap < 0:
                rep.clamped_gaps += 1
            session_of.append(session_of[parent])
            sizes[session_of[parent]] += 1
            rep.linked += 1
            reused += depth * c.block_size
            c.parents, c.gap_s = (p.call_id,), max(0.0, raw_gap)
        c.session_id = f"{session_prefix}{session_of[-1]}"
        if h:
            ends.setdefault(h[-1], []).append(i)
    rep.sessions = len(sizes)
    rep.multi_turn_sessions = sum(1 for n in sizes if n > 1)
    if sizes:
        srt = sorted(sizes)
        rep.turns_per_session = {
            "mean": statistics.fmean(srt),
            "p50": float(srt[len(srt) // 2]),
            "p90": float(srt[min(len(srt) - 1, int(0.9 * len(srt)))]),
            "max": float(srt[-1]),
        }
    rep.reused_tokens_from_parent = reused / total if total else 0.0
    return rep
