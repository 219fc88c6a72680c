"""Routing policies: hand-built situations whose right answer is known and differs from round robin."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from policies import registry
from policies.base import Router
from sim.cluster.config import PolicyConfig
from sim.costmodel.base import BatchShape, ReplicaHardware, kv_transfer_time
from sim.experiments.conformance import FakeCluster, FakeReplica
from sim.simulation import simulate
from sim.specs.hardware import get_gpu
from sim.specs.models import get_model
from sim.specs.topology import build_topology
from tests.helpers import ROOFLINE, chain_hashes, cluster, llm, workload


def router(spec: str) -> Router:
    r: Router = registry.create("routing", spec, seed=0)
    return r


def route(r: Router, call, reps: list[FakeReplica]) -> int:  # type: ignore[no-untyped-def]
    return r.route(call, [x for x in reps if x.ready], FakeCluster(reps))


def test_prefix_affinity_returns_session_to_its_prefix_until_imbalance_trips() -> None:
    a_hashes = chain_hashes(1, 1600)
    b_hashes = chain_hashes(2, 1600)
    calls = [
        llm("a1", "A", 1600, 1, hashes=a_hashes),
        llm("b1", "B", 1600, 1, hashes=b_hashes),
        llm("b2", "B", 2000, 1, hashes=chain_hashes(2, 2000)),
        llm("a2", "A", 2000, 1, hashes=chain_hashes(1, 2000)),
    ]
    reps = [FakeReplica(0), FakeReplica(1)]
    pa, rr = router("prefix_affinity"), router("round_robin")
    # a1: empty trees -> smallest tree, lowest id; b1: replica 1 has the smaller tree;
    # b2 and a2 return to the replica holding their prefix (1600/2000 = 0.8 > 0.5)
    assert [route(pa, c, reps) for c in calls] == [0, 1, 1, 0]
    assert [route(rr, c, reps) for c in calls] == [0, 1, 0, 1]
    # imbalance: replica 0 has 40 outstanding, replica 1 none (40 - 0 > 32 and 40 > 0 x 1.1)
    a3 = llm("a3", "A", 2400, 1, hashes=chain_hashes(1, 2400))
    reps[0].num_waiting = 40
    assert route(pa, a3, reps) == 1
    # a3's prefix is now in replica 1's tree too (the longer match); with replica 1
    # loaded but below the absolute threshold (32 - 0 is not > 32) the prefix wins
    reps[0].num_waiting = 0
    reps[1].num_waiting = 32
    a4 = llm("a4", "A", 2800, 1, hashes=chain_hashes(1, 2800))
    assert route(pa, a4, reps) == 1
    assert route(router("least_loaded"), a4, reps) == 0


def test_prefix_affinity_below_cache_threshold_goes_to_smallest_tree() -> None:
    shared = chain_hashes(9, 320)  # a 320-token system prompt
    pa = router("prefix_affinity:cache_threshold=0.5")
    reps = [FakeReplica(0), FakeReplica(1)]
    first = llm("x", "X", 1600, 1, hashes=shared + chain_hashes(3, 1280, salt=3))
    assert route(pa, first, reps) == 0
    # 320 / 1600 = 0.2 matched: not enough, so the smaller (empty) tree of replica 1
    other = llm("y", "Y", 1600, 1, hashes=shared + chain_hashes(4, 1280, salt=4))
    assert route(pa, other, reps) == 1
    # with a threshold below 0.2 the shared prompt alone keeps it on replica 0 or 1
    # (both now hold it): the less loaded wins
    pa2 = router("prefix_affinity:cache_threshold=0.1")
    route(pa2, first, reps)
    reps[0].num_running = 3
    assert route(pa2, other, reps) == 0  # only replica 0's tree holds the shared prompt


def test_prefix_affinity_tree_evicts_least_recently_routed_beyond_max_size() -> None:
    pa = router("prefix_affinity:max_tree_tokens=1600")
    reps = [FakeReplica(0), FakeReplica(1)]
    route(pa, llm("a", "A", 1600, 1, hashes=chain_hashes(1, 1600)), reps)
    assert pa.tree_tokens(0) == 1600  # type: ignore[attr-defined]
    route(pa, llm("b", "B", 1600, 1, hashes=chain_hashes(2, 1600)), reps)
    route(pa, llm("c", "C", 800, 1, hashes=chain_hashes(3, 800)), reps)  # to replica 1 or 0
    assert max(pa.tree_tokens(0), pa.tree_tokens(1)) <= 1600  # type: ignore[attr-defined]


def test_kv_aware_trades_cached_prefill_against_decode_load() -> None:
    call = llm("c", "S", 2000, 10, hashes=chain_hashes(1, 2000))
    reps = [FakeReplica(0, cached={"c": 1600}, active_blocks=10), FakeReplica(1)]
    kv = router("kv_aware")
    # logits: replica 0 = 400/16 + 10 = 35, replica 1 = 2000/16 + 0 = 125
    assert kv.logits(call, reps) == [35.0, 125.0]  # type: ignore[attr-defined]
    assert route(kv, call, reps) == 0
    # a busy replica 0 (200 active blocks: 225 > 125) loses the call
    reps[0].active_blocks = 200
    assert route(kv, call, reps) == 1
    # overlap_weight=4 weighs the prefill 4x: 4 x 25 + 200 = 300 < 4 x 125
    assert route(router("kv_aware:overlap_weight=4"), call, reps) == 0
    # queued prefill work counts too
    reps[0].active_blocks = 10
    reps[0].pending_prefill_tokens = 3200  # +200 blocks
    assert route(kv, call, reps) == 1


def test_kv_aware_temperature_samples_both_but_prefers_the_cheaper() -> None:
    call = llm("c", "S", 2000, 10)
    reps = [FakeReplica(0, cached={"c": 1600}), FakeReplica(1)]
    kv = router("kv_aware:temperature=0.5")
    picks = Counter(route(kv, call, reps) for _ in range(400))
    assert picks[0] > picks[1] > 0
    # deterministic for a seed
    again = router("kv_aware:temperature=0.5")
    assert [route(again, call, reps) for _ in range(50)] == [
        route(k, call, reps) for k in [router("kv_aware:temperature=0.5")] for _ in range(50)
    ]


def test_llmd_scorer_weighs_prefix_against_queue_and_filters_full_kv() -> None:
    call = llm("c", "S", 1600, 10, hashes=chain_hashes(1, 1600))
    reps = [FakeReplica(0, cached={"c": 1600}, num_waiting=5), FakeReplica(1)]
    # replica 0: 3 x 1 + 2 x 1 + 2 x 0 = 5; replica 1: 0 + 2 + 2 x 1 = 4
    assert route(router("llmd_scorer"), call, reps) == 0
    # prefix weight 1: 1 + 2 + 0 = 3 < 4
    assert route(router("llmd_scorer:prefix_weight=1"), call, reps) == 1
    # the KV-utilisation filter drops a replica whose KV is (almost) full
    reps[0].active_blocks = 990
    assert route(router("llmd_scorer"), call, reps) == 1


def test_power_of_two_always_avoids_the_loaded_replica_of_two() -> None:
    reps = [FakeReplica(0, num_running=5), FakeReplica(1)]
    p2, rr = router("power_of_two"), router("round_robin")
    calls = [llm(f"c{i}", "S", 100, 1) for i in range(10)]
    assert {route(p2, c, reps) for c in calls} == {1}
    assert {route(rr, c, reps) for c in calls} == {0, 1}


def test_least_loaded_requests_vs_tokens() -> None:
    reps = [
        FakeReplica(0, num_running=1, outstanding_tokens=10_000),
        FakeReplica(1, num_running=2, outstanding_tokens=100),
    ]
    call = llm("c", "S", 100, 1)
    assert route(router("least_loaded"), call, reps) == 0
    assert route(router("least_loaded:metric=tokens"), call, reps) == 1


def test_session_affinity_sticks_and_falls_back_when_down_or_overloaded() -> None:
    reps = [FakeReplica(i) for i in range(4)]
    sa = router("session_affinity:overload_factor=2")
    calls = [llm(f"s{i}-{k}", f"s{i}", 100, 1) for i in range(20) for k in range(3)]
    home = {}
    for c in calls:
        rid = route(sa, c, reps)
        assert home.setdefault(c.session_id, rid) == rid  # sticky
    assert len(set(home.values())) > 1
    # a replica goes down: only its sessions move
    down = home["s0"]
    reps[down].ready = False
    for c in calls:
        rid = route(sa, c, reps)
        if home[c.session_id] != down:
            assert rid == home[c.session_id]
        else:
            assert rid != down
    reps[down].ready = True
    # overloaded home (more than 2x the mean outstanding): fall back
    reps[home["s0"]].num_waiting = 50
    assert route(sa, calls[0], reps) != home["s0"]


def _two_replica_sessions(
    n_sessions: int = 5, turns: int = 4, gap: float = 2.0, stagger: float = 0.4
) -> list:  # type: ignore[type-arg]
    calls = []
    for s in range(n_sessions):
        prev: tuple[str, ...] = ()
        for k in range(turns):
            cid = f"s{s}-{k}"
            ctx = 1600 + 400 * k
            calls.append(
                llm(cid, f"s{s}", ctx, 20, t=stagger * s, parents=prev, gap=gap if prev else 0.0,
                    hashes=chain_hashes(s, ctx))
            )  # fmt: skip
            prev = (cid,)
    return calls


@pytest.mark.parametrize("spec", ["prefix_affinity", "kv_aware", "llmd_scorer", "session_affinity"])
def test_cache_aware_routers_beat_round_robin_on_hit_rate(spec: str) -> None:
    # sessions think 2 s between turns, so little decode is in flight when a turn
    # arrives: the cached prefix decides (Dynamo's decode-block term stays small)
    w = workload(_two_replica_sessions())
    rr = simulate(w, cluster(replicas=2), cost_model=ROOFLINE)
    other = simulate(w, cluster(replicas=2, router=spec), cost_model=ROOFLINE)
    assert other.summary["prefix_hit_rate"] > rr.summary["prefix_hit_rate"]
    if spec != "session_affinity":  # hashing may pile sessions on one replica
        assert other.calls["ttft_s"].mean() < rr.calls["ttft_s"].mean()


def test_kv_aware_balances_when_decode_load_outweighs_the_cached_prefill() -> None:
    # back-to-back turns (0.1 s think): the replica holding a session's prefix is busy
    # decoding other sessions, and Dynamo's cost sends the turn elsewhere
    w = workload(_two_replica_sessions(6, gap=0.1, stagger=0.05))
    kv = simulate(w, cluster(replicas=2, router="kv_aware"), cost_model=ROOFLINE)
    pa = simulate(w, cluster(replicas=2, router="prefix_affinity"), cost_model=ROOFLINE)
    assert kv.summary["prefix_hit_rate"] < pa.summary["prefix_hit_rate"]


def test_migration_moves_cached_prefix_over_nvlink_when_cheaper_than_recompute() -> None:
    # a1 caches 4000 tokens on replica 0; x keeps replica 0 busy, so least_loaded
    # sends a2 to replica 1: with migrate=true its prefix follows over NVLink
    calls = [
        llm("a1", "A", 4000, 2, t=0.0, hashes=chain_hashes(1, 4000)),
        llm("x", "X", 100, 400, t=1.0),
        llm("a2", "A", 4200, 2, t=1.1, hashes=chain_hashes(1, 4200)),
    ]
    w = workload(calls)
    plain = simulate(w, cluster(replicas=2, router="least_loaded"), cost_model=ROOFLINE)
    moved = simulate(
        w, cluster(replicas=2, router="least_loaded:migrate=true"), cost_model=ROOFLINE
    )
    p, m = plain.calls.set_index("call_id"), moved.calls.set_index("call_id")
    assert float(p.loc["a2", "replica"]) == float(m.loc["a2", "replica"]) == 1
    assert float(p.loc["a2", "cached_tokens"]) == float(m.loc["a2", "cached_tokens"]) == 0
    spec = get_model("llama-2-7b")
    it = ROOFLINE.for_replica(ReplicaHardware(spec, get_gpu("a100-80gb"), 1, 1))
    topo = build_topology([("dgx-a100", 8)], "a100-80gb")
    path = topo.gpu_path(0, 1)
    assert path.link == "nvlink"
    t_move = kv_transfer_time(4000 * spec.kv_bytes_per_token, path)
    assert float(m.loc["a2", "ttft_s"]) == pytest.approx(
        t_move + it.iteration_time(BatchShape((200,), (4000,))), rel=1e-9
    )
    assert float(m.loc["a2", "ttft_s"]) < float(p.loc["a2", "ttft_s"])


def test_policy_config_accepts_router_parameters() -> None:
    cfg = cluster(replicas=2)
    cfg = replace(cfg, policies=PolicyConfig(router="prefix_affinity:cache_threshold=0.25"))
    r = simulate(workload(_two_replica_sessions(2, 2)), cfg, cost_model=ROOFLINE)
    assert r.summary["completed_requests"] == 4
    with pytest.raises(Exception, match="cache_treshold|did you mean"):
        registry.create("routing", "prefix_affinity:cache_treshold=0.5")


def test_autellix_lb_balances_short_calls_and_pins_a_programs_long_calls() -> None:
    r = router("autellix_lb")
    reps = [FakeReplica(0, num_running=3), FakeReplica(1, num_running=1), FakeReplica(2)]
    # a long call (> 2048 prompt tokens): least used replica 2, recorded for program A
    assert route(r, llm("a0", "A", 3000, 10), reps) == 2
    reps[2].num_running = 5  # replica 2 becomes the busiest
    # A's next long call stays on its engine (locality) although 2 is busiest now
    assert route(r, llm("a1", "A", 3500, 10), reps) == 2
    # A's short call (<= 2048 tokens) goes to the least used replica, not A's engine
    assert route(r, llm("a2", "A", 2048, 10), reps) == 1
    # program B's first long call: least used (1), then pinned there
    assert route(r, llm("b0", "B", 5000, 10), reps) == 1
    reps[1].num_running = 9
    assert route(r, llm("b1", "B", 5000, 10), reps) == 1
    # A's engine goes down: its next long call is re-assigned to the least used and pinned
    reps[2].ready = False
    assert route(r, llm("a3", "A", 4000, 10), reps) == 0
    reps[2].ready, reps[2].num_running = True, 0
    assert route(r, llm("a4", "A", 4000, 10), reps) == 0
