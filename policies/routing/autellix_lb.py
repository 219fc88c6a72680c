"""Autellix's data-locality-aware load balancer (program table + least used)."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import ClusterView, ReplicaView, Router
from policies.registry import register
from sim.common.errors import PolicyError
from sim.workload.calls import Call


@register("routing", "autellix_lb")
class AutellixLB(Router):
    """Autellix load balancer: balance short calls, pin a program's long calls to one engine.

    Rule (Autellix Algorithm 2): a call whose prompt has at most ``short_tokens``
    tokens goes to the least used replica (fewest outstanding calls, ties: lowest id):
    short prompts hit the shared system prompt on any engine, so locality buys little.
    A longer call goes to its program's (session's) engine from the program table;
    a program without one (or whose engine is no longer offered) is assigned the
    least used replica, which is recorded for its later long calls.
    Parameters: ``short_tokens`` (int, 2048 prompt tokens, the paper's threshold).
    Reference: Luo et al., "Autellix", arXiv 2502.13965 (2025), Section 4.3,
    Algorithm 2.
    """

    def __init__(self, short_tokens: int = 2048, seed: int = 0) -> None:
        super().__init__(seed)
        if short_tokens < 0:
            raise PolicyError(f"autellix_lb: short_tokens must be >= 0, got {short_tokens}")
        self.short_tokens = short_tokens
        self.table: dict[str, int] = {}  # program (session) -> its engine (replica id)

    @staticmethod
    def least_used(candidates: Sequence[ReplicaView]) -> int:
        return min(candidates, key=lambda r: (r.outstanding_requests, r.replica_id)).replica_id

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        if call.input_tokens <= self.short_tokens:
            return self.least_used(candidates)
        rid = self.table.get(call.session_id)
        if rid is None or all(r.replica_id != rid for r in candidates):
            rid = self.least_used(candidates)
            self.table[call.session_id] = rid
        return rid
