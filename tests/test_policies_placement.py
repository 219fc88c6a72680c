"""Placement: TP groups inside NVLink islands, PP across nodes, memory shortfall errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import registry
from policies.base import PlacementRequest
from sim.cluster.config import load_cluster_config
from sim.common.errors import ConfigError
from sim.simulation import simulate
from sim.specs.topology import build_topology
from tests.helpers import ROOFLINE, cluster, llm, workload

CLUSTERS = Path(__file__).resolve().parent.parent / "examples" / "clusters"
PCIE = build_topology([("pcie-server", 8)], "a100-80gb-pcie")
PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7)]


def test_topology_aware_keeps_tp_groups_on_nvlink_pairs_where_first_fit_splits_them() -> None:
    cfg = load_cluster_config(CLUSTERS / "pcie-fragmented.toml")
    calls = [llm(f"c{i}", f"s{i}", 2000, 20, t=i * 5.0, model="mistral-7b") for i in range(3)]
    w = workload(calls)
    good = simulate(w, cfg, cost_model=ROOFLINE)
    bad = simulate(w, replace(cfg, policies=replace(cfg.policies, placement="first_fit")),
                   cost_model=ROOFLINE)  # fmt: skip
    assert list(good.replicas["gpus"]) == ["0", "2,3", "4,5", "6,7"]
    assert list(bad.replicas["gpus"]) == ["0", "1,2", "3,4", "5,6"]
    # the split groups all-reduce over PCIe: every call is visibly slower
    g = good.calls.set_index("call_id")
    b = bad.calls.set_index("call_id")
    assert (b["ttft_s"] > 1.2 * g["ttft_s"]).all()
    assert (b["e2e_s"] > g["e2e_s"]).all()


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 7), min_size=2))
def test_topology_aware_never_splits_tp2_across_pcie_while_a_pair_is_free(free: set[int]) -> None:
    pol = registry.create("placement", "topology_aware")
    gpus = pol.place(PlacementRequest("m", 2, 1, 0), PCIE, sorted(free))
    assert gpus is not None and set(gpus) <= free
    if any(set(p) <= free for p in PAIRS):
        assert tuple(sorted(gpus)) in PAIRS


def test_topology_aware_best_fit_keeps_a_whole_node_for_tp8() -> None:
    topo = build_topology([("dgx-a100", 8), ("dgx-a100", 8)], "a100-80gb")
    pol = registry.create("placement", "topology_aware")
    free = list(range(16))
    taken: list[int] = []
    for i in range(4):  # four TP=2 replicas fill node 0 (best fit), not both nodes
        g = pol.place(PlacementRequest("m", 2, 1, i), topo, [x for x in free if x not in taken])
        taken += list(g)
    assert sorted(taken) == list(range(8))
    g8 = pol.place(PlacementRequest("m", 8, 1, 4), topo, [x for x in free if x not in taken])
    assert g8 == tuple(range(8, 16))


def test_pipeline_stages_may_cross_nodes_but_tp_groups_do_not() -> None:
    topo = build_topology([("dgx-a100", 8), ("dgx-a100", 8)], "a100-80gb")
    pol = registry.create("placement", "topology_aware")
    gpus = pol.place(PlacementRequest("m", 8, 2, 0), topo, list(range(16)))
    assert gpus is not None
    assert {topo.gpu_node[g] for g in gpus[:8]} == {0}
    assert {topo.gpu_node[g] for g in gpus[8:]} == {1}
    # with 6 + 6 free GPUs, a TP=4 x PP=2 replica puts one stage on each node
    free = [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]
    gpus = pol.place(PlacementRequest("m", 4, 2, 0), topo, free)
    assert gpus is not None
    for stage in (gpus[:4], gpus[4:]):
        assert len({topo.gpu_node[g] for g in stage}) == 1


def test_model_that_cannot_fit_names_the_memory_shortfall() -> None:
    with pytest.raises(
        ConfigError, match=r"llama-3-70b does not fit on 1 GPU.*short by \d+\.\d GiB"
    ):
        simulate(
            workload([llm("a", "s", 10, 1)]),
            cluster(model="llama-3-70b", tp=1),
            cost_model=ROOFLINE,
        )


def test_placement_that_runs_out_of_gpus_is_a_clear_error() -> None:
    pol = registry.create("placement", "topology_aware")
    assert pol.place(PlacementRequest("m", 4, 1, 0), PCIE, [0, 1, 2]) is None
