"""Continuum's decisions against LRU / FCFS on hand-worked cases."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from policies import registry
from sim.experiments.conformance import FakeSeq
from sim.simulation import simulate
from tests.helpers import ROOFLINE, chain_hashes, cluster, llm, tool, workload


@dataclass
class _Replica:
    """A KVCostView: 1000 blocks of 16 tokens; prefill at 0.1 ms per token."""

    outstanding_requests: int = 4
    pending_prefill_tokens: int = 0
    num_waiting: int = 0
    block_size: int = 16
    active_blocks: int = 100
    kv_capacity_blocks: int = 1000
    host_capacity_blocks: int = 0

    def recompute_time(self, tokens: int) -> float:
        return 1e-4 * tokens

    def swap_time(self, tokens: int) -> float:
        return 2e-5 * tokens


def _learn(pol: object, waits: list[float]) -> None:
    for i, w in enumerate(waits):
        pol.on_call_finished(llm(f"w{i}", f"W{i}", 10, 1), True, 0.0, _Replica())  # type: ignore[attr-defined]
        pol.on_call_arrived(llm(f"v{i}", f"W{i}", 10, 1), w)  # type: ignore[attr-defined]


def test_ttl_is_the_cost_benefit_argmax_over_the_tool_time_cdf() -> None:
    pol = registry.create("retention", "ttl_pin:min_samples=4")
    _learn(pol, [1.0, 2.0, 3.0, 40.0])
    call = llm("c", "S", 10_000 - 16, 16)  # 10,000 tokens: 625 blocks, B = 1 s
    # E[min(D, tau)] at tau = 1, 2, 3, 40: 1, 1.75, 2.25, 11.5 s.  Four calls on the
    # replica: rate N c / K = 4 x 625 / 1000 = 2.5, so P B - 2.5 E = 0.25 - 2.5,
    # 0.5 - 4.375, 0.75 - 5.625, 1 - 28.75: never positive, no pin
    assert pol.ttl(call, _Replica()) == 0.0
    assert pol.on_call_finished(call, True, 0.0, _Replica()).pin_s == 0.0
    # one call on the replica and a queue of 90,000 prompt tokens (B = 1 + 9 = 10 s):
    # rate 0.625; values 2.5 - 0.625, 5 - 1.09, 7.5 - 1.41, 10 - 7.19: the best is tau = 3
    busy = _Replica(outstanding_requests=1, pending_prefill_tokens=90_000)
    assert pol.ttl(call, busy) == pytest.approx(3.0)
    # a fixed TTL (the paper's static ablation) ignores the costs
    assert registry.create("retention", "ttl_pin:ttl_s=7").ttl(call, _Replica()) == 7.0
    # a session's last call is plain LRU
    assert pol.on_call_finished(call, False, 0.0, busy).pin_s == 0.0


def test_cold_start_pins_only_when_the_exponential_says_it_pays() -> None:
    pol = registry.create("retention", "ttl_pin:default_wait_s=2")
    small = llm("c", "S", 160, 1)  # 11 blocks, B = 0.016 s: not worth 2 s of memory
    big = llm("d", "S", 30_000, 1)  # 1876 blocks but a long queue behind it
    assert pol.ttl(small, _Replica(outstanding_requests=50)) == 0.0
    ttl = pol.ttl(big, _Replica(outstanding_requests=1, pending_prefill_tokens=200_000))
    assert 2.0 < ttl < 10.0  # the exponential's grid tops out at 2 x ln(128) = 9.7 s


def test_program_fcfs_admits_the_older_program_first() -> None:
    pol = registry.create("batching", "program_fcfs")
    a1 = FakeSeq(llm("a1", "A", 10, 1), 0.0)
    b1 = FakeSeq(llm("b1", "B", 10, 1), 1.0)
    a2 = FakeSeq(llm("a2", "A", 10, 1), 5.0)  # A's second turn, after its tool call
    for s in (a1, b1, a2):
        pol.on_arrival(s, [], s.arrival_s)
    fcfs = registry.create("batching", "fcfs")
    assert [s.call.call_id for s in fcfs.order([b1, a2], 5.0)] == ["b1", "a2"]
    assert [s.call.call_id for s in pol.order([b1, a2], 5.0)] == ["a2", "b1"]
    assert pol.preempt_victim([a2, b1], 5.0) == 1  # the younger program's call


def _pressure(retention: str) -> tuple[int, int]:
    """A pins 50 of 100 blocks during a 20 s tool call while B decodes long enough to
    need them: (B's preemptions, A's second call's cached tokens)."""
    calls = [
        llm("a1", "A", 800, 2, t=0.0, hashes=chain_hashes(1, 800)),
        tool("t", "A", 20.0, ("a1",)),
        llm("a2", "A", 1000, 2, parents=("t",), hashes=chain_hashes(1, 1000)),
        llm("b1", "B", 320, 900, t=0.5, hashes=chain_hashes(2, 320)),
    ]
    cfg = cluster(num_gpu_blocks_override=100)
    cfg = replace(cfg, policies=replace(cfg.policies, retention=retention))
    r = simulate(workload(calls), cfg, cost_model=ROOFLINE)
    assert r.summary["completed_requests"] == 3
    return int(r.summary["preemptions"]), int(r.calls.set_index("call_id")["cached_tokens"]["a2"])


def test_a_pin_yields_to_a_running_call_instead_of_preempting_it() -> None:
    # B (320 + 900 tokens = 77 blocks) outgrows the 50 free blocks while A's pin holds
    # the other 50: the pin is released early, B is never preempted
    preempted, _ = _pressure("ttl_pin:ttl_s=30")
    assert preempted == 0
