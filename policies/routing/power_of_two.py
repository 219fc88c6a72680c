"""Power of two choices: sample two replicas, keep the less loaded."""

from __future__ import annotations

import random
from collections.abc import Sequence

from policies.base import ClusterView, ReplicaView, Router
from policies.registry import register
from sim.common.errors import PolicyError
from sim.workload.calls import Call


@register("routing", "power_of_two")
class PowerOfTwo(Router):
    """Sample two distinct ready replicas at random; send the call to the less loaded.

    Rule: draw two replicas uniformly without replacement (``random.Random(seed)``);
    pick the one with fewer ``outstanding_requests`` (``metric=requests``, default)
    or ``outstanding_tokens`` (``metric=tokens``); a tie goes to the first drawn.
    With one replica it is that replica.
    Parameters: ``metric`` (``requests`` | ``tokens``), ``migrate`` (bool, False: move
    the cached prefix to the chosen replica when cheaper than recompute).
    Reference: Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing",
    IEEE TPDS 2001.
    """

    def __init__(self, metric: str = "requests", migrate: bool = False, seed: int = 0) -> None:
        super().__init__(seed)
        if metric not in ("requests", "tokens"):
            raise PolicyError(
                f"power_of_two: metric must be 'requests' or 'tokens', got {metric!r}"
            )
        self.metric = metric
        self.migrate_kv = migrate
        self._rng = random.Random(seed)

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        if len(candidates) == 1:
            return candidates[0].replica_id
        a, b = self._rng.sample(range(len(candidates)), 2)
        ra, rb = candidates[a], candidates[b]
        if self.metric == "tokens":
            return rb.replica_id if rb.outstanding_tokens < ra.outstanding_tokens else ra.replica_id
        return rb.replica_id if rb.outstanding_requests < ra.outstanding_requests else ra.replica_id
