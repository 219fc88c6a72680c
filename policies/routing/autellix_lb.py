"""Autellix's data-locality-aware load balancer: short calls stay with their program."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import ClusterView, ReplicaView, Router
from policies.registry import register
from sim.common.errors import PolicyError
from sim.workload.calls import Call


@register("routing", "autellix_lb")
class AutellixLB(Router):
    """Autellix load balancer: short calls go where their program ran, long ones spread.

    Rule: a program is an agent session.  A call whose prompt is at most
    ``short_tokens`` tokens goes to the replica that served its program's last call
    (its KV, and the cached context of the program, are there), if that replica is
    still a candidate.  Otherwise (a long call, a program's first call, or its replica
    is gone) the call goes to the least-loaded replica: fewest outstanding requests,
    then fewest outstanding tokens, then lowest id.  Either way the program is then
    bound to the chosen replica.  The idea: a short call's latency is dominated by
    recomputing its program's context if it lands elsewhere, while a long call's
    prefill dominates anyway and load balance matters more.
    Parameters: ``short_tokens`` (int, 2048 tokens).
    Reference: Luo et al., "Autellix: An Efficient Serving Engine for LLM Agents as
    General Programs" (arXiv 2502.13965), the data-locality-aware load balancer
    (the 2,048-token threshold between short and long calls is as we read the paper).
    """

    def __init__(self, short_tokens: int = 2048, seed: int = 0) -> None:
        super().__init__(seed)
        if short_tokens < 0:
            raise PolicyError(f"autellix_lb: short_tokens must be >= 0, got {short_tokens}")
        self.short_tokens = short_tokens
        self.home: dict[str, int] = {}  # program (session) -> replica of its last call

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        if call.input_tokens <= self.short_tokens:
            home = self.home.get(call.session_id)
            if home is not None and any(r.replica_id == home for r in candidates):
                return home
        best = min(
            candidates, key=lambda r: (r.outstanding_requests, r.outstanding_tokens, r.replica_id)
        )
        self.home[call.session_id] = best.replica_id
        return best.replica_id
