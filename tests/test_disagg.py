"""Disaggregated serving: pools, KV transfers on shared links, pair routers."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import simpy

from policies.base import PairDecision
from policies.registry import create
from sim.cluster.config import (
    ClusterConfig,
    Pool,
    apply_overrides,
    load_cluster_config,
    validate,
)
from sim.cluster.links import LinkNetwork
from sim.common.errors import ConfigError
from sim.costmodel.transfer import achieved_bandwidth
from sim.experiments.conformance import FakeCluster, FakeReplica
from sim.metrics.registry import METRICS, numeric_metrics
from sim.simulation import build_simulation, collect
from sim.specs.topology import build_topology
from tests.helpers import ROOFLINE, chain_hashes, cluster, llm, workload

# ---- config -------------------------------------------------------------------------------


def _toml(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(
        'gpu = "a100-80gb"\nnodes = 2\n[[deployments]]\nmodel = "llama-3.1-8b"\ntp = 1\n' + body
    )
    return p


def test_pools_load_and_bad_fields_name_file_line_and_field(tmp_path: Path) -> None:
    ok = _toml(tmp_path, '[[pools]]\nrole = "prefill"\ncount = 2\n[[pools]]\nrole = "decode"\n')
    cfg = load_cluster_config(ok)
    assert [(p.role, p.count) for p in cfg.pools] == [("prefill", 2), ("decode", 1)]
    bad = _toml(tmp_path, '[[pools]]\nrole = "decode"\n[[pools]]\ncount = 1\nrole = "prefil"\n')
    with pytest.raises(ConfigError, match=r"c\.toml:10: pools\[1\]\.role: expected one of"):
        load_cluster_config(bad)
    bad = _toml(tmp_path, '[[pools]]\nrole = "decode"\ncount = "2"\n')
    with pytest.raises(ConfigError, match=r"c\.toml:8: pools\[0\]\.count: expected an integer"):
        load_cluster_config(bad)
    bad = _toml(tmp_path, '[[pools]]\nrole = "decode"\ntpp = 2\n')
    with pytest.raises(ConfigError, match=r"c\.toml:8: pools\[0\]\.tpp: unknown field"):
        load_cluster_config(bad)
    bad = _toml(tmp_path, '[[pools]]\nrole = "prefill"\n')
    with pytest.raises(ConfigError, match="no decode or mixed pool"):
        load_cluster_config(bad)
    bad = _toml(tmp_path, '[[pools]]\nrole = "decode"\ncount = 99\n')
    with pytest.raises(ConfigError, match="need 99 GPUs but the nodes have 16"):
        load_cluster_config(bad)


def test_quick_flags_build_pools_and_colocated_configs_keep_their_form() -> None:
    base = cluster(model="llama-3.1-8b", replicas=2, nodes=2)
    assert "pools" not in base.to_dict() and "kv_transfer" not in base.to_dict()
    cfg = apply_overrides(base, prefill_replicas=3, decode_replicas=1, decode_tp=2)
    assert cfg.pools == (Pool("prefill", "", 0, 3), Pool("decode", "", 2, 1))
    assert cfg.to_dict()["pools"][1] == {"role": "decode", "model": "", "tp": 2, "count": 1}
    back = apply_overrides(cfg, prefill_replicas=0, decode_replicas=0)
    assert back.pools == ()


# ---- links ---------------------------------------------------------------------------------


def _net() -> tuple[simpy.Environment, LinkNetwork]:
    env = simpy.Environment()
    return env, LinkNetwork(env, build_topology([("dgx-a100", 8)] * 2, "a100-80gb"))


def test_idle_link_takes_bytes_over_bandwidth_plus_latency_and_two_flows_take_twice() -> None:
    env, net = _net()
    route = net.topology.route(0, 8)  # node 0 GPU 0 -> node 1 GPU 0, over the NICs
    rate = min(net.capacity(lk) for lk in route)
    assert rate == pytest.approx(achieved_bandwidth("network", 25e9))
    lat = net.route_latency(route)
    done: list[float] = []
    net.start(route, 1e9, done.append)
    env.run()
    assert done[0] == pytest.approx(1e9 / rate + lat, rel=1e-12)
    env, net = _net()
    done = []
    net.start(route, 1e9, done.append)
    net.start(route, 1e9, done.append)
    env.run()
    assert done == pytest.approx([2e9 / rate + lat] * 2, rel=1e-12)


def test_flows_share_max_min_fairly_and_a_finished_flow_frees_its_share() -> None:
    env, net = _net()
    shared = net.topology.route(0, 8)
    other = net.topology.route(2, 8)  # shares only the last hops into node 1 GPU 0
    rate = min(net.capacity(lk) for lk in shared)
    done: dict[str, float] = {}
    net.start(shared, 0.5e9, lambda t: done.setdefault("a", t))
    net.start(other, 1.5e9, lambda t: done.setdefault("b", t))
    env.run()
    # both at rate/2 until a ends (1e9 / rate), then b alone at the full rate
    t_a = 0.5e9 / (rate / 2)
    assert done["a"] == pytest.approx(t_a + net.route_latency(shared), rel=1e-9)
    assert done["b"] == pytest.approx(t_a + 1.0e9 / rate + net.route_latency(other), rel=1e-9)


def test_zero_bandwidth_link_is_an_error_naming_the_link() -> None:
    env, net = _net()
    route = net.topology.route(0, 8)  # GPU 0 sends through its own NIC
    net.topology.graph.edges["n0/nic0", "net/leaf"]["bandwidth"] = 0.0  # a failed NIC link
    with pytest.raises(ConfigError, match="n0/nic0 - net/leaf: the link has zero bandwidth"):
        net.start(route, 1e6, lambda t: None)


def test_h100_nics_are_400_gbps_and_a_spine_joins_leaves() -> None:
    topo = build_topology([("dgx-a100", 8)] * 3, "h100-80gb", nodes_per_leaf=2)
    route = topo.route(1, 17)
    assert ("net/leaf", "net/spine") in route and route[1] == ("n0/pcie0", "n0/nic1")
    assert topo.gpu_path(1, 17).bandwidth == 50e9


# ---- whole runs ------------------------------------------------------------------------------


def _pd_cluster(prefill: int = 1, decode: int = 1, blocks: int = 0) -> ClusterConfig:
    base = cluster(model="llama-3.1-8b", replicas=1, nodes=2, num_gpu_blocks_override=blocks)
    return apply_overrides(base, prefill_replicas=prefill, decode_replicas=decode)


def _calls(n: int = 16, inp: int = 3000, out: int = 40) -> list:  # type: ignore[type-arg]
    return [
        llm(f"c{i}", f"s{i % 4}", inp, out, t=0.02 * i, hashes=chain_hashes(i, inp))
        for i in range(n)
    ]


def _run(cfg: ClusterConfig, calls: list, router: str | None = None):  # type: ignore[no-untyped-def,type-arg]
    if router is not None:
        cfg = replace(cfg, policies=replace(cfg.policies, router=router))
    sim = build_simulation(workload(calls), cfg, cost_model=ROOFLINE, check_invariants=True)
    sim.run()
    return sim, collect(sim)


def test_every_call_ends_once_and_transferred_bytes_equal_remote_prefill_bytes() -> None:
    sim, res = _run(_pd_cluster(2, 2), _calls())
    calls = res.calls
    assert len(calls) == 16 and set(calls["status"]) == {"completed"}
    d = sim.cluster.disagg
    assert d is not None
    per_token = d.kv_bytes_per_token(sim.cluster.all_replicas[-1])
    # Llama-3.1-8B at TP1: 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes
    assert per_token == 2 * 32 * 8 * 128 * 2
    assert res.summary["remote_prefills"] == 16 and res.summary["kv_transfers"] == 16
    assert res.summary["kv_transfer_bytes"] == int(calls["input_tokens"].sum()) * per_token
    link_bytes = sum(s.nbytes for (u, _v), s in d.links.stats.items() if "gpu" in u)
    assert link_bytes == pytest.approx(res.summary["kv_transfer_bytes"])
    # the first token comes from the prefill instance, before the KV moves
    for r in d.records:
        row = calls[calls["call_id"] == r.call_id].iloc[0]
        assert row["first_token_s"] <= r.ready_s <= r.start_s < r.end_s < row["finish_s"]
        assert sim.cluster.disagg.roles[int(row["replica"])] == "decode"


def test_decode_instance_never_overfills_and_transfers_wait_for_room() -> None:
    cfg = _pd_cluster(2, 1, blocks=600)  # ~2 calls of 3,000 tokens
    sim, res = _run(cfg, _calls(12, out=200))
    d = sim.cluster.disagg
    assert d is not None and set(res.calls["status"]) == {"completed"}
    assert all(r.blocks <= r.free_blocks for r in d.records)
    assert max(r.start_s - r.ready_s for r in d.records) > 0  # some waited for room
    dec = [r for r in sim.cluster.all_replicas if d.roles[r.replica_id] == "decode"][0]
    assert max(dec.timeline[4::5]) <= dec.kv_capacity_blocks  # KV blocks active
    assert res.summary["kv_transfer_wait_s"]["p90"] > 0


def test_layerwise_transfer_overlaps_the_prefill() -> None:
    cfg = _pd_cluster(1, 1)
    _, plain = _run(cfg, _calls(4))
    _, layered = _run(replace(cfg, kv_transfer=replace(cfg.kv_transfer, layerwise=True)), _calls(4))
    assert layered.summary["kv_transfer_s"]["mean"] < 0.5 * plain.summary["kv_transfer_s"]["mean"]
    assert layered.summary["kv_transfer_bytes"] == plain.summary["kv_transfer_bytes"]


def test_pooled_summary_metrics_are_registered() -> None:
    _, res = _run(_pd_cluster(1, 1), _calls(4))
    names = numeric_metrics(res.summary)
    assert "kv_transfer_s.p99" in names and "pool_utilization.decode" in names
    assert sorted({n.split(".")[0] for n in names} - set(METRICS)) == []


# ---- pair routers: each differs from the naive pairing --------------------------------------


@dataclass
class _View(FakeCluster):
    """A disaggregated view: prefill at 1e-4 s/token, transfers 1 ms, decode 20 ms."""

    free: int = 10_000

    def prefill_time_s(self, replica: FakeReplica, tokens: int) -> float:
        return 1e-4 * tokens

    def transfer_time_s(self, call: object, prefill: FakeReplica, decode: FakeReplica) -> float:
        return 1e-3

    def decode_free_blocks(self, replica: FakeReplica) -> int:
        return self.free

    def decode_time_s(self, replica: FakeReplica, batch: int, context_tokens: int) -> float:
        return 0.02 + 1e-6 * context_tokens


def _naive(call, prefill, decode, view) -> PairDecision:  # type: ignore[no-untyped-def]
    rr_p, rr_d = create("routing", "round_robin"), create("routing", "round_robin")
    return PairDecision(rr_p.route(call, prefill, view), rr_d.route(call, decode, view))


def test_dynamo_prefills_a_short_uncached_prompt_locally() -> None:
    p, d = [FakeReplica(0), FakeReplica(1)], [FakeReplica(2), FakeReplica(3)]
    view = _View(p + d)
    short = llm("a", "s", 800, 10)
    long = llm("b", "s", 8000, 10)
    router = create("routing", "dynamo_disagg")
    assert _naive(short, p, d, view) == PairDecision(0, 2)
    assert router.route_pair(short, p, d, view) == PairDecision(2, 2)  # local prefill
    assert router.route_pair(long, p, d, view) == PairDecision(0, 2)
    # a long prefill queue keeps even a long prompt local
    busy = [FakeReplica(0, num_waiting=2), FakeReplica(1, num_waiting=1)]
    assert router.route_pair(long, busy, d, _View(busy + d)) == PairDecision(2, 2)


def test_llmd_decodes_alone_when_the_decode_pod_caches_the_prompt() -> None:
    call = llm("c", "s", 6000, 10)
    p = [FakeReplica(0), FakeReplica(1)]
    d = [FakeReplica(2), FakeReplica(3, cached={"c": 5800})]
    view = _View(p + d)
    router = create("routing", "llmd_pd", threshold=512)
    assert _naive(call, p, d, view) == PairDecision(0, 2)
    assert router.route_pair(call, p, d, view) == PairDecision(3, 3)  # 200-token suffix
    cold = [FakeReplica(2), FakeReplica(3)]
    assert router.route_pair(call, p, cold, _View(p + cold)).prefill in (0, 1)


def test_mooncake_picks_the_prefill_instance_that_caches_the_prefix_and_rejects_overload() -> None:
    call = llm("c", "s", 6000, 10)
    p = [FakeReplica(0), FakeReplica(1, cached={"c": 5000}, pending_prefill_tokens=500)]
    d = [FakeReplica(2, num_running=30), FakeReplica(3, num_running=2)]
    view = _View(p + d)
    router = create("routing", "mooncake", ttft_slo=5.0)
    assert _naive(call, p, d, view) == PairDecision(0, 2)
    assert router.route_pair(call, p, d, view) == PairDecision(1, 3)
    jammed = [
        FakeReplica(0, pending_prefill_tokens=10**6),
        FakeReplica(1, pending_prefill_tokens=10**6),
    ]
    assert router.route_pair(call, jammed, d, _View(jammed + d)).reject


def test_mooncake_rejection_fails_calls_with_a_reason_and_ends_each_once() -> None:
    cfg = _pd_cluster(1, 1)
    _, res = _run(cfg, _calls(16, inp=6000), router="mooncake:ttft_slo=0.01")
    calls = res.calls
    assert len(calls) == 16
    rejected = calls[calls["reason"] == "rejected_overload"]
    assert len(rejected) == res.summary["rejected_overload"] > 0
    assert math.isnan(rejected["admit_s"].iloc[0])


def test_colocated_config_validates_without_pools() -> None:
    cfg = validate(cluster(model="llama-3.1-8b"))
    assert cfg.pools == ()


# ---- the shared KV store -----------------------------------------------------------------


def _store_cluster(bandwidth_gbs: float = 0.0, capacity_gib: float = 0.0) -> ClusterConfig:
    from sim.cluster.config import KVStoreTier

    base = cluster(model="llama-3.1-8b", replicas=2)
    tier = KVStoreTier("host", capacity_gib=capacity_gib, bandwidth_gbs=bandwidth_gbs)
    return validate(replace(base, kv_store=(tier,)))


def _two_turns() -> list:  # type: ignore[type-arg]
    # turn 2 extends turn 1's 6,000-token prompt; round robin sends it to the other replica
    h = chain_hashes(7, 6400)
    return [
        llm("t1", "s", 6000, 20, hashes=h[:375]),
        llm("t2", "s", 6400, 20, parents=("t1",), gap=0.5, hashes=h),
    ]


def test_a_prefix_in_the_host_tier_is_loaded_when_cheaper_than_recomputing() -> None:
    _, none = _run(cluster(model="llama-3.1-8b", replicas=2), _two_turns())
    sim, res = _run(_store_cluster(), _two_turns())
    store = sim.cluster.kv_store
    assert store is not None and store.loads == 1
    t2 = res.calls.set_index("call_id").loc["t2"]
    base = none.calls.set_index("call_id").loc["t2"]
    assert int(t2["replica"]) != int(res.calls.set_index("call_id").loc["t1", "replica"])
    assert res.summary["kv_store_hit_rate"]["host"] == pytest.approx(6000 / 12400)
    assert t2["ttft_s"] < base["ttft_s"]
    # a tier too slow to beat recomputing is not used
    sim, slow = _run(_store_cluster(bandwidth_gbs=1e-4), _two_turns())
    assert sim.cluster.kv_store is not None and sim.cluster.kv_store.loads == 0
    assert slow.calls.set_index("call_id").loc["t2", "ttft_s"] == pytest.approx(base["ttft_s"])


def test_store_evicts_in_order_and_keeps_the_prefix_index_consistent() -> None:
    cfg = _store_cluster(capacity_gib=0.5)  # 4,096 tokens of Llama-3.1-8B KV (128 KiB each)
    sim, _ = _run(cfg, _two_turns())
    store = sim.cluster.kv_store
    assert store is not None
    (loc,) = store.locations.values()
    assert loc.used <= loc.tier.capacity and len(loc.entries) == 256
    held = {h for h, keys in store.index.items() if loc.key in keys}
    assert held == set(loc.entries)
    # the newest blocks stayed: turn 2's last 256 blocks of 16 tokens... its prompt's tail
    assert list(loc.entries)[-1] == chain_hashes(7, 6400)[-1]


def test_store_config_errors_name_file_line_and_field(tmp_path: Path) -> None:
    bad = _toml(tmp_path, '[[kv_store]]\ntier = "host"\n[[kv_store]]\ntier = "ssd"\n')
    with pytest.raises(ConfigError, match=r"c\.toml:9: kv_store\[1\]\.tier: expected one of"):
        load_cluster_config(bad)
    bad = _toml(tmp_path, '[[kv_store]]\ntier = "nvme"\neviction = "random"\n')
    with pytest.raises(ConfigError, match=r"c\.toml:8: kv_store\[0\]\.eviction"):
        load_cluster_config(bad)


# ---- the P:D planner -----------------------------------------------------------------------


def test_pd_planner_moves_decode_instances_to_a_starved_prefill_pool_paying_cold_starts() -> None:
    calls = [
        llm(f"c{i}", f"s{i}", 7000, 8, t=0.4 * i, hashes=chain_hashes(100 + i, 7000))
        for i in range(150)
    ]
    base = cluster(model="llama-3.1-8b", nodes=2, init_s=1.0, scheduling_s=0.5)
    cfg = apply_overrides(base, prefill_replicas=1, decode_replicas=3)
    planner = "pd_planner:interval_s=5,ttft_slo=0.5,tpot_slo=0.5,min_calls=3"
    wl = workload(calls)
    static = collect(_built(cfg, wl))
    sim = _built(replace(cfg, policies=replace(cfg.policies, autoscaler=planner)), wl)
    planned = collect(sim)
    d = sim.cluster.disagg
    assert d is not None and planned.summary["role_moves"] >= 1
    assert planned.summary["cold_starts"] == planned.summary["role_moves"]  # every move restarts
    assert min(life.cold_start_s for life in sim.cluster.lives if life.cold_start_s) > 1.5
    assert list(d.roles.values()).count("prefill") == 1 + planned.summary["role_moves"]
    assert len(planned.calls) == 150 and set(planned.calls["status"]) == {"completed"}
    assert planned.summary["ttft_s"]["p90"] < 0.5 * static.summary["ttft_s"]["p90"]


def _built(cfg: ClusterConfig, wl):  # type: ignore[no-untyped-def]
    sim = build_simulation(wl, cfg, cost_model=ROOFLINE)
    sim.run()
    return sim


# ---- the command line ------------------------------------------------------------------------


def test_run_and_sweep_honour_the_pool_flags(tmp_path: Path) -> None:
    import json

    from sim.cli.main import main
    from sim.common.paths import DEFAULT_TRACE

    flags = ["--model", "llama-3.1-8b", "--tp", "1", "--nodes", "1", "--quiet", "--no-html"]
    pools = ["--prefill-replicas", "1", "--decode-replicas", "2", "--decode-tp", "2"]
    assert main(["run", *flags, *pools, "--out", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert summary["remote_prefills"] == summary["requests"] > 0
    # transfers per link: kv_links.csv, busiest first; every byte leaves its prefill GPU
    # over exactly one link out of it, so the rows leaving a GPU add up to the bytes moved
    import pandas as pd

    links = pd.read_csv(tmp_path / "r" / "kv_links.csv")
    assert list(links["bytes"]) == sorted(links["bytes"], reverse=True)
    egress = links[links["link"].str.split("->").str[0].str.contains("gpu")]
    assert egress["bytes"].sum() == summary["kv_transfer_bytes"]
    report = (tmp_path / "r" / "report.md").read_text()
    assert f"| {links['link'][0]} | {links['type'][0]} | {links['transfers'][0]:,} |" in report
    assert main(["run", *flags, "--out", str(tmp_path / "colocated")]) == 0
    assert not (tmp_path / "colocated" / "kv_links.csv").exists()
    assert [(p["role"], p["count"], p["tp"]) for p in config["cluster"]["pools"]] == [
        ("prefill", 1, 0),
        ("decode", 2, 2),
    ]
    s = tmp_path / "s.toml"
    s.write_text(
        f'[base]\ntrace = "{DEFAULT_TRACE}"\n[grid]\npolicies = ["round_robin", "dynamo_disagg"]\n'
    )
    out = tmp_path / "sw"
    assert main(["sweep", str(s), *flags, *pools, "--workers", "1", "--out", str(out)]) == 0

    table = pd.read_parquet(out / "sweep.parquet").set_index("policy")
    assert table.loc["round_robin", "remote_prefills"] == summary["remote_prefills"]
    assert table.loc["dynamo_disagg", "local_prefills"] > 0


def test_session_kv_in_the_store_survives_a_pod_restart() -> None:
    from sim.cluster.faults import Fault, FaultSchedule

    h = chain_hashes(9, 6400)
    calls = [
        llm("t1", "s", 6000, 20, hashes=h[:375]),
        llm("t2", "s", 6400, 20, parents=("t1",), gap=60.0, hashes=h),
    ]
    restart = FaultSchedule((Fault(5.0, "replica_restart", replica=0, repair_s=0.0),), None, "<t>")
    base = cluster(model="llama-3.1-8b", replicas=1)
    runs = {}
    for name, cfg in (("none", base), ("store", _store_cluster())):
        cfg = replace(cfg, deployments=(replace(cfg.deployments[0], replicas=1),))
        sim = build_simulation(workload(calls), cfg, cost_model=ROOFLINE, faults=restart)
        sim.run()
        runs[name] = (sim, collect(sim))
    sim, res = runs["store"]
    assert sim.cluster.cold_starts == 1 and sim.cluster.kv_store is not None
    assert sim.cluster.kv_store.loads == 1  # turn 2 loads the prefix the restart wiped from HBM
    t2 = res.calls.set_index("call_id").loc["t2"]
    t2_none = runs["none"][1].calls.set_index("call_id").loc["t2"]
    assert t2["ttft_s"] < t2_none["ttft_s"]


@pytest.mark.parametrize("router", ["least_loaded", "kv_aware", "round_robin"])
def test_a_plain_router_on_each_side_keeps_prefills_and_decodes_in_their_pools(
    router: str,
) -> None:
    # the indexed routers (load buckets, prefix index) hold every ready replica of the
    # model; on a pool they must choose among the pool's candidates only
    sim, res = _run(_pd_cluster(2, 2), _calls(), router=router)
    d = sim.cluster.disagg
    assert d is not None and len(d.records) == 16
    for rec in d.records:
        assert (d.roles[rec.prefill], d.roles[rec.decode]) == ("prefill", "decode")


@pytest.mark.parametrize(
    ("kind", "tier", "survives"),
    [
        ("node", "host", False),  # host DRAM goes with the node (as host_offload)
        ("node", "remote", True),  # the remote pool survives it (as remote_store)
        ("node", "nvme", True),  # a crashed node's drive keeps its data
        ("spot", "nvme", False),  # a reclaimed instance's local drive is gone
        ("replica_restart", "host", True),  # a pod restart loses only HBM
    ],
)
def test_store_tiers_lose_what_a_fault_takes_and_keep_the_rest(
    kind: str, tier: str, survives: bool
) -> None:
    from sim.cluster.config import KVStoreTier
    from sim.cluster.faults import Fault, FaultSchedule

    h = chain_hashes(11, 6400)
    calls = [
        llm("t1", "s", 6000, 20, hashes=h[:375]),
        llm("t2", "s", 6400, 20, parents=("t1",), gap=60.0, hashes=h),
    ]
    where = {"replica": 0} if kind == "replica_restart" else {"node": 0}
    fault = Fault(5.0, kind, repair_s=1.0, notice_s=0.5 if kind == "spot" else 0.0, **where)  # type: ignore[arg-type]
    base = cluster(model="llama-3.1-8b", replicas=1)
    # fast enough that loading the prefix always beats recomputing it
    cfg = validate(replace(base, kv_store=(KVStoreTier(tier, bandwidth_gbs=50.0),)))
    sim = build_simulation(
        workload(calls), cfg, cost_model=ROOFLINE, faults=FaultSchedule((fault,), None, "<t>")
    )
    sim.run()
    res = collect(sim)
    store = sim.cluster.kv_store
    assert store is not None and set(res.calls["status"]) == {"completed"}
    assert store.loads == (1 if survives else 0)
    held = sum(len(loc.entries) for loc in store.locations.values())
    assert held == 400  # turn 2 wrote its prompt's 400 blocks through again
    assert all(store.index[x] for x in h[:400])  # and the index knows where each is
