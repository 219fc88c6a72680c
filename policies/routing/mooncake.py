"""Mooncake's Conductor: KV-centric (prefill, decode) selection with early rejection."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import ClusterView, DisaggView, PairDecision, PairRouter, ReplicaView
from policies.registry import register
from policies.routing._pairs import least_prefill_backlog
from sim.workload.calls import Call


@register("routing", "mooncake")
class MooncakeConductor(PairRouter):
    """Mooncake Conductor-style KV-centric scheduling with prediction-based early rejection.

    Rule: for every prefill instance, predict the call's TTFT as its queue (the time to
    prefill the prompt tokens already waiting there) + the time to prefill the call's
    prompt tokens it does not cache + the KV transfer to the decode instance; pick the
    least.  The decode instance is the least loaded (fewest running + waiting calls)
    among those with room for the call's KV whose predicted TPOT (one decode step with
    one more sequence) meets ``tpot_slo``.  The call is rejected at once (it fails with
    reason ``rejected_overload``, using no GPU) when the best predicted TTFT exceeds
    ``ttft_slo`` or no decode instance meets ``tpot_slo``, if ``reject`` is on.
    Colocated: the instance of least predicted TTFT.

    Source: Qin et al., "Mooncake: A KVCache-centric Disaggregated Architecture for LLM
    Serving" (FAST'25, arXiv:2407.00079), section 5 (Conductor: prefill instance by
    prefix-cache reuse and queueing time, decode instance by load and the TBT SLO) and
    section 7 (early rejection from predicted load under overload).
    """

    def __init__(
        self,
        seed: int = 0,
        ttft_slo: float = 30.0,
        tpot_slo: float = 0.1,
        reject: bool = True,
    ) -> None:
        super().__init__(seed)
        self.ttft_slo = ttft_slo
        self.tpot_slo = tpot_slo
        self.reject = reject

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        # without prefill times in a plain view: least prefill backlog after cache reuse
        return least_prefill_backlog(call, candidates).replica_id

    def route_pair(
        self,
        call: Call,
        prefill: Sequence[ReplicaView],
        decode: Sequence[ReplicaView],
        view: DisaggView,
    ) -> PairDecision:
        need = -(-(call.input_tokens + 1) // max(1, decode[0].block_size))
        roomy = [d for d in decode if view.decode_free_blocks(d) >= need] or list(decode)
        ok = []
        for d in roomy:
            ctx = d.outstanding_tokens + call.input_tokens
            if view.decode_time_s(d, d.num_running + 1, ctx) <= self.tpot_slo:
                ok.append(d)
        pool = ok or roomy
        d = min(pool, key=lambda r: (r.outstanding_requests, r.outstanding_tokens, r.replica_id))
        best, best_ttft = d, float("inf")
        for p in prefill or [d]:
            uncached = call.input_tokens - p.cached_prefix_tokens(call)
            t = view.prefill_time_s(p, p.pending_prefill_tokens) + view.prefill_time_s(
                p, max(1, uncached)
            )
            if p.replica_id != d.replica_id:
                t += view.transfer_time_s(call, p, d)
            if t < best_ttft:
                best, best_ttft = p, t
        if self.reject and (best_ttft > self.ttft_slo or not ok):
            return PairDecision(best.replica_id, d.replica_id, reject=True)
        return PairDecision(best.replica_id, d.replica_id)
