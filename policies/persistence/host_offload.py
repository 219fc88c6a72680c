"""KV written behind to the node's host DRAM: survives a pod restart, not the node."""

from __future__ import annotations

from policies.persistence.base import (
    FaultInfo,
    KVCopy,
    LostKV,
    PersistenceContext,
    PersistencePolicy,
    snapshot_copy,
)
from policies.registry import register


@register("persistence", "host_offload")
class HostOffload(PersistencePolicy):
    """Snapshot KV to host DRAM over PCIe; reload it after a GPU failure or pod restart.

    Rule: a call's prompt KV is copied to its node's host DRAM (``n{node}/cpu0``) when
    its prefill ends, and a session's context when its call ends (write-behind over
    the GPU-host path).  Copies whose write finished before the fault survive GPU
    failures and pod restarts and are reloaded over the host-GPU path (PCIe on the
    same node, the network from another node); a node failure or spot preemption
    loses host DRAM too.  No parameters.  Reference: LMCache CPU offloading, vLLM
    swap space.
    """

    def save(
        self, lost: list[LostKV], fault: FaultInfo, ctx: PersistenceContext
    ) -> list[KVCopy | None]:
        if fault.node_lost:
            return [None] * len(lost)
        return [snapshot_copy(item, fault, ctx, f"n{item.node}/cpu0") for item in lost]
