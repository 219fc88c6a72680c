"""A router without ``@register``, loaded as ``--plugin tests.plugins.undecorated:LowestId``."""

from __future__ import annotations

from collections.abc import Sequence

from policies import Call, ClusterView, ReplicaView, Router


class LowestId(Router):
    """Send each call to the offered replica with the lowest id."""

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        return min(r.replica_id for r in candidates)
