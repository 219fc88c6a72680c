"""Keep replicas warm for an idle timeout, scale from zero on demand."""

from __future__ import annotations

import math

from policies.base import Autoscaler, ClusterView
from policies.registry import register
from sim.common.errors import PolicyError


@register("autoscaling", "keep_warm")
class KeepWarm(Autoscaler):
    """Serverless keep-alive: start replicas on demand, retire them after an idle timeout.

    Rule: every ``interval_s`` seconds, per model: with no live replica and calls
    waiting, start one (scale from zero); when the outstanding calls per live
    replica exceed ``max_per_replica``, add one (up to ``max_replicas``).  A ready
    replica with no running or waiting call is idle from the first check that sees
    it so; replicas idle for at least ``idle_timeout_s`` are retired, down to
    ``min_replicas``.  Every start pays the cold start (weight load over the slowest
    link of the load path plus engine init), which the run reports.
    Parameters: ``idle_timeout_s`` (float, 60 s), ``min_replicas`` (int, 0),
    ``max_replicas`` (int, 16), ``max_per_replica`` (float, 32 calls),
    ``interval_s`` (float, 1 s).
    Reference: keep-alive of serverless LLM serving (ServerlessLLM, OSDI 2024;
    Knative scale-to-zero grace period).
    """

    def __init__(
        self,
        idle_timeout_s: float = 60.0,
        min_replicas: int = 0,
        max_replicas: int = 16,
        max_per_replica: float = 32.0,
        interval_s: float = 1.0,
    ) -> None:
        if idle_timeout_s < 0 or interval_s <= 0 or max_per_replica <= 0:
            raise PolicyError("keep_warm: idle_timeout_s >= 0, interval_s > 0, max_per_replica > 0")
        if not 0 <= min_replicas <= max_replicas or max_replicas < 1:
            raise PolicyError(
                "keep_warm: need 0 <= min_replicas <= max_replicas, max_replicas >= 1"
            )
        self.idle_timeout_s = idle_timeout_s
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.max_per_replica = max_per_replica
        self.interval_s = interval_s
        self._idle_since: dict[int, float] = {}

    def decide(self, view: ClusterView, now: float) -> dict[str, int]:
        out: dict[str, int] = {}
        for model in view.models():
            live = view.live_replicas(model)
            n = len(live)
            pending = view.pending_calls(model)
            work = sum(r.outstanding_requests for r in live) + pending
            if n == 0:
                if pending or self.min_replicas:
                    out[model] = max(1, self.min_replicas)
                continue
            if work / n > self.max_per_replica and n < self.max_replicas:
                out[model] = min(
                    self.max_replicas, max(n + 1, math.ceil(work / self.max_per_replica))
                )
                continue
            expired = 0
            for r in live:
                if r.ready and r.outstanding_requests == 0:
                    since = self._idle_since.setdefault(r.replica_id, now)
                    if now - since >= self.idle_timeout_s:
                        expired += 1
                else:
                    self._idle_since.pop(r.replica_id, None)
            if expired and n > self.min_replicas:
                out[model] = max(self.min_replicas, n - expired)
        return out
