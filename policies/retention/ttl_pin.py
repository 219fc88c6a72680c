"""Continuum: pin a session's KV cache for a time-to-live across its tool calls."""

from __future__ import annotations

from policies.base import KVCostView, RetentionDecision, RetentionPolicy
from policies.registry import register
from policies.retention._waits import WaitStats
from sim.common.errors import PolicyError
from sim.workload.calls import Call


@register("retention", "ttl_pin")
class TTLPin(RetentionPolicy):
    """Continuum TTL pinning: keep a waiting session's prefix blocks unevictable for a TTL.

    Rule: when a call that has a successor in its session finishes (the session
    goes off to a tool call), its prefix blocks are pinned for ``TTL`` seconds: LRU
    eviction skips them, and a call that needs their memory waits for the pin to
    expire.  The next call of the session re-references (and unpins) them.  After
    the TTL they are ordinary LRU entries, the oldest.  The last call of a session
    is cached as plain LRU.  ``TTL = ttl_s`` when ``ttl_s > 0``; otherwise the
    ``quantile`` of the observed tool-call waits (end of a call to arrival of the
    session's next call, last 2048 waits), ``default_ttl_s`` until ``min_samples``
    waits are seen, capped at ``max_ttl_s``.
    Parameters: ``ttl_s`` (float, 0 = from the distribution, seconds), ``quantile``
    (float, 0.9), ``default_ttl_s`` (float, 10 s), ``min_samples`` (int, 16),
    ``max_ttl_s`` (float, 300 s).
    Reference: Continuum, "Efficient and Robust Multi-Turn LLM Agent Scheduling with
    KV Cache Time-to-Live" (2025): TTL chosen from the tool-call duration distribution.
    """

    def __init__(
        self,
        ttl_s: float = 0.0,
        quantile: float = 0.9,
        default_ttl_s: float = 10.0,
        min_samples: int = 16,
        max_ttl_s: float = 300.0,
    ) -> None:
        if ttl_s < 0 or not 0 < quantile <= 1 or default_ttl_s < 0 or max_ttl_s <= 0:
            raise PolicyError(
                "ttl_pin: ttl_s >= 0, 0 < quantile <= 1, default_ttl_s >= 0, max_ttl_s > 0"
            )
        self.ttl_s = ttl_s
        self.quantile = quantile
        self.default_ttl_s = default_ttl_s
        self.min_samples = min_samples
        self.max_ttl_s = max_ttl_s
        self.waits = WaitStats()

    def ttl(self) -> float:
        """The TTL a finishing call gets now (seconds)."""
        if self.ttl_s > 0:
            return self.ttl_s
        if len(self.waits) < self.min_samples:
            return min(self.default_ttl_s, self.max_ttl_s)
        return min(self.waits.quantile(self.quantile), self.max_ttl_s)

    def on_call_arrived(self, call: Call, now: float) -> None:
        self.waits.arrived(call, now)

    def on_call_finished(
        self, call: Call, has_successor: bool, now: float, replica: KVCostView
    ) -> RetentionDecision:
        self.waits.finished(call, now)
        if not has_successor:
            return RetentionDecision()
        return RetentionDecision(pin_s=self.ttl())
