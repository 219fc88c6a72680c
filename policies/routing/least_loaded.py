"""Least loaded: the replica with the least outstanding work."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import ClusterView, ReplicaView, Router
from policies.registry import register
from policies.routing._buckets import LoadBuckets, covers_ready
from sim.common.errors import PolicyError
from sim.workload.calls import Call


@register("routing", "least_loaded")
class LeastLoaded(Router):
    """Send each call to the replica with the fewest outstanding requests (or tokens).

    Rule: minimise ``outstanding_requests`` (``metric=requests``, default) or
    ``outstanding_tokens`` (``metric=tokens``: prefill tokens still to compute plus
    output tokens still to generate); ties go to the lowest replica id.
    ``migrate`` (bool, False): move the call's cached prefix to the chosen replica
    when that is cheaper than recomputing it.
    The replicas are kept in load buckets (``policies/routing/_buckets.py``), so a call
    costs O(log n) per replica that changed since the previous call, not O(n).
    Reference: least-outstanding-requests load balancing (Envoy ``LEAST_REQUEST``).
    """

    def __init__(self, metric: str = "requests", migrate: bool = False, seed: int = 0) -> None:
        super().__init__(seed)
        self.migrate_kv = migrate
        if metric not in ("requests", "tokens"):
            raise PolicyError(
                f"least_loaded: metric must be 'requests' or 'tokens', got {metric!r}"
            )
        self.metric = metric
        self._loads: dict[str, LoadBuckets] = {}

    def _load_key(self, r: ReplicaView) -> tuple[float, tuple[int]]:
        v = r.outstanding_tokens if self.metric == "tokens" else r.outstanding_requests
        return v, (v,)

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        if not self.full_scan and covers_ready(candidates, view):
            model = candidates[0].model
            loads = self._loads.get(model)
            if loads is None:
                loads = self._loads[model] = LoadBuckets(model, self._load_key)
            loads.update(view)
            top = loads.top()
            assert top is not None  # candidates is never empty
            return loads.buckets[top[1]][0]
        if self.metric == "tokens":
            best = min(candidates, key=lambda r: (r.outstanding_tokens, r.replica_id))
        else:
            best = min(candidates, key=lambda r: (r.outstanding_requests, r.replica_id))
        return best.replica_id
