"""First fit: the lowest-numbered free GPUs."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import PlacementPolicy, PlacementRequest, TopologyView
from policies.registry import register


@register("placement", "first_fit")
class FirstFit(PlacementPolicy):
    """Give each replica the ``tp x pp`` lowest-numbered free GPUs, blind to topology.

    Rule: GPUs are taken in index order (node by node).  On a fragmented cluster a TP
    group can straddle PCIe switches or nodes.  No parameters.
    """

    def place(
        self, request: PlacementRequest, topology: TopologyView, free: Sequence[int]
    ) -> tuple[int, ...] | None:
        n = request.tp * request.pp
        if len(free) < n:
            return None
        return tuple(sorted(free)[:n])
