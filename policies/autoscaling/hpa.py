"""The Kubernetes Horizontal Pod Autoscaler (``autoscaling/v2``), on GPU utilisation or queue.

The HPA controller runs every ``--horizontal-pod-autoscaler-sync-period`` (15 s by
default) and computes ``desiredReplicas = ceil(currentReplicas x currentMetricValue /
desiredMetricValue)``, skipping the change while the ratio is within the tolerance
(``--horizontal-pod-autoscaler-tolerance``, 0.1).  Default behaviour (``spec.behavior``
unset): scale-up has no stabilisation window and is limited to ``max(+100 %, +4 pods)``
per 15 s; scale-down uses the highest recommendation of the last 300 s
(``--horizontal-pod-autoscaler-downscale-stabilization``).  The result is clamped to
``[minReplicas, maxReplicas]``.  Source: Kubernetes documentation, "Horizontal Pod
Autoscaling" (algorithm details, support for configurable scaling behavior) and
``pkg/controller/podautoscaler`` (``replica_calculator.go``, ``horizontal.go``).

Metrics (what an inference deployment typically exports):

- ``gpu_util``: a per-pod metric with a utilisation target, like DCGM's
  ``DCGM_FI_DEV_GPU_UTIL`` (fraction of time a kernel ran) through a Prometheus adapter.
  A replica's value is the fraction of the last sync period its engine was iterating
  (``busy_s``; busy time is booked when an iteration is scheduled, so a window can be
  off by one iteration; values are clipped to [0, 1]).  As in
  ``GetResourceReplicas``: the ratio uses the *ready* pods; when it asks to scale up,
  pods still starting count as 0 % and the ratio is recomputed; if that reverses the
  direction or falls inside the tolerance, nothing changes.  A per-pod metric cannot
  scale from zero.
- ``queue``: an external metric with an ``AverageValue`` target: the total number of
  calls waiting (queued in the engines of live replicas plus calls held at the
  gateway because no replica is ready), divided by the target per replica, as in
  ``GetExternalPerPodMetricReplicas`` (``desired = ceil(total / target)``, tolerance
  on ``total / (target x current)``).  With ``min_replicas=0`` this is scale-to-zero
  (alpha feature gate ``HPAScaleToZero``).

A new pod pays the start-up phases of its deployment (scheduling, image pull, weight
load, engine warm-up; ``sim.cluster.config.Deployment``) before it is ready.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from policies.base import Autoscaler, ClusterView, ReplicaView
from policies.registry import register
from sim.common.errors import PolicyError

METRICS = ("gpu_util", "queue")
#: target used when ``target`` is 0: GPU busy fraction, or waiting calls per replica
DEFAULT_TARGETS = {"gpu_util": 0.8, "queue": 10.0}


@register("autoscaling", "hpa")
class HPA(Autoscaler):
    """Kubernetes HPA: desired = ceil(current x metric / target), tolerance, 300 s down-window.

    Rule (every ``sync_period_s``, per model): the recommendation is
    ``ceil(current x metric / target)`` (unchanged within ``tolerance``); scale-up is
    limited to ``max(current x (1 + scale_up_percent/100), current + scale_up_pods)``
    per sync; scale-down takes the highest recommendation of the last
    ``downscale_window_s``; the result is clamped to ``[min_replicas, max_replicas]``.
    Parameters: ``metric`` (``gpu_util`` | ``queue``), ``target`` (0: 0.8 busy fraction
    for gpu_util, 10 waiting calls per replica for queue), ``min_replicas`` (1),
    ``max_replicas`` (0: no limit but the GPUs), ``sync_period_s`` (15),
    ``tolerance`` (0.1), ``downscale_window_s`` (300), ``scale_up_pods`` (4),
    ``scale_up_percent`` (100).
    Reference: Kubernetes docs, "Horizontal Pod Autoscaling" (algorithm details).
    """

    def __init__(
        self,
        metric: str = "gpu_util",
        target: float = 0.0,
        min_replicas: int = 1,
        max_replicas: int = 0,
        sync_period_s: float = 15.0,
        tolerance: float = 0.1,
        downscale_window_s: float = 300.0,
        scale_up_pods: int = 4,
        scale_up_percent: float = 100.0,
    ) -> None:
        if metric not in METRICS:
            raise PolicyError(f"hpa: metric must be 'gpu_util' or 'queue', got {metric!r}")
        if target < 0 or sync_period_s <= 0 or tolerance < 0 or downscale_window_s < 0:
            raise PolicyError(
                "hpa: target, tolerance and downscale_window_s must be >= 0 and sync_period_s > 0"
            )
        if min_replicas < 0 or max_replicas < 0 or (max_replicas and max_replicas < min_replicas):
            raise PolicyError("hpa: need 0 <= min_replicas <= max_replicas (0: no maximum)")
        self.metric = metric
        self.target = target or DEFAULT_TARGETS[metric]
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.interval_s = sync_period_s
        self.tolerance = tolerance
        self.downscale_window_s = downscale_window_s
        self.scale_up_pods = scale_up_pods
        self.scale_up_percent = scale_up_percent
        self._recs: dict[str, list[tuple[float, int]]] = {}
        self._busy: dict[int, tuple[float, float]] = {}  # replica -> (time, busy_s) last seen

    # ---- metrics -------------------------------------------------------------------
    def _utilisation(self, rep: ReplicaView, now: float) -> float:
        """Busy fraction of ``rep`` since the last sync (every live replica is sampled at
        every sync, so a replica that became ready since counts its start-up as idle)."""
        busy = rep.busy_s
        t0, b0 = self._busy.get(rep.replica_id, (max(0.0, now - self.interval_s), 0.0))
        self._busy[rep.replica_id] = (now, busy)
        if now <= t0:
            return 0.0
        return min(1.0, max(0.0, (busy - b0) / (now - t0)))

    def _util_replicas(
        self, ready: Sequence[ReplicaView], live: Sequence[ReplicaView], now: float
    ) -> int:
        """``GetResourceReplicas`` for a utilisation target (no missing metrics)."""
        current = len(live)
        ready_ids = {r.replica_id for r in ready}
        util = {
            r.replica_id: self._utilisation(r, now)
            for r in {id(r): r for r in (*live, *ready)}.values()
        }
        values = [util[r.replica_id] for r in ready]
        unready = sum(1 for r in live if r.replica_id not in ready_ids)
        if not values:
            return current
        ratio = sum(values) / len(values) / self.target
        if not (unready and ratio > 1):
            if abs(1.0 - ratio) <= self.tolerance:
                return current
            return math.ceil(ratio * len(values))
        # scale-up with pods still starting: count them at 0 % and recompute
        new_ratio = sum(values) / (len(values) + unready) / self.target
        if abs(1.0 - new_ratio) <= self.tolerance or new_ratio < 1:
            return current
        desired = math.ceil(new_ratio * (len(values) + unready))
        return max(desired, current)

    def _queue_replicas(self, view: ClusterView, model: str, live: Sequence[ReplicaView]) -> int:
        """``GetExternalPerPodMetricReplicas`` with an ``AverageValue`` target."""
        current = len(live)
        total = view.pending_calls(model) + sum(r.num_waiting for r in live)
        if current and abs(total / (self.target * current) - 1.0) <= self.tolerance:
            return current
        return math.ceil(total / self.target)

    # ---- the controller ------------------------------------------------------------
    def decide(self, view: ClusterView, now: float) -> dict[str, int]:
        out: dict[str, int] = {}
        for model in view.models():
            live = view.live_replicas(model)
            current = len(live)
            if self.metric == "queue":
                raw = self._queue_replicas(view, model, live)
            elif current == 0:
                raw = 0  # a per-pod metric has no samples: the HPA cannot scale from zero
            else:
                raw = self._util_replicas(view.ready_replicas(model), live, now)
            out[model] = self._normalize(model, current, raw, now)
        return out

    def _normalize(self, model: str, current: int, raw: int, now: float) -> int:
        """Stabilisation window, scale-up rate limit and min/max (default behavior)."""
        recs = [(t, r) for t, r in self._recs.get(model, []) if t > now - self.downscale_window_s]
        down = max([raw] + [r for _, r in recs])  # highest recommendation in the window
        desired = min(max(current, raw), down)  # scale-up window 0: up = raw
        recs.append((now, raw))
        self._recs[model] = recs
        limit = max(
            math.floor(current * (1.0 + self.scale_up_percent / 100.0)),
            current + self.scale_up_pods,
        )
        desired = min(desired, limit)
        if self.max_replicas:
            desired = min(desired, self.max_replicas)
        return max(desired, self.min_replicas)
