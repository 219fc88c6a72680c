"""sim.specs.topology's own Graph against networkx.Graph, the oracle it replaces.

The topology used networkx; its small ``Graph`` must keep every order networkx gave
(vertices, neighbours, each edge once where first met), since routes, fault targets and
the topology plot iterate them.  The same builders run on both and every query agrees.
"""

from __future__ import annotations

from typing import Any

import pytest

import sim.specs.topology as topology

nx = pytest.importorskip("networkx")

CASES = [
    ([("dgx-a100", 8)], "a100-80gb", 32),
    ([("dgx-a100", 8)] * 3, "h100-80gb", 2),  # two leaves and a spine
    ([("pcie-server", 8)] * 2, "a100-80gb", 32),
    ([("pcie-server", 4)] * 2, "l40s", 32),  # no NVLink: PCIe paths only
    ([("dgx-a100", 8), ("pcie-server", 8)], "a100-80gb", 1),
]


def _dump(topo: topology.Topology) -> dict[str, Any]:
    g = topo.graph
    n = topo.num_gpus
    return {
        "nodes": [(v, dict(d)) for v, d in g.nodes(data=True)],
        "edges": [(a, b, dict(d)) for a, b, d in g.edges(data=True)],
        "adjacency": {v: [(w, dict(e)) for w, e in g[v].items()] for v in g.nodes()},
        "edge_lookup": [g.edges[b, a]["bandwidth"] for a, b, _ in g.edges(data=True)],
        "has_edge": [g.has_edge("n0/gpu0", v) for v in g.nodes()],
        "islands": topo.nvlink_islands(),
        "routes": {(a, b): topo.route(a, b) for a in range(n) for b in range(n)},
        "paths": {(a, b): topo.gpu_path(a, b) for a in range(n) for b in range(n)},
        "loads": [topo.load_path(i, s) for i in range(n) for s in ("nvme", "host", "remote")],
    }


@pytest.mark.parametrize(("nodes", "gpu", "per_leaf"), CASES)
def test_graph_gives_what_networkx_gave(
    nodes: list[tuple[str, int]], gpu: str, per_leaf: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = _dump(topology.build_topology(nodes, gpu, nodes_per_leaf=per_leaf))
    monkeypatch.setattr(topology, "Graph", nx.Graph)
    monkeypatch.setattr(topology, "connected_components", nx.connected_components)
    theirs = _dump(topology.build_topology(nodes, gpu, nodes_per_leaf=per_leaf))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key] == theirs[key], key


def test_edge_attributes_are_shared_by_both_directions() -> None:
    g = topology.Graph()
    g.add_edge("a", "b", bandwidth=1.0)
    g.edges["b", "a"]["bandwidth"] = 0.0  # what a link fault does
    assert g["a"]["b"]["bandwidth"] == 0.0
    g.add_edge("b", "a", latency=2.0)  # updates the one edge, adds none
    assert list(g.edges(data=True)) == [("a", "b", {"bandwidth": 0.0, "latency": 2.0})]
    assert not g.has_edge("a", "c") and "c" not in g
