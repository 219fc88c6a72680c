"""Scale each model on its pending work (a queue-length horizontal autoscaler)."""

from __future__ import annotations

import math

from policies.base import Autoscaler, ClusterView
from policies.registry import register
from sim.common.errors import PolicyError


@register("autoscaling", "queue_depth")
class QueueDepth(Autoscaler):
    """Size each model to its outstanding calls: ceil(work / target_per_replica).

    Rule: every ``interval_s`` seconds, for each deployed model, ``work`` = running
    plus waiting calls on its live replicas plus calls the cluster holds because no
    replica is ready.  ``desired = ceil(work / target_per_replica)`` clamped to
    ``[min_replicas, max_replicas]``.  A scale-up is applied only if the model's last
    change is at least ``up_cooldown_s`` old, a scale-down only if it is at least
    ``down_cooldown_s`` old (stabilisation windows, as the Kubernetes HPA).  New
    replicas pay a cold start; retired ones drain first.
    Parameters: ``target_per_replica`` (float, 16 calls), ``min_replicas`` (int, 1),
    ``max_replicas`` (int, 16), ``interval_s`` (float, 10 s), ``up_cooldown_s``
    (float, 30 s), ``down_cooldown_s`` (float, 120 s).
    Reference: Kubernetes Horizontal Pod Autoscaler on a queue-length metric
    (desired = ceil(current x metric / target)); KServe/Knative concurrency scaling.
    """

    def __init__(
        self,
        target_per_replica: float = 16.0,
        min_replicas: int = 1,
        max_replicas: int = 16,
        interval_s: float = 10.0,
        up_cooldown_s: float = 30.0,
        down_cooldown_s: float = 120.0,
    ) -> None:
        if target_per_replica <= 0 or interval_s <= 0:
            raise PolicyError("queue_depth: target_per_replica and interval_s must be > 0")
        if not 0 <= min_replicas <= max_replicas:
            raise PolicyError("queue_depth: need 0 <= min_replicas <= max_replicas")
        self.target_per_replica = target_per_replica
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.interval_s = interval_s
        self.up_cooldown_s = up_cooldown_s
        self.down_cooldown_s = down_cooldown_s
        self._last_change: dict[str, float] = {}

    def decide(self, view: ClusterView, now: float) -> dict[str, int]:
        out: dict[str, int] = {}
        for model in view.models():
            live = view.live_replicas(model)
            work = sum(r.outstanding_requests for r in live) + view.pending_calls(model)
            want = math.ceil(work / self.target_per_replica)
            want = max(self.min_replicas, min(self.max_replicas, want))
            since = now - self._last_change.get(model, -math.inf)
            n = len(live)
            if (want > n and since >= self.up_cooldown_s) or (
                want < n and since >= self.down_cooldown_s
            ):
                out[model] = want
                self._last_change[model] = now
        return out
