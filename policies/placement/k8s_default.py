"""The default Kubernetes scheduler placing GPU pods: it sees a GPU *count* per node only.

The NVIDIA device plugin advertises GPUs as the extended resource ``nvidia.com/gpu``, an
integer per node.  kube-scheduler filters the nodes with enough free GPUs
(``NodeResourcesFit``) and scores them with the default ``LeastAllocated`` strategy
(the node with the most free capacity wins; with the default ``PodTopologySpread``
this spreads the replicas of a deployment over nodes).  It knows nothing of NVLink
islands, PCIe switches or sockets; on the chosen node the kubelet's device manager
hands out that many free devices (here: in device-index order, i.e. with no
topology-aware ``GetPreferredAllocation``).

A replica is one pod of ``tp x pp`` GPUs when a node has that many free.  When none has
(a fragmented cluster) and ``multi_node`` is on, the replica is deployed as a
LeaderWorkerSet (one replica = a group of equal pods, e.g. vLLM multi-node serving
with Ray): it is split into the fewest equal pods that can be scheduled, each pod
scheduled in turn by the same count-only filter and score, so the TP group may
straddle nodes and its all-reduce runs over the network.

Sources: Kubernetes docs "Schedule GPUs" (``nvidia.com/gpu`` is an integer resource);
"Resource Bin Packing" (``NodeResourcesFit`` scoring strategies, ``LeastAllocated`` is
the default); LeaderWorkerSet (kubernetes-sigs/lws) for multi-node inference.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import PlacementPolicy, PlacementRequest, TopologyView
from policies.registry import register


@register("placement", "k8s_default")
class K8sDefault(PlacementPolicy):
    """kube-scheduler + device plugin: GPU count only, LeastAllocated, blind to NVLink.

    Rule: if some node has ``n = tp x pp`` free GPUs, the node with the most free GPUs
    (ties: lowest node index) gives its ``n`` lowest-numbered free GPUs.  Otherwise,
    with ``multi_node`` (default true), the replica becomes ``k`` pods of ``n / k`` GPUs
    for the smallest divisor ``k > 1`` of ``n`` for which every pod, scheduled one
    after another the same way, finds a node; else it is unschedulable (``None``).
    Parameters: ``multi_node`` (bool, True).
    """

    def __init__(self, multi_node: bool = True) -> None:
        self.multi_node = multi_node

    def place(
        self, request: PlacementRequest, topology: TopologyView, free: Sequence[int]
    ) -> tuple[int, ...] | None:
        n = request.tp * request.pp
        if len(free) < n:
            return None
        by_node: dict[int, list[int]] = {}
        for g in sorted(free):
            by_node.setdefault(topology.gpu_node[g], []).append(g)
        pods = [1] + ([k for k in range(2, n + 1) if n % k == 0] if self.multi_node else [])
        for k in pods:
            gpus = self._schedule_pods(by_node, k, n // k)
            if gpus is not None:
                return gpus
        return None

    @staticmethod
    def _schedule_pods(
        by_node: dict[int, list[int]], pods: int, size: int
    ) -> tuple[int, ...] | None:
        """Schedule ``pods`` pods of ``size`` GPUs one by one; None if one does not fit."""
        left = {node: list(gs) for node, gs in by_node.items()}
        taken: list[int] = []
        for _ in range(pods):
            fits = [node for node, gs in left.items() if len(gs) >= size]
            if not fits:
                return None
            node = max(fits, key=lambda x: (len(left[x]), -x))  # LeastAllocated
            taken.extend(left[node][:size])
            left[node] = left[node][size:]
        return tuple(taken)
