"""NVIDIA Dynamo's disaggregated router with conditional disaggregation."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import ClusterView, DisaggView, PairDecision, PairRouter, ReplicaView
from policies.registry import register
from policies.routing._pairs import best_by_kv_load, least_prefill_backlog
from sim.workload.calls import Call


@register("routing", "dynamo_disagg")
class DynamoDisagg(PairRouter):
    """Dynamo-style conditional disaggregation: prefill remotely only when it pays.

    Rule: the decode instance is the KV-aware choice (least ``overlap_weight x`` uncached
    prompt tokens + outstanding tokens).  The call is prefilled remotely when its prompt
    tokens not cached on that decode instance exceed ``max_local_prefill_length`` *and*
    fewer than ``max_prefill_queue_size`` prefills wait in the prefill queue (calls
    waiting on the prefill instances); otherwise the decode instance prefills it
    locally.  The remote prefill goes to the prefill instance with the smallest prefill
    backlog (uncached prompt tokens queued there plus the call's own).
    On a colocated cluster it routes like the KV-aware decode choice.

    Source: Dynamo's disaggregation design (docs.nvidia.com/dynamo, "Dynamo
    Disaggregation: Separating Prefill and Decode", v0.2+): the decode worker's
    disaggregated router prefills locally "if the prefill is short or the decode
    engine has a high prefix cache hit", using the prefill length after the prefix hit
    against ``max-local-prefill-length`` and the prefill queue size against
    ``max-prefill-queue-size`` (defaults 1000 tokens and 2 here, as in its examples);
    and the router docs' "Conditional Disaggregation" (``--router-conditional-disagg``),
    which keeps decode-worker KV reuse for multi-turn / agentic traffic.
    """

    def __init__(
        self,
        seed: int = 0,
        max_local_prefill_length: int = 1000,
        max_prefill_queue_size: int = 2,
        overlap_weight: float = 1.0,
    ) -> None:
        super().__init__(seed)
        self.max_local_prefill_length = max_local_prefill_length
        self.max_prefill_queue_size = max_prefill_queue_size
        self.overlap_weight = overlap_weight

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        return best_by_kv_load(call, candidates, self.overlap_weight).replica_id

    def route_pair(
        self,
        call: Call,
        prefill: Sequence[ReplicaView],
        decode: Sequence[ReplicaView],
        view: DisaggView,
    ) -> PairDecision:
        d = best_by_kv_load(call, decode, self.overlap_weight)
        uncached = call.input_tokens - d.cached_prefix_tokens(call)
        remote = [p for p in prefill if p.replica_id != d.replica_id]
        queued = sum(p.num_waiting for p in remote)
        long_prompt = uncached > self.max_local_prefill_length
        if remote and long_prompt and queued < self.max_prefill_queue_size:
            p = least_prefill_backlog(call, remote)
            return PairDecision(p.replica_id, d.replica_id)
        return PairDecision(d.replica_id, d.replica_id)
