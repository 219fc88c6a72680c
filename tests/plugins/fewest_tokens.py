"""An out-of-tree router used by the plugin tests (``--plugin tests/plugins/fewest_tokens.py``)."""

from __future__ import annotations

from collections.abc import Sequence

from policies import Call, ClusterView, ReplicaView, Router, register


@register("routing", "fewest_tokens")
class FewestTokens(Router):
    """Send each call to the replica with the fewest outstanding tokens (ties: lowest id)."""

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        return min(candidates, key=lambda r: (r.outstanding_tokens, r.replica_id)).replica_id
