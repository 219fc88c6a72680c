"""Live session migration to another replica during a fault's notice window."""

from __future__ import annotations

from policies.persistence.base import (
    FaultInfo,
    KVCopy,
    LostKV,
    PersistenceContext,
    PersistencePolicy,
)
from policies.registry import register


@register("persistence", "migrate")
class Migrate(PersistencePolicy):
    """Move live KV to a peer replica while the notice lasts (spot, planned restarts).

    Rule: with ``notice_s`` > 0 the replica's live KV (calls in flight, then idle
    sessions) is copied, one piece after another, over the GPU-GPU topology path to
    the first GPU of a ready peer replica of the same model; pieces whose copy ends
    within the notice survive there (and are reloaded from the peer over the topology
    if the call lands elsewhere).  Crashes (no notice) lose everything.  No
    parameters.  Reference: Llumnix live migration (OSDI 2024).
    """

    def save(
        self, lost: list[LostKV], fault: FaultInfo, ctx: PersistenceContext
    ) -> list[KVCopy | None]:
        out: list[KVCopy | None] = [None] * len(lost)
        peer = ctx.peer_gpu
        if fault.notice_s <= 0 or peer is None:
            return out
        elapsed = 0.0
        for i, item in enumerate(lost):
            if item.live_tokens <= 0:
                continue
            t = ctx.transfer_s(item.live_tokens, item.gpu, peer)
            if elapsed + t > fault.notice_s:
                continue  # does not fit in what is left of the notice
            elapsed += t
            out[i] = KVCopy(peer, item.live_tokens, fault.now_s + elapsed)
        return out
