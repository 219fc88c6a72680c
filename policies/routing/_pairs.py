"""Shared pieces of the disaggregated (pair) routers: the KV-aware decode choice."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import ReplicaView
from sim.workload.calls import Call


def kv_load_cost(call: Call, r: ReplicaView, overlap_weight: float) -> float:
    """A KV-aware router's cost of sending ``call`` to ``r`` (tokens): the prompt
    tokens it would prefill, weighted, plus the tokens it already has to process."""
    new = max(0, call.input_tokens - r.cached_prefix_tokens(call))
    return overlap_weight * new + r.outstanding_tokens


def best_by_kv_load(call: Call, reps: Sequence[ReplicaView], overlap_weight: float) -> ReplicaView:
    """The replica of least :func:`kv_load_cost` (ties: lowest id)."""
    return min(reps, key=lambda r: (kv_load_cost(call, r, overlap_weight), r.replica_id))


def least_prefill_backlog(call: Call, reps: Sequence[ReplicaView]) -> ReplicaView:
    """The prefill instance with the fewest prompt tokens to compute, counting the
    call's own uncached ones (ties: lowest id)."""
    return min(
        reps,
        key=lambda r: (
            r.pending_prefill_tokens + call.input_tokens - r.cached_prefix_tokens(call),
            r.replica_id,
        ),
    )
