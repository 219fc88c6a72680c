"""Cluster interconnect as a networkx graph, and the bandwidth/latency between devices.

Vertices are devices named ``"n{node}/{device}"``: ``gpu{i}``, ``nvswitch``,
``pcie{i}`` (PCIe switches), ``cpu{i}`` (CPU sockets and their host DRAM), ``nic{i}``,
``nvme``; plus fabric vertices ``net/leaf`` and ``net/storage`` (remote object store).
Every vertex has a ``kind`` attribute; GPU vertices also ``node`` and ``index`` (global
GPU index).  Edges carry ``bandwidth`` (bytes/s, per direction), ``latency`` (s) and
``link`` (``nvlink``, ``pcie``, ``network``, ``host``).

Constants (per direction) and their sources:
- NVLink 3 on A100 SXM: 12 links x 25 GB/s = 300 GB/s per GPU through NVSwitch
  (NVIDIA DGX A100 user guide); NVLink bridge on A100 PCIe: 300 GB/s between a pair.
- PCIe Gen4 x16: 32 GB/s (PCI-SIG spec, 16 GT/s x 16 lanes, before protocol overhead).
- HDR InfiniBand NIC: 200 Gb/s = 25 GB/s (DGX A100 ships 8 ConnectX-6 for compute);
  100 GbE on the PCIe server: 12.5 GB/s.
- Latencies: NVLink ~2 us per collective hop, PCIe ~5 us, InfiniBand ~5 us through a
  leaf switch (typical NCCL small-message latencies on A100 systems).
- Host DRAM per socket ~ 100 GB/s (8-channel DDR4-3200 is 204 GB/s peak); local NVMe
  RAID ~ 7 GB/s (DGX A100 with 4x 3.84 TB U.2 Gen4 in RAID-0 reads ~25 GB/s; one
  drive ~6.8 GB/s: we use the per-drive number as a conservative load path).
- Remote storage through the network: 5 GB/s per node (typical NFS/object store).
- Per-GPU NICs: the GPU preset's ``nic_bandwidth`` (DGX A100: 8 x 200 Gb/s HDR; DGX
  H100/H200/B200: 8 x 400 Gb/s NDR ConnectX-7), each on its GPU's PCIe switch (GPUDirect
  RDMA: the GPU and its NIC share the switch, whose GPU and NIC lanes run at the GPU's
  PCIe generation: Gen5 x16 = 64 GB/s on H100).
- Spine: nodes hang off leaf switches, :data:`NODES_PER_LEAF` per leaf (a DGX SuperPOD
  scalable unit is 32 nodes, NVIDIA DGX SuperPOD reference architecture); with more
  nodes, leaves ``net/leaf``, ``net/leaf1``, ... join ``net/spine`` with non-blocking
  uplinks (as much bandwidth up as the leaf's NICs bring down), one more hop of latency.

Routes (:meth:`Topology.route`) list the directed links a transfer crosses, so that
flows on a shared link can share its bandwidth (``sim/cluster/links.py``); a GPU reaches
another node through its own NIC (rail-style, as NCCL and KV connectors pin them).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import lru_cache

import networkx as nx

from sim.common.errors import ConfigError
from sim.specs.hardware import GPUS

GB = 1e9

NVLINK_BW = 300 * GB
NVLINK_LAT = 2e-6
PCIE_BW = 32 * GB
PCIE_LAT = 5e-6
IB_BW = 25 * GB
ETH100_BW = 12.5 * GB
NET_LAT = 5e-6
DRAM_BW = 100 * GB
NVME_BW = 6.8 * GB
REMOTE_STORAGE_BW = 5 * GB
REMOTE_STORAGE_LAT = 1e-3
#: Nodes per leaf switch before a spine is added (DGX SuperPOD scalable unit).
NODES_PER_LEAF = 32

#: A directed link of the graph: (from vertex, to vertex).
Link = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Path:
    """Bottleneck of the widest path between two vertices."""

    bandwidth: float  # bytes/s
    latency: float  # s, summed over hops
    link: str  # link type of the bottleneck edge
    hops: int


class Topology:
    """A cluster graph with path queries (cached)."""

    def __init__(self, graph: nx.Graph, gpu_type: str) -> None:
        self.graph = graph
        self.gpu_type = gpu_type
        gpus = [(d["index"], v) for v, d in graph.nodes(data=True) if d.get("kind") == "gpu"]
        gpus.sort()
        self.gpu_names: list[str] = [v for _, v in gpus]
        self.gpu_node: list[int] = [graph.nodes[v]["node"] for v in self.gpu_names]
        self.num_nodes = 1 + max(self.gpu_node) if self.gpu_node else 0
        self._path = lru_cache(maxsize=None)(self._widest_path)
        self._route = lru_cache(maxsize=None)(self._gpu_route)
        self._nics: dict[int, list[str]] = {}
        for v, d in graph.nodes(data=True):
            if d.get("kind") == "nic":
                self._nics.setdefault(int(v[1:].split("/", 1)[0]), []).append(v)
        for nics in self._nics.values():
            nics.sort(key=lambda v: int(v.rsplit("nic", 1)[1]))

    @property
    def num_gpus(self) -> int:
        return len(self.gpu_names)

    def gpus_of_node(self, node: int) -> list[int]:
        return [i for i, n in enumerate(self.gpu_node) if n == node]

    def _widest_search(
        self, src: str, dst: str
    ) -> tuple[float, float, tuple[str, int], dict[str, str]]:
        """Maximum-bottleneck path from ``src`` to ``dst`` (ties: lowest latency),
        Dijkstra-style, never through another GPU (GPUs are endpoints, not switches).
        Returns its bandwidth, latency, (bottleneck link type, hops) and each vertex's
        predecessor on it."""
        g = self.graph
        best: dict[str, tuple[float, float]] = {src: (float("inf"), 0.0)}
        meta: dict[str, tuple[str, int]] = {src: ("local", 0)}
        prev: dict[str, str] = {}
        heap: list[tuple[float, float, str]] = [(-float("inf"), 0.0, src)]
        done: set[str] = set()
        while heap:
            nbw, lat, v = heapq.heappop(heap)
            if v in done:
                continue
            done.add(v)
            if v == dst:
                return -nbw, lat, meta[v], prev
            for w, e in g[v].items():
                if w in done or (g.nodes[w].get("kind") == "gpu" and w != dst):
                    continue
                bw = min(-nbw, e["bandwidth"])
                wl = lat + e["latency"]
                old = best.get(w)
                if old is None or bw > old[0] or (bw == old[0] and wl < old[1]):
                    best[w] = (bw, wl)
                    link = e["link"] if e["bandwidth"] <= -nbw else meta[v][0]
                    meta[w] = (link, meta[v][1] + 1)
                    prev[w] = v
                    heapq.heappush(heap, (-bw, wl, w))
        raise ConfigError(f"topology: no path between {src} and {dst}")

    def _widest_path(self, src: str, dst: str) -> Path:
        """The widest path's bandwidth, latency, bottleneck link type and hops."""
        if src == dst:
            return Path(float("inf"), 0.0, "local", 0)
        bw, lat, (link, hops), _ = self._widest_search(src, dst)
        return Path(bw, lat, link, hops)

    def path(self, src: str, dst: str) -> Path:
        return self._path(src, dst)  # type: ignore[no-any-return]

    def _widest_route(self, src: str, dst: str) -> tuple[Link, ...]:
        """The directed links of the widest path from ``src`` to ``dst`` (the path
        :meth:`path` measures: the same search)."""
        if src == dst:
            return ()
        *_, prev = self._widest_search(src, dst)
        links: list[Link] = []
        v = dst
        while v != src:
            links.append((prev[v], v))
            v = prev[v]
        return tuple(reversed(links))

    def own_nic(self, gpu: int) -> str | None:
        """The NIC a GPU sends through to other nodes: the node's ``nic{i}`` of the GPU's
        local index ``i`` when there is one (one NIC per GPU), else the NIC of index
        ``i mod`` the node's NIC count; None on a node without NICs."""
        node = self.gpu_node[gpu]
        nics = self._nics.get(node)
        if not nics:
            return None
        local = int(self.gpu_names[gpu].rsplit("gpu", 1)[1])
        return nics[local % len(nics)]

    def route(self, a: int, b: int) -> tuple[Link, ...]:
        """The directed links GPU ``a``'s data crosses to GPU ``b``: the widest path
        inside a node (NVLink through the NVSwitch, or PCIe); across nodes, ``a``'s own
        NIC, the fabric (leaf, spine) and ``b``'s own NIC."""
        return self._route(a, b)  # type: ignore[no-any-return]

    def _gpu_route(self, a: int, b: int) -> tuple[Link, ...]:
        src, dst = self.gpu_names[a], self.gpu_names[b]
        na, nb = self.own_nic(a), self.own_nic(b)
        if self.gpu_node[a] == self.gpu_node[b] or na is None or nb is None:
            return self._widest_route(src, dst)
        return (
            self._widest_route(src, na) + self._widest_route(na, nb) + self._widest_route(nb, dst)
        )

    def gpu_path(self, a: int, b: int) -> Path:
        return self.path(self.gpu_names[a], self.gpu_names[b])

    def group_bottleneck(self, gpus: tuple[int, ...]) -> Path:
        """The slowest pairwise path inside a group of GPUs (what a ring all-reduce sees)."""
        if len(gpus) <= 1:
            return Path(float("inf"), 0.0, "local", 0)
        worst: Path | None = None
        for i, a in enumerate(gpus):
            for b in gpus[i + 1 :]:
                p = self.gpu_path(a, b)
                if worst is None or (p.bandwidth, -p.latency) < (worst.bandwidth, -worst.latency):
                    worst = p
        assert worst is not None
        return worst

    def nvlink_islands(self) -> list[list[int]]:
        """Groups of GPUs connected by NVLink/NVSwitch only, each sorted."""
        sub = nx.Graph()
        for u, v, d in self.graph.edges(data=True):
            if d["link"] == "nvlink":
                sub.add_edge(u, v)
        index = {v: i for i, v in enumerate(self.gpu_names)}
        islands = []
        seen: set[int] = set()
        for comp in nx.connected_components(sub):
            gpus = sorted(index[v] for v in comp if v in index)
            if gpus:
                islands.append(gpus)
                seen.update(gpus)
        islands.extend([i] for i in range(self.num_gpus) if i not in seen)
        return sorted(islands)

    def load_path(self, gpu: int, source: str) -> Path:
        """Path from a weight source (``nvme``, ``host``, ``remote``) to a GPU."""
        node = self.gpu_node[gpu]
        target = {
            "nvme": f"n{node}/nvme",
            "host": f"n{node}/cpu0",
            "remote": "net/storage",
        }.get(source)
        if target is None:
            raise ConfigError(f"unknown weight source {source!r}; expected nvme, host or remote")
        return self.path(target, self.gpu_names[gpu])


