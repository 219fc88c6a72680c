"""Session-state persistence under faults: what KV survives a lost replica, and where.

When a replica is lost (GPU or node failure, pod restart, spot preemption), its KV
cache is gone.  A persistence policy decides, for each piece of lost KV, whether a
copy survives and on which topology vertex it lives afterwards; the cluster then
reloads that copy onto whichever replica serves the call next, priced with
``sim.costmodel.base.kv_transfer_time`` over the topology path (the policies never touch
the engine).  Pieces of lost KV are the context of calls in flight on the replica
and the cached context of sessions whose last call finished there.

Units: seconds, tokens, bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sim.costmodel.base import kv_transfer_time
from sim.specs.topology import Path


@dataclass(frozen=True, slots=True)
class FaultInfo:
    """The fault that took a replica down.

    Attributes:
        kind: ``gpu``, ``node``, ``replica_restart`` or ``spot``.
        now_s: when the replica stopped serving.
        notice_s: warning before the hardware disappears (spot preemption, planned
            restart); 0 for crashes.
        node_lost: the whole node (host DRAM included) is gone.
    """

    kind: str
    now_s: float
    notice_s: float
    node_lost: bool


@dataclass(frozen=True, slots=True)
class LostKV:
    """KV that was on the lost replica.

    Attributes:
        key: call id (a call in flight) or session id (an idle session's cache).
        live_tokens: tokens of KV on the GPUs when the replica stopped.
        snapshot_tokens: tokens a write-behind snapshot would hold: the prompt of an
            in-flight call once its prefill finished, a finished call's whole context.
        produced_s: when the snapshot's KV was complete (prefill end / call end).
        gpu: topology vertex of the replica's first GPU; node: its node index.
    """

    key: str
    live_tokens: int
    snapshot_tokens: int
    produced_s: float
    gpu: str
    node: int


@dataclass(frozen=True, slots=True)
class KVCopy:
    """A surviving copy of ``tokens`` tokens of KV on ``vertex``, readable from ``ready_s``."""

    vertex: str
    tokens: int
    ready_s: float


@dataclass(frozen=True, slots=True)
class PersistenceContext:
    """What a policy may read to price its copies.

    Attributes:
        path: widest path between two topology vertices (bandwidth bytes/s, latency s).
        kv_bytes_per_token: KV bytes of one token of the served model (all layers).
        peer_gpu: the first GPU vertex of a ready replica of the same model that can
            take migrated sessions (None when there is none).
    """

    path: Callable[[str, str], Path]
    kv_bytes_per_token: int
    peer_gpu: str | None

    def transfer_s(self, tokens: int, src: str, dst: str) -> float:
        """Seconds to move ``tokens`` tokens of KV from ``src`` to ``dst``."""
        p = self.path(src, dst)
        return kv_transfer_time(tokens * self.kv_bytes_per_token, p)


class PersistencePolicy:
    """Decides which lost KV survives a fault (default: none does; recompute it all).

    ``save`` is called once per fault with every piece of lost KV (calls in flight
    first, in admission order, then idle sessions) and returns a surviving copy or
    None for each, in the same order.
    """

    policy_name = "persistence"

    def save(
        self, lost: list[LostKV], fault: FaultInfo, ctx: PersistenceContext
    ) -> list[KVCopy | None]:
        return [None] * len(lost)


def snapshot_copy(
    item: LostKV, fault: FaultInfo, ctx: PersistenceContext, store: str
) -> KVCopy | None:
    """The write-behind snapshot of ``item`` on ``store`` if its write finished in time.

    The snapshot is written when its KV is complete (``produced_s``) over the path
    from the GPU to ``store``; a write still in flight when the fault hits is lost.
    """
    if item.snapshot_tokens <= 0:
        return None
    done = item.produced_s + ctx.transfer_s(item.snapshot_tokens, item.gpu, store)
    if done > fault.now_s:
        return None
    return KVCopy(store, item.snapshot_tokens, fault.now_s)
