"""Tokencake's decisions against LRU / FCFS / InferCept on hand-worked cases."""

from __future__ import annotations

from dataclasses import replace

import pytest

from policies import registry
from sim.costmodel.base import BatchShape, ReplicaHardware
from sim.experiments.conformance import FakeSeq
from sim.simulation import simulate
from sim.specs.hardware import get_gpu
from sim.specs.models import get_model
from tests.helpers import ROOFLINE, chain_hashes, cluster, llm, workload
from tests.test_policies_retention import small, tool_session


def _a2(retention: str, tool_s: float = 10.0, fast_forward: bool = True) -> tuple[float, int]:
    """Session A pauses on a ``tool_s`` tool call while three other sessions fill the
    100-block replica (``tool_session``): a2's (TTFT, cached tokens)."""
    cfg = small(retention, fast_forward)
    r = simulate(workload(tool_session(tool_s)), cfg, cost_model=ROOFLINE)
    assert r.summary["completed_requests"] == 5
    a2 = r.calls.set_index("call_id").loc["a2"]
    return float(a2.ttft_s), int(a2.cached_tokens)


def test_time_scheduler_offloads_during_the_tool_call_and_uploads_before_it_returns() -> None:
    # a1's 800-token context (50 blocks) waits on a 10 s tool call.  LRU loses most of
    # it to b2 and b3; InferCept swaps it out and loads it when a2 is admitted (the
    # copy adds to a2's first step); Tokencake predicts a 9 s stall, offloads at once
    # and uploads it back at ~9 s, so a2 hits all 800 tokens in HBM and its TTFT is
    # the 200-token prefill alone
    prefill = (
        ROOFLINE.for_replica(ReplicaHardware(get_model("llama-2-7b"), get_gpu("a100-80gb"), 1, 1))
    ).iteration_time(BatchShape((200,), (800,)))
    _, lru_cached = _a2("lru")
    ic_ttft, ic_cached = _a2("infercept")
    tc_ttft, tc_cached = _a2("tokencake:default_wait_s=9")
    assert lru_cached < 800
    assert ic_cached == tc_cached == 800
    assert tc_ttft == pytest.approx(prefill, rel=1e-9)
    assert ic_ttft > tc_ttft * 1.01  # InferCept pays the swap-in at admission
    # fast-forward and step by step agree with an upload landing
    assert _a2("tokencake:default_wait_s=9", fast_forward=False) == pytest.approx(
        (tc_ttft, tc_cached), rel=1e-9
    )


def test_time_scheduler_keeps_short_stalls_in_the_gpu_cache() -> None:
    pol = registry.create("retention", "tokencake:default_wait_s=0.001")
    from sim.experiments.conformance import _Cost

    # 800 tokens copy in 16 ms one way: a 1 ms stall cannot pay the round trip
    d = pol.on_call_finished(llm("c", "S", 790, 10), True, 0.0, _Cost())
    assert not d.swap_to_host and d.upload_after_s is None
    long = registry.create("retention", "tokencake:default_wait_s=5")
    d = long.on_call_finished(llm("c", "S", 790, 10), True, 0.0, _Cost())
    assert d.swap_to_host and d.upload_after_s == pytest.approx(5 - 0.016)
    # a session's last call stays in the LRU cache
    assert not long.on_call_finished(llm("e", "S", 790, 10), False, 0.0, _Cost()).swap_to_host


def _inversion(batching: str) -> dict[str, tuple[int, float]]:
    """Worker b1 (one parent: not critical) grows to 77 of 100 blocks; the critical
    root a1 arrives at 0.5 s and grows to 55: (preemptions, finish time) per call."""
    calls = [
        llm("b0", "B", 16, 1, t=0.0, hashes=chain_hashes(2, 16)),
        llm("b1", "B", 320, 900, parents=("b0",), hashes=chain_hashes(2, 320)),
        llm("a1", "A", 480, 400, t=0.5, hashes=chain_hashes(1, 480)),
    ]
    cfg = cluster(num_gpu_blocks_override=100)
    cfg = replace(cfg, policies=replace(cfg.policies, batching=batching))
    r = simulate(workload(calls), cfg, cost_model=ROOFLINE)
    assert r.summary["completed_requests"] == 3
    c = r.calls.set_index("call_id")
    return {k: (int(c.preemptions[k]), float(c.finish_s[k])) for k in ("a1", "b1")}


def test_space_scheduler_preempts_the_worker_not_the_critical_agent() -> None:
    # FCFS preempts the latest admitted call when memory runs out: the critical a1
    # (critical inversion).  Tokencake preempts the non-critical b1 instead, and
    # holds it back while a1's reserved growth is due, so a1 finishes sooner
    fcfs = _inversion("fcfs")
    tc = _inversion("tokencake")
    assert fcfs["a1"][0] >= 1 and fcfs["b1"][0] == 0
    assert tc["a1"][0] == 0 and tc["b1"][0] >= 1
    assert tc["a1"][1] < fcfs["a1"][1]


