"""KV snapshots in a remote KV store reachable over the network (Mooncake/LMCache style)."""

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

STORE = "net/storage"


@register("persistence", "remote_store")
class RemoteStore(PersistencePolicy):
    """Snapshot KV to a remote store over the network; any replica can reload it.

    Rule: a call's prompt KV is written to the store (topology vertex
    ``net/storage``) when its prefill ends, a session's context when its call ends,
    each write priced over the GPU-store network path.  Snapshots whose write
    finished before the fault survive every fault (node failures included) and are
    reloaded over the store-GPU path.  Write bandwidth contention is not modelled.
    No parameters.  Reference: Mooncake Store, LMCache remote backends.
    """

    def save(
        self, lost: list[LostKV], fault: FaultInfo, ctx: PersistenceContext
    ) -> list[KVCopy | None]:
        return [snapshot_copy(item, fault, ctx, STORE) for item in lost]