def _edge(g: nx.Graph, a: str, b: str, bw: float, lat: float, link: str) -> None:
    if bw <= 0 or lat < 0:
        raise ConfigError(f"topology edge {a} - {b}: bandwidth must be > 0 and latency >= 0")
    g.add_edge(a, b, bandwidth=bw, latency=lat, link=link)


def _fabric(g: nx.Graph) -> None:
    g.add_node("net/leaf", kind="switch")
    g.add_node("net/storage", kind="storage")
    _edge(g, "net/storage", "net/leaf", REMOTE_STORAGE_BW, REMOTE_STORAGE_LAT, "network")


def add_dgx_a100(
    g: nx.Graph,
    node: int,
    first_gpu: int,
    nvlink_bw: float = NVLINK_BW,
    nic_bw: float = IB_BW,
    pcie_bw: float = PCIE_BW,
    leaf: str = "net/leaf",
) -> int:
    """Add one DGX A100: 8 GPUs on NVSwitch, 4 PCIe switches (2 GPUs + 2 NICs each),
    2 CPU sockets, NVMe.  Returns the number of GPUs added.  ``nvlink_bw``: each GPU's
    NVLink bandwidth to the NVSwitch (per direction; the GPU preset's, so that an HGX
    H100/H200/B200 node built the same way gets its own NVLink generation); ``nic_bw``:
    each GPU's NIC to the ``leaf`` switch; ``pcie_bw``: the GPU and NIC lanes of the PCIe
    switches (the switch's uplink to the CPU stays Gen4, :data:`PCIE_BW`)."""
    p = f"n{node}/"
    g.add_node(p + "nvswitch", kind="nvswitch")
    for s in range(2):
        g.add_node(p + f"cpu{s}", kind="cpu", node=node)
    _edge(g, p + "cpu0", p + "cpu1", DRAM_BW, 1e-6, "host")
    g.add_node(p + "nvme", kind="nvme", node=node)
    _edge(g, p + "nvme", p + "cpu0", NVME_BW, 1e-4, "nvme")
    for sw in range(4):
        ps = p + f"pcie{sw}"
        g.add_node(ps, kind="pcie_switch")
        _edge(g, ps, p + f"cpu{sw // 2}", PCIE_BW, PCIE_LAT, "pcie")
        for k in range(2):
            i = sw * 2 + k
            gv = p + f"gpu{i}"
            g.add_node(gv, kind="gpu", node=node, index=first_gpu + i)
            _edge(g, gv, p + "nvswitch", nvlink_bw, NVLINK_LAT, "nvlink")
            _edge(g, gv, ps, pcie_bw, PCIE_LAT, "pcie")
            nic = p + f"nic{i}"
            g.add_node(nic, kind="nic")
            _edge(g, nic, ps, pcie_bw, PCIE_LAT, "pcie")
            _edge(g, nic, leaf, nic_bw, NET_LAT, "network")
    return 8