def test_space_scheduler_orders_critical_first_and_reserves_their_memory() -> None:
    pol = registry.create("batching", "tokencake")
    root = FakeSeq(llm("r", "A", 900, 100), 2.0)  # critical: a root
    join = FakeSeq(llm("j", "A", 1000, 100, parents=("x", "y")), 3.0)  # critical: a join
    step = FakeSeq(llm("s", "B", 500, 100, parents=("t",)), 1.0)  # a sub-agent's step
    assert pol.admission_reserve(step, [], 100_000, 0.0) == 0  # no critical call seen yet
    for s in (root, join, step):
        pol.on_arrival(s, [], s.arrival_s)
    assert [s.call.call_id for s in pol.order([step, join, root], 3.0)] == ["r", "j", "s"]
    # running: the root with 60 of its 100 output tokens still due.  Mean critical
    # context (1000 + 1100) / 2 = 1050, plus 60: 1110 tokens, within [5%, 30%] of 10k
    running = [replace(root, generated_tokens=40), step]
    assert pol.admission_reserve(step, running, 10_000, 3.0) == 1110
    assert pol.admission_reserve(step, running, 100_000, 3.0) == 5000  # at least 5%
    assert pol.admission_reserve(step, running, 2_000, 3.0) == 600  # at most 30%
    assert pol.admission_reserve(join, running, 10_000, 3.0) == 0  # critical: no limit
    assert pol.preempt_victim([root, step, join], 3.0) == 1


@pytest.mark.parametrize("batching", ["tokencake", "fcfs"])
def test_uploads_and_reserves_keep_the_accounting_and_fast_forward_exact(batching: str) -> None:
    # orchestrator / sub-agent applications on a small pool: offloads, predictive
    # uploads landing during spans and iterations, reserve-blocked admissions; the KV
    # invariants hold at every step and fast-forward equals step by step
    from sim.workload.calls import Workload
    from sim.workload.traces.arrivals import ArrivalConfig
    from sim.workload.traces.synth import FanoutConfig, SynthConfig, generate

    app = FanoutConfig(rounds=1, subagents=3, subagent_turns=3)
    cfg_w = SynthConfig(seed=3, sessions=6, arrivals=ArrivalConfig(rate_per_s=0.5), agents=(app,))
    wl = Workload(list(generate(cfg_w)))
    out = []
    for ff in (True, False):
        cfg = cluster(num_gpu_blocks_override=600, fast_forward=ff)
        pol = replace(cfg.policies, batching=batching, retention="tokencake:default_wait_s=3")
        r = simulate(wl, replace(cfg, policies=pol), cost_model=ROOFLINE, check_invariants=True)
        assert r.summary["failed_requests"] == 0
        out.append(r.calls.sort_values("call_id")[["call_id", "finish_s", "cached_tokens"]])
    assert list(out[0].call_id) == list(out[1].call_id)
    assert list(out[0].cached_tokens) == list(out[1].cached_tokens)
    assert out[0].finish_s.to_numpy() == pytest.approx(out[1].finish_s.to_numpy(), rel=1e-9)


def _reserved(batching: str) -> tuple[float, float]:
    """The critical root a1 (480-token prompt, 100 outputs) decodes on a 100-block pool
    when the non-critical b1 (800 tokens: 50 blocks, fits in what is free) arrives:
    (a1's finish, b1's first token)."""
    calls = [
        llm("a1", "A", 480, 100, t=0.0, hashes=chain_hashes(1, 480)),
        llm("b0", "B", 16, 1, t=0.0, hashes=chain_hashes(2, 16)),
        llm("b1", "B", 800, 2, parents=("b0",), hashes=chain_hashes(2, 800)),
    ]
    cfg = cluster(num_gpu_blocks_override=100)
    cfg = replace(cfg, policies=replace(cfg.policies, batching=batching))
    r = simulate(workload(calls), cfg, cost_model=ROOFLINE, check_invariants=True)
    c = r.calls.set_index("call_id")
    return float(c.finish_s["a1"]), float(c.first_token_s["b1"])


def test_space_scheduler_holds_a_worker_back_from_the_reserved_partition() -> None:
    # reserve while a1 runs: its remaining growth (<= 99 tokens) + the mean critical
    # context ((17 + 580) / 2 tokens) = 19-25 blocks; b1 needs 50 of the 63-69 blocks
    # a1 leaves: FCFS admits it at once, Tokencake only once a1 is done
    a1_fcfs, b1_fcfs = _reserved("fcfs")
    a1_tc, b1_tc = _reserved("tokencake")
    assert b1_fcfs < a1_fcfs
    assert b1_tc > a1_tc
    assert a1_tc < a1_fcfs  # the critical agent does not share its memory or its steps
