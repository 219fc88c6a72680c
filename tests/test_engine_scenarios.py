"""Hand-worked scenarios whose right answer is computed from the cost model by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.costmodel.base import BatchShape, ReplicaHardware
from sim.simulation import simulate
from sim.specs.hardware import get_gpu
from sim.specs.models import get_model
from tests.helpers import ROOFLINE, chain_hashes, cluster, llm, tool, workload


def _iter_model(model: str = "llama-2-7b", tp: int = 1):
    return ROOFLINE.for_replica(
        ReplicaHardware(get_model(model), get_gpu("a100-80gb"), tp, 1, float("inf"), 0.0, "local")
    )


def test_single_request_ttft_is_prefill_time_and_e2e_adds_decodes() -> None:
    it = _iter_model()
    w = workload([llm("a", "s", 1000, 5)])
    r = simulate(w, cluster(), cost_model=ROOFLINE)
    row = r.calls.iloc[0]
    prefill = it.iteration_time(BatchShape((1000,), (0,)))
    assert row.ttft_s == pytest.approx(prefill, rel=1e-12)
    # four decode steps attending to 1001..1004 tokens
    decodes = sum(
        it.iteration_time(BatchShape(num_decode=1, decode_context_sum=1000 + j))
        for j in range(1, 5)
    )
    assert row.e2e_s == pytest.approx(prefill + decodes, rel=1e-12)
    assert row.tpot_s == pytest.approx(decodes / 4, rel=1e-12)
    assert r.summary["makespan_s"] == pytest.approx(prefill + decodes, rel=1e-9)


def test_chunked_prefill_splits_long_prompt_by_token_budget() -> None:
    it = _iter_model()
    w = workload([llm("a", "s", 5000, 1)])
    r = simulate(w, cluster(max_num_batched_tokens=2048, max_num_seqs=64), cost_model=ROOFLINE)
    chunks = [(2048, 0), (2048, 2048), (904, 4096)]
    expected = sum(it.iteration_time(BatchShape((c,), (ctx,))) for c, ctx in chunks)
    assert r.calls.iloc[0].ttft_s == pytest.approx(expected, rel=1e-12)


def test_second_session_sharing_prefix_hits_cache() -> None:
    shared = chain_hashes(0, 1600)  # 100 blocks of 16 tokens
    own = chain_hashes(1, 400, salt=1)
    w = workload(
        [
            llm("a", "s1", 1600, 2, t=0.0, hashes=shared),
            llm("b", "s2", 2000, 2, t=10.0, hashes=shared + own),
        ]
    )
    r = simulate(w, cluster(), cost_model=ROOFLINE)
    rows = r.calls.set_index("call_id")
    assert rows.loc["a", "cached_tokens"] == 0
    assert rows.loc["b", "cached_tokens"] == 1600
    it = _iter_model()
    assert rows.loc["b", "ttft_s"] == pytest.approx(
        it.iteration_time(BatchShape((400,), (1600,))), rel=1e-12
    )
    assert r.summary["prefix_hit_rate"] == pytest.approx(1600 / 3600)


def test_full_prompt_hit_still_recomputes_last_token() -> None:
    h = chain_hashes(0, 320)
    w = workload([llm("a", "s1", 320, 1, t=0.0, hashes=h), llm("b", "s2", 320, 1, t=5.0, hashes=h)])
    r = simulate(w, cluster(), cost_model=ROOFLINE)
    assert r.calls.set_index("call_id").loc["b", "cached_tokens"] == 319


def test_request_larger_than_kv_capacity_is_rejected_not_hung() -> None:
    cfg = cluster(num_gpu_blocks_override=10)  # 160 tokens of KV
    w = workload([llm("big", "s", 150, 20), llm("ok", "s2", 100, 10, t=1.0)])
    r = simulate(w, cfg, cost_model=ROOFLINE)
    rows = r.calls.set_index("call_id")
    assert rows.loc["big", "status"] == "failed"
    assert rows.loc["big", "reason"] == "exceeds_kv_capacity"
    assert rows.loc["ok", "status"] == "completed"
    assert r.summary["failed_requests"] == 1 and r.summary["completed_requests"] == 1


def test_child_of_failed_call_fails_with_reason() -> None:
    cfg = cluster(num_gpu_blocks_override=10)
    w = workload(
        [
            llm("big", "s", 150, 20),
            tool("t", "s", 1.0, ("big",)),
            llm("next", "s", 10, 1, parents=("t",)),
        ]
    )
    r = simulate(w, cfg, cost_model=ROOFLINE)
    rows = r.calls.set_index("call_id")
    assert list(rows["status"]) == ["failed"] * 3
    assert rows.loc["next", "reason"] == "parent_failed"


def test_closed_loop_gap_and_tool_call_timing() -> None:
    w = workload(
        [
            llm("a", "s", 200, 3),
            tool("t", "s", 2.5, ("a",)),
            llm("b", "s", 400, 3, parents=("t",), gap=0.75),
        ]
    )
    r = simulate(w, cluster(), cost_model=ROOFLINE)
    rows = r.calls.set_index("call_id")
    assert rows.loc["t", "issue_s"] == pytest.approx(rows.loc["a", "finish_s"])
    assert rows.loc["t", "finish_s"] == pytest.approx(rows.loc["a", "finish_s"] + 2.5)
    assert rows.loc["b", "issue_s"] == pytest.approx(rows.loc["t", "finish_s"] + 0.75)
    sess = r.sessions.set_index("session_id").loc["s"]
    assert sess.session_s == pytest.approx(rows.loc["b", "finish_s"])


def test_memory_pressure_preempts_and_recomputes() -> None:
    # 40 blocks = 640 tokens; four 150-token prompts decoding 200 tokens each cannot all fit
    cfg = cluster(num_gpu_blocks_override=40, max_num_seqs=8)
    w = workload([llm(f"c{i}", f"s{i}", 150, 200, t=0.0) for i in range(4)])
    r = simulate(w, cfg, cost_model=ROOFLINE, check_invariants=True)
    assert r.summary["completed_requests"] == 4
    assert r.summary["preemptions"] > 0
    assert (r.calls["generated_tokens"] == r.calls["output_tokens"]).all()


def test_two_replicas_round_robin_spreads_calls() -> None:
    w = workload([llm(f"c{i}", f"s{i}", 100, 5, t=i * 0.001) for i in range(6)])
    r = simulate(w, cluster(replicas=2), cost_model=ROOFLINE)
    assert sorted(r.calls["replica"].value_counts().tolist()) == [3, 3]


def test_gpu_hours_and_cost_follow_replicas_and_price() -> None:
    w = workload([llm("a", "s", 500, 50)])
    r = simulate(w, cluster(model="llama-2-70b", tp=4, replicas=2), cost_model=ROOFLINE)
    span = r.summary["makespan_s"]
    assert r.summary["gpu_hours"] == pytest.approx(8 * span / 3600, rel=1e-9)
    assert r.summary["cost_usd"] == pytest.approx(
        r.summary["gpu_hours"] * get_gpu("a100-80gb").price_per_hour, rel=1e-9
    )


def test_fast_forward_matches_step_by_step_exactly() -> None:
    calls = []
    for s in range(12):
        prev = None
        for k in range(4):
            cid = f"s{s}-{k}"
            calls.append(
                llm(cid, f"s{s}", 300 + 200 * k, 30 + 7 * s, t=0.3 * s, parents=(prev,) if prev else (),
                    gap=0.2 if prev else 0.0, hashes=chain_hashes(s, 300 + 200 * k))
            )  # fmt: skip
            prev = cid
    w = workload(calls)
    fast = simulate(w, cluster(replicas=2, num_gpu_blocks_override=300), cost_model=ROOFLINE)
    slow = simulate(
        w, cluster(replicas=2, num_gpu_blocks_override=300, fast_forward=False), cost_model=ROOFLINE
    )
    a = fast.calls.set_index("call_id").sort_index()
    b = slow.calls.set_index("call_id").sort_index()
    for col in ("issue_s", "admit_s", "first_token_s", "finish_s"):
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-9)
    assert (a["preemptions"] == b["preemptions"]).all()
    assert fast.perf["events"] < slow.perf["events"]
    assert math.isclose(fast.summary["makespan_s"], slow.summary["makespan_s"], rel_tol=1e-9)


def test_max_model_len_rejects_longer_calls() -> None:
    w = workload([llm("long", "s", 900, 200), llm("ok", "s2", 700, 100, t=0.5)])
    r = simulate(w, cluster(max_model_len=1000), cost_model=ROOFLINE)
    rows = r.calls.set_index("call_id")
    assert rows.loc["long", "reason"] == "exceeds_max_model_len"
    assert rows.loc["ok", "status"] == "completed"
