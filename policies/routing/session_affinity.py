"""Session affinity by consistent hashing of the session id."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

from policies.base import ClusterView, ReplicaView, Router
from policies.registry import register
from sim.workload.calls import Call


def _h(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big")


@register("routing", "session_affinity")
class SessionAffinity(Router):
    """Sticky sessions: a consistent-hash ring of session ids over replicas.

    Rule: each replica owns ``vnodes`` points on a hash ring; a call goes to the first
    ready replica clockwise from hash(session_id).  If that replica's outstanding
    requests exceed ``overload_factor`` x the mean over ready replicas (and
    ``overload_factor`` > 0), the call falls back to the next replica on the ring that
    is not overloaded.  A replica that is down is skipped, so only its sessions move.
    Parameters: ``vnodes`` (int, 64), ``overload_factor`` (float, 0 = never fall back),
    ``migrate`` (bool, False: when a session moves, move its cached prefix along if
    the transfer is cheaper than recomputing it).
    Reference: Envoy ring-hash load balancing / Karger et al. consistent hashing (1997).
    """

    def __init__(
        self, vnodes: int = 64, overload_factor: float = 0.0, migrate: bool = False, seed: int = 0
    ) -> None:
        super().__init__(seed)
        self.migrate_kv = migrate
        self.vnodes = vnodes
        self.overload_factor = overload_factor
        self._rings: dict[tuple[int, ...], tuple[list[int], list[int]]] = {}

    def _ring(self, ids: tuple[int, ...]) -> tuple[list[int], list[int]]:
        ring = self._rings.get(ids)
        if ring is None:
            pts = sorted((_h(f"replica-{r}-{v}"), r) for r in ids for v in range(self.vnodes))
            ring = ([p for p, _ in pts], [r for _, r in pts])
            self._rings[ids] = ring
        return ring

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        all_ids = tuple(r.replica_id for r in view.replicas(candidates[0].model))
        keys, owners = self._ring(all_ids)
        by_id = {r.replica_id: r for r in candidates}
        limit = float("inf")
        if self.overload_factor > 0:
            mean = sum(r.outstanding_requests for r in candidates) / len(candidates)
            limit = max(1.0, self.overload_factor * mean)
        start = bisect.bisect(keys, _h(call.session_id)) % len(keys)
        first_ready = None
        for k in range(len(keys)):
            rid = owners[(start + k) % len(keys)]
            rep = by_id.get(rid)
            if rep is None:
                continue
            if first_ready is None:
                first_ready = rid
            if rep.outstanding_requests < limit:
                return rid
        assert first_ready is not None
        return first_ready