def add_pcie_server(
    g: nx.Graph,
    node: int,
    first_gpu: int,
    gpus: int = 8,
    nvlink_pairs: bool = True,
    leaf: str = "net/leaf",
) -> int:
    """Add a PCIe server: ``gpus`` PCIe A100s, 2 per PCIe switch, NVLink bridges joining
    each pair (if ``nvlink_pairs``), 2 CPU sockets, one 100 GbE NIC per socket."""
    p = f"n{node}/"
    for s in range(2):
        g.add_node(p + f"cpu{s}", kind="cpu", node=node)
        nic = p + f"nic{s}"
        g.add_node(nic, kind="nic")
        _edge(g, nic, p + f"cpu{s}", PCIE_BW, PCIE_LAT, "pcie")
        _edge(g, nic, leaf, ETH100_BW, NET_LAT, "network")
    _edge(g, p + "cpu0", p + "cpu1", 40 * GB, 1e-6, "host")  # socket interconnect (UPI)
    g.add_node(p + "nvme", kind="nvme", node=node)
    _edge(g, p + "nvme", p + "cpu0", NVME_BW, 1e-4, "nvme")
    for sw in range((gpus + 1) // 2):
        ps = p + f"pcie{sw}"
        g.add_node(ps, kind="pcie_switch")
        _edge(
            g,
            ps,
            p + f"cpu{(sw * 2) // max(1, gpus // 2) if gpus > 1 else 0}",
            PCIE_BW,
            PCIE_LAT,
            "pcie",
        )
        for k in range(2):
            i = sw * 2 + k
            if i >= gpus:
                break
            gv = p + f"gpu{i}"
            g.add_node(gv, kind="gpu", node=node, index=first_gpu + i)
            _edge(g, gv, ps, PCIE_BW, PCIE_LAT, "pcie")
        if nvlink_pairs and sw * 2 + 1 < gpus:
            _edge(g, p + f"gpu{sw * 2}", p + f"gpu{sw * 2 + 1}", NVLINK_BW, NVLINK_LAT, "nvlink")
    return gpus


BUILDERS = {"dgx-a100": add_dgx_a100, "pcie-server": add_pcie_server}


def _leaf(g: nx.Graph, node: int, nodes_per_leaf: int) -> str:
    """The leaf switch of ``node`` (added with its spine uplink when new)."""
    i = node // nodes_per_leaf
    name = "net/leaf" if i == 0 else f"net/leaf{i}"
    if name not in g:
        g.add_node(name, kind="switch")
    return name


def _spine(g: nx.Graph) -> None:
    """Join the leaves to ``net/spine`` when there are several, each uplink as wide as
    the leaf's NIC links (non-blocking)."""
    leaves = sorted(v for v, d in g.nodes(data=True) if d.get("kind") == "switch")
    if len(leaves) < 2:
        return
    g.add_node("net/spine", kind="spine")
    for leaf in leaves:
        down = sum(e["bandwidth"] for w, e in g[leaf].items() if g.nodes[w].get("kind") == "nic")
        _edge(g, leaf, "net/spine", down or IB_BW, NET_LAT, "network")


def build_topology(
    nodes: list[tuple[str, int]], gpu_type: str, nodes_per_leaf: int = NODES_PER_LEAF
) -> Topology:
    """Build a cluster from ``(builder, gpus_per_node)`` per node: ``nodes_per_leaf``
    nodes per leaf switch, leaves joined by a spine when there are several.

    The GPU preset decides the NVLink: ``dgx-a100`` nodes get the GPU's NVLink
    bandwidth to the NVSwitch; ``pcie-server`` nodes get NVLink bridges between card
    pairs only when the GPU has NVLink (an L40S server has none: every GPU-to-GPU path
    crosses the PCIe switches).  A ``dgx-a100`` node of a GPU without NVLink is an error.
    """
    spec = GPUS.get(gpu_type)
    nvlink_bw = spec.nvlink_bandwidth if spec is not None else NVLINK_BW
    nic_bw = spec.nic_bandwidth if spec is not None else IB_BW
    pcie_bw = spec.pcie_bandwidth if spec is not None else PCIE_BW
    g = nx.Graph()
    _fabric(g)
    first = 0
    for node, (builder, gpus) in enumerate(nodes):
        leaf = _leaf(g, node, max(1, nodes_per_leaf))
        if builder == "dgx-a100":
            if nvlink_bw <= 0:
                raise ConfigError(
                    f"GPU {gpu_type} has no NVLink, so it cannot sit on an NVSwitch "
                    "(dgx-a100) node; use the pcie-server builder"
                )
            first += add_dgx_a100(g, node, first, nvlink_bw, nic_bw, pcie_bw, leaf)
        elif builder == "pcie-server":
            first += add_pcie_server(g, node, first, gpus, nvlink_pairs=nvlink_bw > 0, leaf=leaf)
        else:
            raise ConfigError(f"unknown topology builder {builder!r}; known: {', '.join(BUILDERS)}")
    _spine(g)
    return Topology(g, gpu_type)
