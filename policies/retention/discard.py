"""Discard-and-recompute: the pre-prefix-caching vLLM baseline of InferCept."""

from __future__ import annotations

from policies.base import KVCostView, RetentionDecision, RetentionPolicy
from policies.registry import register
from sim.workload.calls import Call


@register("retention", "discard")
class Discard(RetentionPolicy):
    """Free a paused session's KV when its call ends; the next call recomputes it.

    Rule: a call with a successor in its session (intercepted by a tool call) has
    its prefix blocks freed at once, never cached; a session's last call is cached
    as plain LRU.  No parameters.
    Reference: Abhyankar et al., "InferCept" (ICML 2024), Section 3: the "Discard"
    baseline, how vLLM handled interceptions before prefix caching.
    """

    def on_call_finished(
        self, call: Call, has_successor: bool, now: float, replica: KVCostView
    ) -> RetentionDecision:
        return RetentionDecision(discard=has_successor)
