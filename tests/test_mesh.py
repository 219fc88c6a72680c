"""Mesh/gateway per-hop overhead and scheduling decision latency, checked by hand."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest

from sim.cluster.config import ClusterConfig
from sim.cluster.mesh import ISTIO_HOP_P90_S, ISTIO_HOP_P99_S, VCPU_HOUR_USD, HopModel, MeshOverhead
from sim.common.errors import ConfigError
from sim.simulation import simulate
from tests.helpers import ROOFLINE, cluster, llm, workload


def _chain(n: int = 3) -> list:
    """One agent session: ``n`` LLM calls, each issued when the previous one returns."""
    calls = [llm("c0", "s", 300, 5)]
    for i in range(1, n):
        calls.append(llm(f"c{i}", "s", 300 + 100 * i, 5, parents=(f"c{i - 1}",)))
    return calls


def _policies(cfg: ClusterConfig, **kw: object) -> ClusterConfig:
    return replace(cfg, policies=replace(cfg.policies, **kw))


def test_hop_model_fits_the_published_percentiles() -> None:
    hop = HopModel.from_percentiles(1, ISTIO_HOP_P90_S, ISTIO_HOP_P99_S, 0.0)
    z90, z99 = 1.2815515655446004, 2.3263478740408408
    assert math.exp(hop.mu + z90 * hop.sigma) == pytest.approx(0.85e-3)
    assert math.exp(hop.mu + z99 * hop.sigma) == pytest.approx(1.35e-3)
    rng = random.Random(1)
    xs = np.array([rng.lognormvariate(hop.mu, hop.sigma) for _ in range(40000)])
    assert np.quantile(xs, 0.9) == pytest.approx(0.85e-3, rel=0.03)
    assert np.quantile(xs, 0.99) == pytest.approx(1.35e-3, rel=0.06)
    assert hop.median_s < 0.85e-3 < 1.35e-3


def test_hop_model_rejects_inverted_percentiles() -> None:
    with pytest.raises(ConfigError):
        HopModel.from_percentiles(1, 2e-3, 1e-3, 0.0)


def test_mesh_overhead_is_seeded_and_totals_cpu() -> None:
    hop = HopModel.from_percentiles(3, 1e-3, 2e-3, 2e-4)
    a, b = MeshOverhead({"m": hop}, seed=5), MeshOverhead({"m": hop}, seed=5)
    xs = [a.sample("m") for _ in range(10)]
    assert xs == [b.sample("m") for _ in range(10)]
    assert a.sample("other") == 0.0  # a model without a mesh
    s = a.summary()
    assert s["mesh_calls"] == 10
    assert s["mesh_overhead_s"] == pytest.approx(sum(xs))
    assert s["mesh_cpu_hours"] == pytest.approx(10 * 3 * 2e-4 / 3600)
    assert s["mesh_cpu_usd"] == pytest.approx(s["mesh_cpu_hours"] * VCPU_HOUR_USD)


def test_every_call_of_a_chain_pays_the_mesh_both_ways() -> None:
    # p90 == p99: the log-normal has zero spread, so each hop adds exactly 1 ms
    mesh = {"mesh_hops": 2, "mesh_hop_p90_s": 1e-3, "mesh_hop_p99_s": 1e-3}
    base = simulate(workload(_chain()), cluster(), cost_model=ROOFLINE)
    meshed = simulate(workload(_chain()), cluster(**mesh), cost_model=ROOFLINE)
    b, m = base.calls.set_index("call_id"), meshed.calls.set_index("call_id")
    for cid in ("c0", "c1", "c2"):
        # 2 hops x 1 ms: half before the replica sees the call (TTFT), half on the way back
        assert m.loc[cid, "ttft_s"] == pytest.approx(b.loc[cid, "ttft_s"] + 1e-3, abs=1e-9)
        assert m.loc[cid, "e2e_s"] == pytest.approx(b.loc[cid, "e2e_s"] + 2e-3, abs=1e-9)
    sb, sm = base.sessions.iloc[0], meshed.sessions.iloc[0]
    assert sm.session_s == pytest.approx(sb.session_s + 3 * 2e-3, abs=1e-9)
    assert meshed.summary["mesh_calls"] == 3
    assert meshed.summary["mesh_overhead_s"] == pytest.approx(6e-3)
    assert meshed.summary["mesh_cpu_hours"] == pytest.approx(3 * 2 * 2e-4 / 3600)
    assert "mesh_calls" not in base.summary


def test_router_decision_delay_adds_to_every_call() -> None:
    base = simulate(workload(_chain()), cluster(), cost_model=ROOFLINE)
    slow = simulate(
        workload(_chain()), _policies(cluster(), router_delay_s=0.25), cost_model=ROOFLINE
    )
    b, s = base.calls.set_index("call_id"), slow.calls.set_index("call_id")
    for cid in ("c0", "c1", "c2"):
        assert s.loc[cid, "ttft_s"] == pytest.approx(b.loc[cid, "ttft_s"] + 0.25, abs=1e-9)
    assert slow.sessions.iloc[0].session_s == pytest.approx(
        base.sessions.iloc[0].session_s + 0.75, abs=1e-9
    )


def test_autoscaler_decision_delay_postpones_the_scale_up() -> None:
    cfg = _policies(cluster(replicas=0), autoscaler="hpa:metric=queue,min_replicas=0")
    w = workload([llm("a", "s", 200, 4)])
    now = simulate(w, cfg, cost_model=ROOFLINE).replicas
    late = simulate(w, _policies(cfg, autoscaler_delay_s=10.0), cost_model=ROOFLINE).replicas
    assert now["start_s"].tolist() == [15.0]  # the first HPA sync
    assert late["start_s"].tolist() == [25.0]
    assert late["ready_s"].iloc[0] == pytest.approx(now["ready_s"].iloc[0] + 10.0)


def test_negative_delays_are_rejected() -> None:
    from sim.cluster.config import validate

    with pytest.raises(ConfigError, match="router_delay_s"):
        validate(_policies(cluster(), router_delay_s=-1.0))
