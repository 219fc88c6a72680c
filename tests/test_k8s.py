"""The stock Kubernetes baseline: k8s_service, hpa, k8s_default, pod start-up phases, presets.

Every expected value is worked out by hand from the policy's rule or the config.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import pytest
import simpy

from policies import registry
from policies.autoscaling.hpa import HPA
from policies.base import PlacementRequest
from policies.placement.k8s_default import K8sDefault
from policies.routing.k8s_service import K8sService
from sim.cluster.cluster import Cluster
from sim.cluster.config import ClusterConfig, Deployment, NodeGroup, PolicyConfig, validate
from sim.common.errors import PolicyError
from sim.simulation import simulate
from sim.specs.models import get_model
from sim.specs.topology import NVME_BW, build_topology
from tests.helpers import ROOFLINE, cluster, llm, workload

# ---- registry ------------------------------------------------------------------------


def test_policies_are_registered() -> None:
    names = {(i.kind, i.name) for i in registry.list_policies()}
    assert {("routing", "k8s_service"), ("autoscaling", "hpa"), ("placement", "k8s_default")} <= (
        names
    )


# ---- k8s_service ---------------------------------------------------------------------


@dataclass
class Rep:
    """The few ReplicaView fields the policies under test read."""

    replica_id: int
    model: str = "m"
    num_waiting: int = 0
    busy_s: float = 0.0


def test_iptables_mode_is_uniform_random_from_the_seed() -> None:
    reps = [Rep(3), Rep(5), Rep(9)]
    router = K8sService(seed=7)
    got = [router.route(None, reps, None) for _ in range(3000)]  # type: ignore[arg-type]
    rng = random.Random(7)
    assert got == [reps[rng.randrange(3)].replica_id for _ in range(3000)]
    # equal probability: each endpoint gets a third (binomial sd ~ 26)
    for rid in (3, 5, 9):
        assert abs(got.count(rid) - 1000) < 130


def test_ipvs_mode_is_round_robin_per_model() -> None:
    reps = [Rep(0), Rep(1), Rep(2)]
    router = K8sService(mode="ipvs")
    assert [router.route(None, reps, None) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]  # type: ignore[arg-type]


def test_k8s_service_rejects_unknown_mode() -> None:
    with pytest.raises(PolicyError, match="mode"):
        registry.create("routing", "k8s_service:mode=nftables")


# ---- k8s_default ---------------------------------------------------------------------

TOPO = build_topology([("dgx-a100", 8), ("dgx-a100", 8)], "a100-80gb")


def _place(tp: int, free: list[int], multi_node: bool = True) -> tuple[int, ...] | None:
    return K8sDefault(multi_node).place(PlacementRequest("m", tp, 1, 0), TOPO, free)


def test_k8s_default_prefers_the_node_with_most_free_gpus() -> None:
    assert _place(4, list(range(16))) == (0, 1, 2, 3)  # tie: lowest node
    assert _place(4, list(range(6)) + list(range(8, 16))) == (8, 9, 10, 11)  # 8 free > 6


def test_k8s_default_spreads_single_gpu_pods_over_nodes() -> None:
    free = set(range(16))
    got = []
    for _ in range(4):
        (g,) = _place(1, sorted(free))  # type: ignore[misc]
        free.discard(g)
        got.append(g)
    assert got == [0, 8, 1, 9]


def test_k8s_default_splits_tp_group_over_nodes_when_fragmented() -> None:
    free = list(range(2, 8)) + list(range(10, 16))  # 6 + 6 free, no node has 8
    # two pods of 4: the first on node 0 (tie), the second on node 1 (6 free > 2)
    assert _place(8, free) == (2, 3, 4, 5, 10, 11, 12, 13)
    assert _place(8, free, multi_node=False) is None
    assert _place(8, list(range(3))) is None


def test_k8s_default_tp8_straddles_nodes_in_a_fragmented_cluster() -> None:
    cfg = validate(
        ClusterConfig(
            name="frag",
            nodes=(NodeGroup("dgx-a100", 2, 8),),
            deployments=(
                Deployment(model="llama-2-7b", tp=1, replicas=4),
                Deployment(model="llama-3-70b", tp=8, replicas=1),
            ),
            policies=PolicyConfig(placement="k8s_default"),
            source="<test>",
        )
    )
    c = _cluster(cfg)
    assert [r.gpus for r in c.all_replicas] == [
        (0,),
        (8,),
        (1,),
        (9,),
        (2, 3, 4, 5, 10, 11, 12, 13),
    ]
    hw = c.replica_hardware(
        c.specs["llama-3-70b"], c.deployments["llama-3-70b"], c.all_replicas[4].gpus
    )
    assert hw.link == "network"  # the all-reduce crosses the InfiniBand fabric


# ---- hpa -----------------------------------------------------------------------------


@dataclass
class View:
    """A hand-built ClusterView for one model."""

    ready: list[Rep] = field(default_factory=list)
    starting: list[Rep] = field(default_factory=list)
    pending: int = 0

    def models(self) -> list[str]:
        return ["m"]

    def live_replicas(self, model: str) -> list[Rep]:
        return self.ready + self.starting

    def ready_replicas(self, model: str | None = None) -> list[Rep]:
        return self.ready

    def pending_calls(self, model: str) -> int:
        return self.pending


def test_hpa_gpu_util_scales_by_ratio_and_respects_tolerance() -> None:
    hpa = HPA(target=0.6)
    view = View([Rep(0, busy_s=15.0), Rep(1, busy_s=12.0)])  # 100 % and 80 % over 15 s
    assert hpa.decide(view, 15.0) == {"m": 3}  # ceil(2 x 0.9 / 0.6)
    hpa = HPA(target=0.6)
    view = View([Rep(0, busy_s=9.45), Rep(1, busy_s=9.45)])  # 63 %: ratio 1.05 <= 1.1
    assert hpa.decide(view, 15.0) == {"m": 2}


def test_hpa_counts_starting_pods_at_zero_when_scaling_up() -> None:
    hpa = HPA(target=0.6)
    # ready at 100 % and 80 % (ratio 1.5) plus one pod starting: (1.8 / 3) / 0.6 = 1.0
    view = View([Rep(0, busy_s=15.0), Rep(1, busy_s=12.0)], starting=[Rep(2)])
    assert hpa.decide(view, 15.0) == {"m": 3}


def test_hpa_scale_down_waits_for_the_stabilisation_window() -> None:
    hpa = HPA(target=0.5)
    reps = [Rep(i) for i in range(4)]
    view = View(reps)
    for r in reps:
        r.busy_s = 7.5  # 50 %: on target
    assert hpa.decide(view, 15.0) == {"m": 4}
    got = {}
    for k in range(2, 22):  # idle from then on: the raw recommendation is ceil(0) -> min 1
        got[15.0 * k] = hpa.decide(view, 15.0 * k)["m"]
    assert all(v == 4 for t, v in got.items() if t < 315.0)
    assert got[315.0] == 1  # the t=15 s recommendation left the 300 s window


def test_hpa_scale_up_rate_limit_and_bounds() -> None:
    hpa = HPA(target=0.1, max_replicas=4)
    assert hpa.decide(View([Rep(0, busy_s=15.0)]), 15.0) == {"m": 4}  # raw 10, +4 pods, max 4
    hpa = HPA(target=0.1)
    assert hpa.decide(View([Rep(0, busy_s=15.0)]), 15.0) == {"m": 5}  # max(2 x 1, 1 + 4)


def test_hpa_queue_metric_is_total_over_target_and_scales_from_zero() -> None:
    hpa = HPA(metric="queue", target=10.0, min_replicas=0)
    assert hpa.decide(View([Rep(0, num_waiting=15), Rep(1, num_waiting=10)]), 15.0) == {"m": 3}
    hpa = HPA(metric="queue", target=10.0, min_replicas=0)
    assert hpa.decide(View(pending=7), 15.0) == {"m": 1}  # ceil(7 / 10)
    hpa = HPA(metric="queue", target=10.0, min_replicas=0)
    assert hpa.decide(View(), 15.0) == {"m": 0}
    # a per-pod utilisation metric has no samples at zero replicas
    assert HPA(min_replicas=0).decide(View(pending=7), 15.0) == {"m": 0}


def test_hpa_rejects_bad_parameters() -> None:
    with pytest.raises(PolicyError):
        registry.create("autoscaling", "hpa:metric=cpu")
    with pytest.raises(PolicyError):
        registry.create("autoscaling", "hpa:min_replicas=3,max_replicas=2")


# ---- pod start-up phases -------------------------------------------------------------


def _cluster(cfg: ClusterConfig) -> Cluster:
    pol = cfg.policies
    return Cluster(
        simpy.Environment(),
        cfg,
        ROOFLINE,
        registry.create("routing", pol.router),
        lambda: registry.create("batching", pol.batching),
        registry.create("retention", pol.retention),
        registry.create("placement", pol.placement),
        registry.create("autoscaling", pol.autoscaler),
        lambda *a: None,
    )


def _load_s(model: str = "llama-2-7b", tp: int = 1) -> float:
    """Weight load of one GPU's shard over NVMe plus the default 20 s warm-up."""
    return -(-get_model(model).weight_bytes // tp) / NVME_BW + 20.0


def test_new_pod_pays_scheduling_image_pull_once_per_node_weights_and_warmup() -> None:
    c = _cluster(cluster(replicas=8, nodes=2))  # node 0 full of warm replicas
    env = c.env
    first = c.start_replica("llama-2-7b", cold=True)  # GPU 8, node 1: no image yet
    assert first is not None and first.gpus == (8,)
    assert c.lives[first.replica_id].ready_s == pytest.approx(5.0 + 90.0 + _load_s())
    env.run(until=30.0)
    second = c.start_replica("llama-2-7b", cold=True)  # GPU 9: waits for the pull under way
    assert second is not None and second.gpus == (9,)
    assert c.lives[second.replica_id].ready_s == pytest.approx(95.0 + _load_s())
    env.run(until=200.0)
    third = c.start_replica("llama-2-7b", cold=True)  # image present: no pull
    assert third is not None
    assert c.lives[third.replica_id].cold_start_s == pytest.approx(5.0 + _load_s())


def test_start_up_phases_are_config_values() -> None:
    c = _cluster(cluster(replicas=0, scheduling_s=1.0, image_pull_s=2.0, init_s=3.0))
    rep = c.start_replica("llama-2-7b", cold=True)
    assert rep is not None
    assert c.lives[0].cold_start_s == pytest.approx(1.0 + 2.0 + _load_s() - 20.0 + 3.0)


def test_hpa_scales_from_zero_and_k8s_service_only_routes_to_ready_pods() -> None:
    cfg = cluster(replicas=0, router="k8s_service")
    cfg = replace(
        cfg, policies=replace(cfg.policies, autoscaler="hpa:metric=queue,min_replicas=0,target=2")
    )
    calls = [llm(f"c{i}", f"s{i}", 200, 4, t=0.5 * i) for i in range(12)]
    r = simulate(workload(calls), cfg, cost_model=ROOFLINE, seed=3)
    reps = r.replicas.set_index("replica")
    # the sync at 15 s sees 12 calls held at the gateway: ceil(12 / 2) = 6, limited to
    # 0 + 4 pods; at 30 s, 12 still wait for 4 starting pods: 6 (no readiness adjustment
    # for an external metric); at 45 s the ratio is 12 / (2 x 6) = 1: no change
    assert reps["start_s"].tolist() == [15.0] * 4 + [30.0] * 2
    # all on node 0: the pods started at 30 s wait for the image pull begun at 20 s
    ready = 15.0 + 5.0 + 90.0 + _load_s()
    assert reps["ready_s"].tolist() == pytest.approx([ready] * 6)
    assert (r.calls["status"] == "completed").all()
    admit = r.calls["admit_s"].to_numpy()
    assert (admit >= ready - 1e-9).all()
    assert set(r.calls["replica"]) <= set(reps.index)


# ---- model presets -------------------------------------------------------------------


def test_command_r_and_qwen_presets_match_their_configs() -> None:
    cr = get_model("CohereForAI/c4ai-command-r-v01")
    assert cr.name == "command-r"
    # 40 x (4 x 8192^2 attention + 3 x 8192 x 22528 MLP + 2 norms) + one tied embedding + norm
    per_layer = 4 * 8192**2 + 3 * 8192 * 22528 + 2 * 8192
    assert cr.num_params == 40 * per_layer + 256000 * 8192 + 8192
    assert cr.num_params / 1e9 == pytest.approx(35.0, abs=0.05)  # "35B"
    assert cr.kv_bytes_per_token == 2 * 40 * 64 * 128 * 2
    assert cr.max_context == 131072
    qw = get_model("Qwen/Qwen2-7B-Instruct")
    assert qw.name == "qwen2-7b"
    assert qw.kv_bytes_per_token == 2 * 28 * 4 * 128 * 2
    assert qw.num_params / 1e9 == pytest.approx(7.6, abs=0.05)
    qw.check_tp(4)  # 28 heads / 4, 4 KV heads / 4
    with pytest.raises(Exception, match="TP=8"):
        qw.check_tp(8)


@pytest.mark.parametrize(("model", "tp"), [("command-r", 2), ("qwen2-7b", 1)])
def test_new_presets_serve_a_call(model: str, tp: int) -> None:
    r = simulate(
        workload([llm("a", "s", 2000, 8)]), cluster(model=model, tp=tp), cost_model=ROOFLINE
    )
    assert r.calls.iloc[0].status == "completed"
    assert r.calls.iloc[0].ttft_s > 0
