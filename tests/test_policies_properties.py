"""Properties of every policy: the registry lists them, each runs a trace to completion,
routers return a live replica of the call's model (also in a multi-model deployment)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import registry
from sim.cluster.config import load_cluster_config
from sim.experiments.conformance import FakeCluster, FakeReplica
from sim.simulation import simulate
from sim.workload.calls import Call
from tests.helpers import ROOFLINE, chain_hashes, cluster, llm, tool, workload

CLUSTERS = Path(__file__).resolve().parent.parent / "examples" / "clusters"
FIELD = {"routing": "router", "batching": "batching", "retention": "retention",
         "placement": "placement", "autoscaling": "autoscaler"}  # fmt: skip
ISSUE_POLICIES = {
    "routing": {"round_robin", "least_loaded", "power_of_two", "session_affinity",
                "prefix_affinity", "kv_aware", "llmd_scorer", "autellix_lb"},
    "placement": {"first_fit", "topology_aware"},
    "batching": {"fcfs", "plas", "atlas", "vtc"},
    "retention": {"lru", "ttl_pin", "infercept"},
    "autoscaling": {"static", "queue_depth", "keep_warm"},
}  # fmt: skip


def small_trace(model: str | None = None) -> list[Call]:
    calls: list[Call] = []
    for s in range(4):
        prev: tuple[str, ...] = ()
        for k in range(3):
            cid = f"s{s}-{k}"
            ctx = 200 + 150 * k
            calls.append(llm(cid, f"s{s}", ctx, 15 + s, t=0.2 * s, parents=prev,
                             hashes=chain_hashes(s, ctx), model=model))  # fmt: skip
            prev = (cid,)
            if k < 2:
                calls.append(tool(f"{cid}-t", f"s{s}", 0.3, prev))
                prev = (f"{cid}-t",)
    return calls


def test_registry_lists_every_policy_of_the_issue() -> None:
    for kind, names in ISSUE_POLICIES.items():
        listed = {p.name for p in registry.list_policies(kind)}
        assert names <= listed, names - listed
        for p in registry.list_policies(kind):
            assert p.description, f"{kind} {p.name} has no docstring"


POLICIES = [(k, n) for k, ns in sorted(ISSUE_POLICIES.items()) for n in sorted(ns)]


@pytest.mark.parametrize(("kind", "name"), POLICIES)
def test_each_policy_runs_a_small_trace_to_completion(kind: str, name: str) -> None:
    cfg = cluster(replicas=2, num_gpu_blocks_override=120)
    cfg = replace(cfg, policies=replace(cfg.policies, **{FIELD[kind]: name}))  # type: ignore[arg-type]
    calls = small_trace()
    r = simulate(workload(calls), cfg, cost_model=ROOFLINE, check_invariants=True)
    assert r.summary["completed_requests"] == sum(c.kind == "llm" for c in calls)
    assert (r.calls["status"] == "completed").all()
    assert (r.calls["generated_tokens"] == r.calls["output_tokens"]).all()


@pytest.mark.parametrize("router", sorted(ISSUE_POLICIES["routing"]))
def test_multi_model_calls_reach_replicas_of_their_model(router: str) -> None:
    cfg = load_cluster_config(CLUSTERS / "multi-model.toml")
    cfg = replace(cfg, policies=replace(cfg.policies, router=router))
    calls = small_trace("llama-3-70b")
    calls += [replace(c, call_id="t-" + c.call_id, session_id="t-" + c.session_id,
                      parents=tuple("t-" + p for p in c.parents),
                      model="llama-3-8b" if c.kind == "llm" else None) for c in small_trace()]  # fmt: skip
    r = simulate(workload(calls), cfg, cost_model=ROOFLINE)
    assert (r.calls["status"] == "completed").all()
    model_of = dict(zip(r.replicas["replica"], r.replicas["model"], strict=True))
    llm_rows = r.calls[r.calls["kind"] == "llm"]
    assert all(
        model_of[rep] == m for rep, m in zip(llm_rows["replica"], llm_rows["model"], strict=True)
    )
    assert set(llm_rows["model"]) == {"llama-3-70b", "llama-3-8b"}
    # the 70B replica spans a whole NVSwitch node (topology_aware, TP=8)
    gpus70 = r.replicas.set_index("model").loc["llama-3-70b", "gpus"]
    assert gpus70 in ("0,1,2,3,4,5,6,7", "8,9,10,11,12,13,14,15")


replica_states = st.lists(
    st.builds(
        lambda i, run, wait, act, pend, cached, model: FakeReplica(
            i, model=model, num_running=run, num_waiting=wait, active_blocks=act,
            pending_prefill_tokens=pend, outstanding_tokens=pend + run * 10,
            cached={"c": cached}),  # fmt: skip
        st.just(0), st.integers(0, 50), st.integers(0, 200), st.integers(0, 1000),
        st.integers(0, 50_000), st.integers(0, 2000), st.sampled_from(["a", "b"]),
    ),
    min_size=1, max_size=8,
)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(replica_states, st.integers(0, 3))
def test_every_router_returns_a_ready_replica_of_the_calls_model(reps, seed: int) -> None:  # type: ignore[no-untyped-def]
    for i, r in enumerate(reps):
        r.replica_id = i
    cands = [r for r in reps if r.model == reps[0].model]
    call = llm("c", "S", 2000, 10, hashes=chain_hashes(seed, 2000), model=reps[0].model)
    for name in sorted(ISSUE_POLICIES["routing"]):
        router = registry.create("routing", name, seed=seed)
        rid = router.route(call, cands, FakeCluster(reps))
        assert rid in {r.replica_id for r in cands}
