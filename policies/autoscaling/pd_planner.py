"""Dynamo-planner-like prefill/decode rebalancing for disaggregated pools."""

from __future__ import annotations

import numpy as np

from policies.base import PoolPlanner, PoolView
from policies.registry import register


@register("autoscaling", "pd_planner")
class PDPlanner(PoolPlanner):
    """Move one instance between the prefill and decode pools when one objective fails.

    Rule: every ``interval_s`` seconds, over the pooled calls that completed in the last
    ``interval_s``: when TTFT p90 exceeds ``ttft_slo`` while TPOT p90 is within
    ``headroom x tpot_slo``, the least loaded decode instance becomes a prefill
    instance; when TPOT p90 exceeds ``tpot_slo`` while TTFT p90 is within ``headroom x
    ttft_slo``, the least loaded prefill instance becomes a decode instance.  Each role
    keeps at least ``min_per_role`` instances; at most one move per interval, and none
    with fewer than ``min_calls`` observations.  The GPU count never changes; a moved
    instance drains and restarts (scheduling, weight load, engine warm-up: the cluster's
    cold start).  On a colocated cluster it changes nothing.

    Source: NVIDIA Dynamo's Planner (docs.nvidia.com/dynamo, "Planner"): it watches
    TTFT and ITL against their targets and adjusts the prefill and decode worker counts
    within a GPU budget, each change paying the worker start-up; the load-based planner
    scales prefill on queueing/TTFT and decode on KV load/ITL.
    """

    def __init__(
        self,
        interval_s: float = 60.0,
        ttft_slo: float = 2.0,
        tpot_slo: float = 0.05,
        headroom: float = 0.8,
        min_per_role: int = 1,
        min_calls: int = 10,
    ) -> None:
        self.interval_s = interval_s
        self.ttft_slo = ttft_slo
        self.tpot_slo = tpot_slo
        self.headroom = headroom
        self.min_per_role = min_per_role
        self.min_calls = min_calls

    def plan(self, view: PoolView, now: float) -> dict[int, str]:
        ttft, tpot = view.recent_latency(now - self.interval_s)
        if len(ttft) < self.min_calls:
            return {}
        t90 = float(np.percentile(ttft, 90))
        p90 = float(np.percentile(tpot, 90)) if tpot else 0.0
        roles = view.roles()
        reps = {r.replica_id: r for r in view.ready_replicas()}
        by_role = {
            role: [reps[i] for i, x in sorted(roles.items()) if x == role and i in reps]
            for role in ("prefill", "decode")
        }
        if t90 > self.ttft_slo and p90 <= self.headroom * self.tpot_slo:
            src, dst = "decode", "prefill"
        elif p90 > self.tpot_slo and t90 <= self.headroom * self.ttft_slo:
            src, dst = "prefill", "decode"
        else:
            return {}
        if len(by_role[src]) <= self.min_per_role:
            return {}
        r = min(by_role[src], key=lambda r: (r.outstanding_tokens, r.replica_id))
        return {r.replica_id: dst}
