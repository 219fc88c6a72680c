"""Achieved transfer rates (sim/costmodel/transfer.py) are what KV moves and cold starts pay."""

from __future__ import annotations

import pytest

from sim.cluster.config import Deployment
from sim.costmodel.base import kv_transfer_time, load_time
from sim.costmodel.transfer import ACHIEVED_FRACTION, ENGINE_INIT_S
from sim.specs.topology import Path, build_topology

GB = 1e9


@pytest.mark.parametrize("link", sorted(ACHIEVED_FRACTION))
def test_kv_transfer_pays_the_links_achieved_rate(link: str) -> None:
    # 10 GB over a 100 GB/s link of each type: latency + bytes / (fraction x datasheet)
    path = Path(100 * GB, 5e-6, link, 2)
    want = 5e-6 + 10 * GB / (ACHIEVED_FRACTION[link] * 100 * GB)
    assert kv_transfer_time(10 * GB, path) == pytest.approx(want, rel=1e-12)
    assert kv_transfer_time(0, path) == 0.0


def test_pcie_and_nvlink_are_derated_by_hand() -> None:
    # 25.6 GB over Gen4 x16 (32 GB/s datasheet): 25.6 / (0.78 x 32) = 1.0256 s, not 0.8 s
    pcie = Path(32 * GB, 0.0, "pcie", 1)
    assert kv_transfer_time(25.6 * GB, pcie) == pytest.approx(25.6 / (0.78 * 32), rel=1e-12)
    # the same bytes over NVLink3 (300 GB/s) at 0.8 of peak
    nvlink = Path(300 * GB, 0.0, "nvlink", 1)
    assert kv_transfer_time(25.6 * GB, nvlink) == pytest.approx(25.6 / 240, rel=1e-12)


def test_topology_paths_carry_the_link_type_that_is_derated() -> None:
    topo = build_topology([("dgx-a100", 8), ("dgx-a100", 8)], "a100-80gb")
    within = topo.gpu_path(0, 1)
    across = topo.gpu_path(0, 8)
    assert within.link == "nvlink"
    assert across.link == "network"
    nbytes = 4 * GB
    assert kv_transfer_time(nbytes, within) > within.latency + nbytes / within.bandwidth
    assert kv_transfer_time(nbytes, across) > across.latency + nbytes / across.bandwidth


def test_cold_start_default_engine_init_and_weight_load_rate() -> None:
    assert Deployment().init_s == ENGINE_INIT_S
    host = Path(32 * GB, 0.0, "host", 1)
    # 35 GB of weights from host DRAM over PCIe at 0.78 of 32 GB/s, plus engine init
    assert load_time(35 * GB, host, ENGINE_INIT_S) == pytest.approx(
        35 / (0.78 * 32) + ENGINE_INIT_S, rel=1e-12
    )
