"""Autoscaling: queue_depth and keep_warm decisions, cold starts counted and priced."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sim.cluster.config import ClusterConfig
from sim.simulation import simulate
from tests.helpers import ROOFLINE, cluster, llm, workload


def scaled(autoscaler: str, replicas: int) -> ClusterConfig:
    cfg = cluster(replicas=replicas, max_num_seqs=8)
    return replace(cfg, policies=replace(cfg.policies, autoscaler=autoscaler))


def test_queue_depth_adds_replicas_for_a_burst_and_counts_cold_starts() -> None:
    calls = [llm(f"c{i}", f"s{i}", 500, 200, t=0.0) for i in range(40)]
    calls += [llm(f"late{i}", f"late{i}", 500, 20, t=60.0 + i) for i in range(6)]
    w = workload(calls)
    static = simulate(w, scaled("static", 1), cost_model=ROOFLINE)
    qd = simulate(w, scaled("queue_depth:target_per_replica=16,interval_s=1,max_replicas=4", 1),
                  cost_model=ROOFLINE)  # fmt: skip
    assert static.summary["cold_starts"] == 0
    # at t=1 s: 40 outstanding / 16 per replica -> 3 replicas: two cold starts
    assert qd.summary["cold_starts"] == 2
    assert len(qd.replicas) == 3
    assert (qd.replicas["cold_start_s"][1:] > 0).all()
    assert qd.summary["completed_requests"] == 46
    # queued calls stay where they were routed; later calls use the new replicas
    assert set(qd.calls["replica"][qd.calls["call_id"].str.startswith("c")]) == {0}
    assert set(qd.calls["replica"]) == {0, 1, 2}


def test_queue_depth_scales_down_after_the_cooldown() -> None:
    calls = [llm(f"c{i}", f"s{i}", 500, 50, t=0.0) for i in range(40)]
    calls.append(llm("late", "late", 100, 5, t=400.0))
    w = workload(calls)
    r = simulate(w, scaled("queue_depth:target_per_replica=16,interval_s=1,down_cooldown_s=60", 1),
                 cost_model=ROOFLINE)  # fmt: skip
    stops = r.replicas.set_index("replica")["stop_s"]
    # the burst's extra replicas are retired long before the late call
    assert (stops[stops.index > 0] < 400.0).all()


def test_keep_warm_scales_from_zero_and_retires_after_the_idle_timeout() -> None:
    w = workload([llm("a", "s1", 500, 20, t=0.0), llm("b", "s2", 500, 20, t=600.0)])
    short = simulate(w, scaled("keep_warm:idle_timeout_s=30", 0), cost_model=ROOFLINE)
    long = simulate(w, scaled("keep_warm:idle_timeout_s=1000", 0), cost_model=ROOFLINE)
    # no replica at t=0: the first call waits for a cold start (weight load + 20 s init)
    for r in (short, long):
        a = r.calls.set_index("call_id").loc["a"]
        cold = r.replicas["cold_start_s"].iloc[0]
        assert cold > 20.0
        assert a.ttft_s >= cold
    # 30 s idle timeout: the replica is retired and b pays a second cold start
    assert short.summary["cold_starts"] == 2
    assert long.summary["cold_starts"] == 1
    assert short.summary["gpu_hours"] < long.summary["gpu_hours"]
    b_short = short.calls.set_index("call_id").loc["b", "ttft_s"]
    b_long = long.calls.set_index("call_id").loc["b", "ttft_s"]
    assert b_short == pytest.approx(b_long + short.replicas["cold_start_s"].iloc[1], abs=1.0)
