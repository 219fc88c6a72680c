"""Round robin over the ready replicas of the call's model."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import ClusterView, ReplicaView, Router
from policies.registry import register
from sim.workload.calls import Call


@register("routing", "round_robin")
class RoundRobin(Router):
    """Cycle through the ready replicas of each model in replica-id order.

    Rule: the i-th call of a model goes to ready replica ``i mod n``.  No parameters.
    Reference: the default of most load balancers (e.g. Kubernetes IPVS ``rr``).
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self._next: dict[str, int] = {}

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        key = candidates[0].model
        i = self._next.get(key, 0)
        self._next[key] = i + 1
        return candidates[i % len(candidates)].replica_id
