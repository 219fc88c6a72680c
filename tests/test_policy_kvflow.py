"""KVFlow's eviction and prefetch against LRU on hand-worked workflows."""

from __future__ import annotations

from dataclasses import replace

import pytest

from policies.retention.kvflow import KVFlow
from sim.engine.kvcache import BlockPool, KVCacheManager
from sim.simulation import simulate
from tests.helpers import ROOFLINE, cluster, llm, workload

PROMPT = 1024  # tokens of each agent's fixed prompt: 64 blocks of 16


def _agent(a: int) -> tuple[int, ...]:
    return tuple((a << 20) + i for i in range(PROMPT // 16))


def _cycle(order: str, gap: float = 0.0) -> list:
    """One workflow calling the agents of ``order`` one after another (``gap`` seconds
    apart); each call is the agent's fixed prompt plus 16 fresh tokens, and writes 4."""
    calls = []
    prev: tuple[str, ...] = ()
    for i, name in enumerate(order):
        cid = f"s{i}{name}"
        hashes = _agent(ord(name))
        calls.append(llm(cid, "w", PROMPT + 16, 4, parents=prev, gap=gap, hashes=hashes))
        prev = (cid,)
    return calls


def _hits(retention: str, order: str, blocks: int, **dep: object) -> dict[str, int]:
    cfg = cluster(num_gpu_blocks_override=blocks, **dep)
    cfg = replace(cfg, policies=replace(cfg.policies, retention=retention))
    r = simulate(workload(_cycle(order)), cfg, cost_model=ROOFLINE, check_invariants=True)
    assert r.summary["completed_requests"] == len(order)
    return {str(k): int(v) for k, v in r.calls.set_index("call_id")["cached_tokens"].items()}


def _busy(retention: str, order: str, blocks: int, gap: float) -> tuple[float, int]:
    """GPU-busy seconds of the run (a CPU tier of 1 GiB), and the last call's hit."""
    cfg = cluster(num_gpu_blocks_override=blocks, cpu_offload_gib=1.0)
    cfg = replace(cfg, policies=replace(cfg.policies, retention=retention))
    calls = _cycle(order, gap)
    r = simulate(workload(calls), cfg, cost_model=ROOFLINE, check_invariants=True)
    hit = int(r.calls.set_index("call_id")["cached_tokens"][calls[-1].call_id])
    return float(r.replicas["busy_s"].sum()), hit


def test_kvflow_keeps_the_agent_that_runs_next_and_evicts_the_one_that_runs_last() -> None:
    # A, B, C, A with HBM for two prompts (128 blocks) + 40: admitting C (66 blocks, 40
    # free) must evict 26 blocks of A or B.  LRU takes them from A, the least recently
    # used, which runs next; KVFlow ranks A at 1 step to execution and B (never needed
    # again) above it, so it evicts B and A's next call hits its whole prompt.
    lru = _hits("lru", "ABCA", 168)
    flow = _hits("kvflow", "ABCA", 168)
    assert lru["s3A"] == (64 - 26) * 16
    assert flow["s3A"] == PROMPT
    assert lru["s1B"] == flow["s1B"] == 0 and lru["s2C"] == flow["s2C"] == 0


def test_a_shared_node_ranks_by_the_sharer_that_runs_soonest() -> None:
    # A and B share a 32-block system prefix S, then diverge (a, b: 32 blocks each).
    # Order A, B, C, A: when C is admitted (66 blocks, 34 free), one 32-block node goes.
    # B released S last and never runs again, but A (next) shares S, so S ranks at A's
    # 1 step; b, needed by nobody, is evicted; A's next call hits S and a in full.  LRU
    # evicts a (A's release is the oldest) and A hits S only.
    shared = tuple((9 << 20) + i for i in range(32))
    prompts = {
        "A": shared + tuple((10 << 20) + i for i in range(32)),
        "B": shared + tuple((11 << 20) + i for i in range(32)),
        "C": _agent(ord("C")),
    }
    calls, prev = [], ()
    for i, name in enumerate("ABCA"):
        cid = f"s{i}{name}"
        calls.append(llm(cid, "w", PROMPT + 16, 4, parents=prev, hashes=prompts[name]))
        prev = (cid,)
    hits = {}
    for retention in ("lru", "kvflow"):
        cfg = cluster(num_gpu_blocks_override=130)
        cfg = replace(cfg, policies=replace(cfg.policies, retention=retention))
        r = simulate(workload(calls), cfg, cost_model=ROOFLINE, check_invariants=True)
        hits[retention] = r.calls.set_index("call_id")["cached_tokens"].to_dict()
    assert hits["lru"]["s1B"] == hits["kvflow"]["s1B"] == 32 * 16  # B hits S
    assert hits["kvflow"]["s3A"] == PROMPT
    assert hits["lru"]["s3A"] == 32 * 16


def test_ranked_eviction_takes_the_highest_rank_first_and_lru_among_equals() -> None:
    pool = BlockPool(12, 16)
    ranks = {1: 0, 2: 5, 3: 5}
    for h in (1, 2, 3):  # three 4-block entries released oldest first: 1, 2, 3
        pool.allocate(4, 0.0)
        pool.register((h,), 0, 4)
        pool.unref((h,), 1, 0.0)
    pool.rank = lambda h: ranks[h]
    assert pool.allocate(4, 1.0)  # rank 5 beats rank 0; 2 is older than 3
    assert 2 not in pool.hashes() and {1, 3} <= pool.hashes()
    pool.check()
    assert pool.allocate(4, 1.0)
    assert pool.hashes() == {1}


def test_prefetch_loads_the_next_steps_prompt_from_the_host_tier() -> None:
    calls = _cycle("ABCA")
    policy = KVFlow()
    policy.on_workload(calls)
    policy.on_call_arrived(calls[0], 0.0)
    # at A's arrival the next step is B (1 step away); C (2 steps) is not prefetched
    assert [c.call_id for c in policy.prefetch(calls[0], 0.0)] == ["s1B"]
    assert policy.eviction_rank(_agent(ord("C"))[0]) == 2
    assert policy.eviction_rank(_agent(ord("A"))[0]) == 0  # A's call runs now
    # B's prompt sits in the write-through host tier only: prefetch copies it into HBM
    # as cached entries, the host keeping its copy
    pool = BlockPool(100, 16, host_capacity_blocks=100)
    kv = KVCacheManager(pool, host_write_through=True)
    b = _agent(ord("B"))
    pool.host_store(b, 0, len(b), 1)
    assert kv.cached_prefix_tokens(calls[1]) == 0
    assert kv.prefetch(calls[1], 0.0) == (b[-1], 64)
    assert kv.cached_prefix_tokens(calls[1]) == PROMPT
    assert pool.evictable_blocks == 64 and pool.host_used == 64
    pool.check()
    assert kv.prefetch(calls[1], 0.0) is None  # already in HBM: nothing to load


def test_a_prefetch_evicts_only_entries_needed_later_than_its_prompt() -> None:
    # HBM of 68 blocks, 4 free; a 64-block entry X cached.  Loading B's prompt (rank 1:
    # its last hash) from the host tier needs 64 blocks: X goes when it ranks 2 (needed
    # later), stays and nothing is loaded when it ranks 1 or 0 (needed as soon)
    b = _agent(ord("B"))
    call = _cycle("B")[0]
    x = _agent(ord("X"))
    for x_rank, loaded in ((2, True), (1, False), (0, False)):
        pool = BlockPool(68, 16, host_capacity_blocks=100)
        kv = KVCacheManager(pool, host_write_through=True)
        pool.allocate(64, 0.0)
        pool.register(x, 0, 1)
        pool.unref(x, len(x), 0.0)
        pool.host_store(b, 0, len(b), 1)
        pool.rank = lambda h, r=x_rank: r if h == x[0] else 1
        assert (kv.prefetch(call, 0.0) is not None) is loaded
        assert (x[-1] in pool.hashes()) is not loaded  # evicted from its end
        assert (b[0] in pool.hashes()) is loaded
        pool.check()


def test_prefetch_hides_the_host_load_that_lru_pays_inline() -> None:
    # HBM for 100 blocks: admitting B (66) evicts 30 blocks of A's prompt, which the
    # write-through CPU tier still holds.  Under LRU, A's second call loads them when it
    # is admitted (its step waits for the copy); KVFlow prefetches them as soon as B
    # finishes frees memory, during the 0.5 s before A's call arrives.
    lru, lru_hit = _busy("lru", "ABA", 100, 0.5)
    flow, flow_hit = _busy("kvflow", "ABA", 100, 0.5)
    no_pf, _ = _busy("kvflow:prefetch_steps=0", "ABA", 100, 0.5)
    assert lru_hit == flow_hit == PROMPT  # both hit the whole prompt, HBM or host
    assert no_pf == pytest.approx(lru)  # one candidate to evict: the same choice
    assert flow < lru - 1e-4
    # with no gap the copy cannot hide: A's call waits for it as LRU's step does
    assert _busy("kvflow", "ABA", 100, 0.0)[0] == pytest.approx(_busy("lru", "ABA", 100, 0.0)[0])


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(Exception, match="kvflow"):
        KVFlow(max_steps=-1)
