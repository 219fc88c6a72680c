"""KV retention across tool calls: LRU, Continuum TTL pins, InferCept preserve/discard/swap."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from policies import registry
from sim.cluster.config import ClusterConfig
from sim.costmodel.base import BatchShape, ReplicaHardware, kv_transfer_time
from sim.simulation import simulate
from sim.specs.hardware import get_gpu
from sim.specs.models import get_model
from sim.specs.topology import build_topology
from sim.workload.calls import Call
from tests.helpers import ROOFLINE, chain_hashes, cluster, llm, tool, workload


def small(retention: str, fast_forward: bool = True) -> ClusterConfig:
    """One llama-2-7b replica with 100 KV blocks (1600 tokens)."""
    cfg = cluster(num_gpu_blocks_override=100, fast_forward=fast_forward)
    return replace(cfg, policies=replace(cfg.policies, retention=retention))


def tool_session(tool_s: float) -> list[Call]:
    """Session A pauses on a tool call between a1 (800-token prompt: 50 blocks) and a2,
    which extends a1's prompt; sessions b1, b2, b3 (36 blocks each) press on memory."""
    return [
        llm("a1", "A", 800, 2, t=0.0, hashes=chain_hashes(1, 800)),
        tool("t", "A", tool_s, ("a1",)),
        llm("a2", "A", 1000, 2, parents=("t",), hashes=chain_hashes(1, 1000)),
        llm("b1", "B1", 560, 2, t=0.5, hashes=chain_hashes(2, 560)),
        llm("b2", "B2", 560, 2, t=1.5, hashes=chain_hashes(3, 560)),
        llm("b3", "B3", 560, 2, t=7.0, hashes=chain_hashes(4, 560)),
    ]


def cached(retention: str, tool_s: float) -> int:
    r = simulate(workload(tool_session(tool_s)), small(retention), cost_model=ROOFLINE)
    assert r.summary["completed_requests"] == 5
    return int(r.calls.set_index("call_id")["cached_tokens"]["a2"])


def test_lru_evicts_the_waiting_sessions_oldest_blocks() -> None:
    # b2 needs 36 blocks with 15 free: LRU evicts 21 of a1's (older) blocks, tail first
    assert cached("lru", 2.0) == (50 - 21) * 16


def test_ttl_pin_keeps_blocks_through_a_tool_call_shorter_than_the_ttl() -> None:
    assert cached("ttl_pin:ttl_s=5", 2.0) == 800


def test_ttl_pin_drops_blocks_after_the_ttl() -> None:
    # the pin expires at ~5 s; b3 at 7 s evicts a1's blocks before a2 arrives at ~10 s
    assert cached("ttl_pin:ttl_s=5", 10.0) < 800


def test_ttl_pin_learns_its_wait_distribution_from_observed_tool_waits() -> None:
    pol = registry.create("retention", "ttl_pin:min_samples=3")
    cold = pol.distribution()
    for i, wait in enumerate((1.0, 2.0, 3.0, 40.0)):
        c = llm(f"c{i}", f"s{i}", 10, 1)
        pol.on_call_finished(c, False, 0.0, None)
        pol.on_call_arrived(llm(f"d{i}", f"s{i}", 10, 1), wait)
    assert len(cold.tau) == 64  # the exponential's grid before enough waits are seen
    assert list(pol.distribution().tau) == [1.0, 2.0, 3.0, 40.0]


def test_infercept_swaps_to_host_and_swaps_back_priced_over_pcie() -> None:
    # a 10 s tool call: LRU and a 5 s TTL lose a1's blocks, InferCept swaps them to
    # host DRAM and back; a2's TTFT is its 200-token prefill plus the swap-in
    assert cached("lru", 10.0) < 800
    r = simulate(workload(tool_session(10.0)), small("infercept"), cost_model=ROOFLINE)
    a2 = r.calls.set_index("call_id").loc["a2"]
    assert a2.cached_tokens == 800
    spec = get_model("llama-2-7b")
    it = ROOFLINE.for_replica(ReplicaHardware(spec, get_gpu("a100-80gb"), 1, 1))
    topo = build_topology([("dgx-a100", 8)], "a100-80gb")
    path = topo.path(topo.gpu_names[0], "n0/cpu0")
    swap = kv_transfer_time(50 * 16 * spec.kv_bytes_per_token, path)
    assert a2.ttft_s == pytest.approx(
        it.iteration_time(BatchShape((200,), (800,))) + swap, rel=1e-9
    )


class _Replica:
    """A KVCostView with set costs."""

    block_size = 16
    active_blocks = 100
    kv_capacity_blocks = 1000

    def __init__(self, host: int, recompute_s: float, swap_s: float) -> None:
        self.host_capacity_blocks = host
        self._r, self._s = recompute_s, swap_s

    def recompute_time(self, tokens: int) -> float:
        return self._r

    def swap_time(self, tokens: int) -> float:
        return self._s


def test_infercept_picks_the_least_memory_time_waste() -> None:
    call = llm("c", "S", 1584, 16)  # 100 blocks
    pol = registry.create("retention", "infercept:default_wait_s=2")
    # preserve 2 x 100 = 200; discard 0.5 x 200 = 100; swap 2 x 0.1 x 100 = 20
    assert pol.on_call_finished(call, True, 0.0, _Replica(10_000, 0.5, 0.1)).swap_to_host
    # no host tier: discard (100 < 200)
    assert pol.on_call_finished(call, True, 0.0, _Replica(0, 0.5, 0.1)).discard
    # expensive recompute, no host tier: preserve (pinned)
    d = pol.on_call_finished(call, True, 0.0, _Replica(0, 5.0, 0.1))
    assert d.pin_s > 0 and not d.discard and not d.swap_to_host
    # a session's last call is plain LRU
    assert pol.on_call_finished(call, False, 0.0, _Replica(10_000, 0.5, 0.1)) == type(d)()


@pytest.mark.parametrize(
    "retention", ["ttl_pin:ttl_s=3", "infercept", "infercept:default_wait_s=100"]
)
def test_retention_keeps_fast_forward_exact_and_accounting_sound(retention: str) -> None:
    calls = []
    for s in range(8):
        prev = None
        for k in range(3):
            cid = f"s{s}-{k}"
            ctx = 300 + 200 * k
            calls.append(
                llm(cid, f"s{s}", ctx, 30 + 7 * s, t=0.3 * s, parents=(prev,) if prev else (),
                    gap=0.4 if prev else 0.0, hashes=chain_hashes(s, ctx))
            )  # fmt: skip
            if k < 2:
                calls.append(tool(f"{cid}-t", f"s{s}", 0.5 + 0.5 * s, (cid,)))
                prev = f"{cid}-t"
    w = workload(calls)
    cfg = replace(
        small(retention),
        deployments=(replace(small(retention).deployments[0], num_gpu_blocks_override=150),),
    )
    fast = simulate(w, cfg, cost_model=ROOFLINE, check_invariants=True)
    slow = simulate(w, replace(cfg, fast_forward=False), cost_model=ROOFLINE, check_invariants=True)
    assert fast.summary["completed_requests"] == len([c for c in calls if c.kind == "llm"])
    a = fast.calls.set_index("call_id").sort_index()
    b = slow.calls.set_index("call_id").sort_index()
    for col in ("admit_s", "first_token_s", "finish_s"):
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-9)
    assert (a["cached_tokens"] == b["cached_tokens"]).all()
