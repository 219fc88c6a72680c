"""llm-d's selective prefill/decode disaggregation (the P/D profile handler's threshold)."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import ClusterView, DisaggView, PairDecision, PairRouter, ReplicaView
from policies.registry import register
from policies.routing._pairs import least_prefill_backlog
from sim.workload.calls import Call


def _score(call: Call, r: ReplicaView, prefix_weight: float, load_weight: float) -> float:
    """llm-d-style scorer sum (higher is better): the cached fraction of the prompt,
    and the load as 1 - waiting / (waiting + 1) plus free KV."""
    hit = r.cached_prefix_tokens(call) / max(1, call.input_tokens)
    queue = 1.0 - r.num_waiting / (r.num_waiting + 1.0)
    kv = 1.0 - r.kv_used_blocks / max(1, r.kv_capacity_blocks)
    return prefix_weight * hit + load_weight * (queue + kv) / 2


@register("routing", "llmd_pd")
class LlmdPD(PairRouter):
    """llm-d selective P/D: disaggregate only when the decode pod's uncached suffix is long.

    Rule: the decode pod is the best by the decode profile's scorers (prefix-cache hit
    fraction x ``prefix_weight`` + load x ``load_weight``: queue and KV-cache
    utilisation), ties to the lowest id.  If the prompt tokens not cached on that pod
    are fewer than ``threshold``, the decode pod serves the call alone (decode-only);
    otherwise the prefill profile runs: the prefill pod with the smallest prefill
    backlog (counting its own cached prefix) prefills it and the KV goes to the decode
    pod.  ``threshold = 0`` always disaggregates.  Colocated: the decode profile alone.

    Source: llm-d inference scheduler (github.com/llm-d/llm-d-inference-scheduler),
    ``docs/disagg_pd.md`` and the P/D profile handler: the EPP always picks the decode
    pod and adds a prefill pod only when the non-cached suffix of the prompt on that
    pod reaches the ``threshold`` (README-PD-SLO: "Non-cached suffix < pdThreshold"
    -> decode-only); llm-d guides "P/D Disaggregation" (llm-d.ai) for the roles.
    """

    def __init__(
        self,
        seed: int = 0,
        threshold: int = 512,
        prefix_weight: float = 2.0,
        load_weight: float = 1.0,
    ) -> None:
        super().__init__(seed)
        self.threshold = threshold
        self.prefix_weight = prefix_weight
        self.load_weight = load_weight

    def _decode(self, call: Call, reps: Sequence[ReplicaView]) -> ReplicaView:
        return max(
            reps,
            key=lambda r: (_score(call, r, self.prefix_weight, self.load_weight), -r.replica_id),
        )

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        return self._decode(call, candidates).replica_id

    def route_pair(
        self,
        call: Call,
        prefill: Sequence[ReplicaView],
        decode: Sequence[ReplicaView],
        view: DisaggView,
    ) -> PairDecision:
        d = self._decode(call, decode)
        suffix = call.input_tokens - d.cached_prefix_tokens(call)
        remote = [p for p in prefill if p.replica_id != d.replica_id]
        if suffix < self.threshold or not remote:
            return PairDecision(d.replica_id, d.replica_id)
        return PairDecision(least_prefill_backlog(call, remote).replica_id, d.replica_id)
