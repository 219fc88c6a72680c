"""Topology-aware placement: TP groups inside NVLink islands, widest links first."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from policies.base import PlacementPolicy, PlacementRequest, TopologyView
from policies.registry import register


@register("placement", "topology_aware")
class TopologyAware(PlacementPolicy):
    """Place each TP group where its all-reduce links are fastest; let PP stages span nodes.

    Rule, per pipeline stage (``tp`` GPUs each, stages placed one after another):

    1. Candidate groups: the first ``tp`` free GPUs of every NVLink/NVSwitch island
       that has that many free; per node, free GPUs taken island by island (islands
       with the most free GPUs first, so NVLink pairs stay together); and one group
       across nodes (nodes with the most free GPUs first).
    2. Pick the candidate with the highest bottleneck bandwidth of the group
       (``group_bottleneck``), then the lowest latency, then on the node of the
       previous stage, then best fit (fewest free GPUs left in the islands it
       touches, so whole islands stay free for wider groups), then lowest GPU index.

    A TP group therefore never straddles PCIe or the network while an NVLink island
    with room exists; pipeline stages may land on different nodes (their send/recv
    is priced from the path between the stages' first GPUs).  No parameters.
    Reference: the NVLink-island rule of Megatron-LM/vLLM deployment practice
    (TP within a node, PP across nodes) and DistServe's placement search (OSDI 2024).
    """

    def place(
        self, request: PlacementRequest, topology: TopologyView, free: Sequence[int]
    ) -> tuple[int, ...] | None:
        tp, pp = request.tp, request.pp
        if len(free) < tp * pp:
            return None
        avail = set(free)
        islands = topology.nvlink_islands()
        chosen: list[int] = []
        prev_node: int | None = None
        for _ in range(pp):
            group = self._stage(tp, topology, islands, avail, prev_node)
            if group is None:
                return None
            chosen.extend(group)
            avail -= set(group)
            prev_node = topology.gpu_node[group[0]]
        return tuple(chosen)

    def _stage(
        self,
        tp: int,
        topology: TopologyView,
        islands: list[list[int]],
        avail: set[int],
        prev_node: int | None,
    ) -> tuple[int, ...] | None:
        node_of = topology.gpu_node
        island_free = [[g for g in isl if g in avail] for isl in islands]
        island_of = {g: i for i, isl in enumerate(islands) for g in isl}
        cands: set[tuple[int, ...]] = set()
        for f in island_free:
            if len(f) >= tp:
                cands.add(tuple(f[:tp]))
        by_node: dict[int, list[list[int]]] = {}
        for f in island_free:
            if f:
                by_node.setdefault(node_of[f[0]], []).append(f)
        for parts in by_node.values():
            g = self._fill(tp, sorted(parts, key=lambda p: (-len(p), p[0])))
            if g is not None:
                cands.add(g)
        nodes = sorted(
            by_node.values(), key=lambda ps: (-sum(map(len, ps)), min(min(p) for p in ps))
        )
        g = self._fill(tp, [p for ps in nodes for p in sorted(ps, key=lambda p: (-len(p), p[0]))])
        if g is not None:
            cands.add(g)
        if not cands:
            return None

        def key(group: tuple[int, ...]) -> tuple[float, float, bool, int, int]:
            path = topology.group_bottleneck(group)
            touched = {island_of[x] for x in group}
            left = sum(len(island_free[i]) for i in touched) - len(group)
            return (
                path.bandwidth,
                -path.latency,
                node_of[group[0]] == prev_node,
                -left,
                -min(group),
            )

        return max(sorted(cands), key=key)

    @staticmethod
    def _fill(tp: int, parts: Iterable[list[int]]) -> tuple[int, ...] | None:
        """Take ``tp`` GPUs from the island fragments ``parts``, in the given order."""
        out: list[int] = []
        for p in parts:
            out.extend(p[: tp - len(out)])
            if len(out) == tp:
                return tuple(sorted(out))
        return None
