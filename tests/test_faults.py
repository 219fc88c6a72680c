"""Fault injection: hand-worked failovers, restarts, persistence strategies, loader errors."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.cli.main import main
from sim.cluster.config import ClusterConfig, Deployment, NodeGroup, PolicyConfig, validate
from sim.cluster.faults import Fault, FaultGenerator, FaultSchedule, load_faults, parse_faults
from sim.common.errors import AgentsimError, InputError
from sim.costmodel.base import BatchShape, ReplicaHardware, load_time
from sim.simulation import simulate
from sim.specs.hardware import get_gpu
from sim.specs.models import get_model
from sim.specs.topology import NVME_BW
from sim.specs.topology import Path as TopoPath
from tests.helpers import ROOFLINE, chain_hashes, cluster, llm, tool, workload

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "faults"


def _sched(*faults: Fault) -> FaultSchedule:
    return FaultSchedule(tuple(faults), None, "<test>")


def _cfg(persistence: str = "none", **kw: object) -> ClusterConfig:
    cfg = cluster(**kw)  # type: ignore[arg-type]
    return replace(cfg, policies=replace(cfg.policies, persistence=persistence))


def _it():
    return ROOFLINE.for_replica(ReplicaHardware(get_model("llama-2-7b"), get_gpu("a100-80gb")))


def test_call_in_flight_fails_over_and_recomputes_what_it_had_computed() -> None:
    # replica 0 serves call "a" (round robin); it restarts at t=0.5 while "a" decodes
    w = workload([llm("a", "s", 2000, 400)])
    r = simulate(
        w,
        _cfg(replicas=2),
        cost_model=ROOFLINE,
        faults=_sched(Fault(0.5, "replica_restart", replica=0, repair_s=0.0)),
        check_invariants=True,
    )
    row = r.calls.iloc[0]
    assert row.status == "completed" and row.replica == 1 and row.failovers == 1
    assert row.generated_tokens == 400 and row.issue_s == 0.0
    assert r.summary["failovers"] == 1
    # KV "a" had computed at 0.5 s: its prompt plus every generated token but the last
    it = _it()
    t = it.iteration_time(BatchShape((2000,), (0,)))
    gen = 1
    while t + it.iteration_time(BatchShape(num_decode=1, decode_context_sum=2000 + gen)) <= 0.5:
        t += it.iteration_time(BatchShape(num_decode=1, decode_context_sum=2000 + gen))
        gen += 1
    assert r.summary["recomputed_tokens"] == 2000 + gen - 1
    # the re-prefill of prompt + generated tokens happens on replica 1 after the fault
    assert row.finish_s > 0.5 + it.iteration_time(BatchShape((2000 + gen,), (0,)))


def test_lost_replica_without_repair_fails_calls_with_the_fault_as_reason() -> None:
    w = workload(
        [
            llm("a", "s", 500, 300),
            tool("t", "s", 1.0, ("a",)),
            llm("b", "s", 600, 5, parents=("t",)),
            llm("c", "s2", 100, 5, t=50.0),
        ]
    )
    r = simulate(w, _cfg(), cost_model=ROOFLINE, faults=_sched(Fault(0.2, "node", node=0)))
    calls = r.calls.set_index("call_id")
    assert len(calls) == 4 and calls.index.is_unique
    assert calls.loc["a", "status"] == "failed" and calls.loc["a", "reason"] == "node_failure"
    assert calls.loc["t", "reason"] == "parent_failed"
    assert calls.loc["b", "reason"] == "parent_failed"
    assert calls.loc["c", "reason"] == "node_failure"  # issued after the loss: nowhere to go
    assert r.summary["failed_requests"] == 3 and r.summary["completed_requests"] == 0
    assert r.summary["faults"]["injected"] == {"node": 1}


def test_restart_pays_a_cold_start_and_held_calls_include_it_in_ttft() -> None:
    w = workload([llm("a", "s", 500, 3, t=1.0), llm("b", "s2", 500, 3, t=2.0)])
    cfg = _cfg()
    r = simulate(
        w,
        cfg,
        cost_model=ROOFLINE,
        faults=_sched(Fault(0.5, "replica_restart", replica=0, repair_s=0.0)),
    )
    dep = cfg.deployments[0]
    from sim.cluster.cluster import plan_memory

    weights = plan_memory(get_model(dep.model), get_gpu("a100-80gb").memory_bytes, dep).weights
    ready = (
        0.5
        + dep.scheduling_s
        + dep.image_pull_s * 0
        + load_time(weights, TopoPath(NVME_BW, 0.0, "nvme", 1), dep.init_s)
    )
    calls = r.calls.set_index("call_id")
    assert (calls["status"] == "completed").all()
    assert calls.loc["a", "issue_s"] == 1.0
    assert calls.loc["a", "first_token_s"] > ready - 1e-9
    assert calls.loc["a", "ttft_s"] >= ready - 1.0 - 1e-9
    assert r.summary["cold_starts"] == 1 and r.summary["failovers"] == 0


def _agent_sessions(n: int = 6, turns: int = 4) -> list:
    calls = []
    for s in range(n):
        prev: tuple[str, ...] = ()
        ctx = 0
        for k in range(turns):
            ctx += 1500
            cid = f"s{s}-{k}"
            calls.append(
                llm(cid, f"s{s}", ctx, 200, t=s * 0.1, parents=prev, gap=0.5 if prev else 0.0,
                    hashes=chain_hashes(s, ctx))
            )  # fmt: skip
            prev = (cid,)
    return calls


@pytest.mark.parametrize("kind", ["replica_restart", "node"])
def test_persistence_strategies_recompute_less_where_a_copy_survives(kind: str) -> None:
    w = workload(_agent_sessions())
    target = {"replica": 0, "repair_s": 0.0} if kind == "replica_restart" else {"node": 0}
    fault = Fault(6.0, kind, **target)  # type: ignore[arg-type]
    two_nodes = {"nodes": 2, "replicas": 2, "router": "session_affinity"}
    out = {}
    for p in ("none", "host_offload", "remote_store", "migrate"):
        cfg = _cfg(p, **two_nodes)
        if kind == "node":  # one replica per node
            cfg = validate(replace(cfg, deployments=(replace(cfg.deployments[0], tp=8),)))
        r = simulate(w, cfg, cost_model=ROOFLINE, faults=_sched(fault), check_invariants=True)
        assert (r.calls["status"] == "completed").all()
        assert (r.calls["generated_tokens"] == r.calls["output_tokens"]).all()
        out[p] = r.summary
    none = out["none"]["recomputed_tokens"]
    assert none > 0
    assert out["remote_store"]["recomputed_tokens"] < none
    assert out["remote_store"]["faults"]["restored_tokens"] > 0
    if kind == "node":  # host DRAM dies with the node
        assert out["host_offload"]["recomputed_tokens"] == none
    else:
        assert out["host_offload"]["recomputed_tokens"] < none
    # a crash gives no notice: nothing to migrate
    assert out["migrate"]["recomputed_tokens"] == none
    assert all(s["failovers"] == out["none"]["failovers"] for s in out.values())


def test_migrate_moves_live_sessions_during_a_spot_notice() -> None:
    w = workload(_agent_sessions())
    cfg = _cfg("migrate", nodes=2, replicas=2, router="session_affinity")
    cfg = validate(replace(cfg, deployments=(replace(cfg.deployments[0], tp=8),)))
    spot = _sched(Fault(6.0, "spot", node=0, notice_s=30.0, repair_s=600.0))
    mig = simulate(w, cfg, cost_model=ROOFLINE, faults=spot, check_invariants=True)
    none = simulate(
        w, replace(cfg, policies=replace(cfg.policies, persistence="none")), cost_model=ROOFLINE,
        faults=spot,
    )  # fmt: skip
    assert mig.summary["faults"]["restored_tokens"] > 0
    assert mig.summary["recomputed_tokens"] < none.summary["recomputed_tokens"]
    assert (mig.calls["status"] == "completed").all()


def test_fast_forward_is_exact_under_faults_and_link_cuts() -> None:
    cfg = validate(
        ClusterConfig(
            name="pcie",
            gpu="a100-80gb-pcie",
            nodes=(NodeGroup("pcie-server", 1, 8),),
            deployments=(Deployment(model="llama-2-7b", tp=4, replicas=2),),
            policies=PolicyConfig(router="least_loaded", persistence="remote_store"),
            source="<test>",
        )
    )
    w = workload(_agent_sessions(8, 3))
    sched = _sched(
        Fault(0.7, "link", edge=("n0/gpu0", "n0/pcie0"), bandwidth_factor=0.01, duration_s=2.0),
        Fault(3.0, "gpu", gpu=5, repair_s=1.0),
    )
    fast = simulate(w, cfg, cost_model=ROOFLINE, faults=sched, check_invariants=True)
    slow = simulate(w, replace(cfg, fast_forward=False), cost_model=ROOFLINE, faults=sched)
    x = fast.calls.set_index("call_id").sort_index()
    y = slow.calls.set_index("call_id").sort_index()
    for col in ("issue_s", "first_token_s", "finish_s"):
        np.testing.assert_allclose(x[col].to_numpy(), y[col].to_numpy(), rtol=1e-9)
    assert fast.summary["failovers"] == slow.summary["failovers"] > 0
    # the cut slowed replica 0 (its TP group uses gpu0's PCIe link) while it lasted
    plain = simulate(
        w, cfg, cost_model=ROOFLINE, faults=_sched(Fault(3.0, "gpu", gpu=5, repair_s=1.0))
    )
    assert fast.calls["finish_s"].sum() > plain.calls["finish_s"].sum()


def test_link_cut_outside_every_path_changes_nothing() -> None:
    w = workload(_agent_sessions(3, 2))
    cfg = _cfg(replicas=2)
    base = simulate(w, cfg, cost_model=ROOFLINE, faults=_sched(Fault(100.0, "gpu", gpu=7)))
    cut = simulate(
        w,
        cfg,
        cost_model=ROOFLINE,
        faults=_sched(Fault(0.1, "link", edge=("n0/nic3", "net/leaf"), bandwidth_factor=0.5)),
    )
    pd.testing.assert_series_equal(base.calls["finish_s"], cut.calls["finish_s"])


def test_generator_is_seeded_and_capped() -> None:
    g = FaultGenerator(seed=3, horizon_s=1e4, gpu_mtbf_s=2e4, gpu_mttr_s=100.0, node_mtbf_s=5e4)
    a = g.generate(16, 2, 4, [("n0/nic0", "net/leaf")])
    assert a == g.generate(16, 2, 4, [("n0/nic0", "net/leaf")])
    assert a != replace(g, seed=4).generate(16, 2, 4, [("n0/nic0", "net/leaf")])
    assert all(0 <= f.at_s < 1e4 for f in a) and [f.at_s for f in a] == sorted(f.at_s for f in a)
    huge = FaultSchedule((), FaultGenerator(horizon_s=1e300, gpu_mtbf_s=1e-300), "<g>")
    w = workload([llm("a", "s", 10, 2)])
    with pytest.raises(InputError, match="would generate about"):
        simulate(w, _cfg(), cost_model=ROOFLINE, faults=huge)


def test_examples_load_and_run(tmp_path: Path) -> None:
    files = sorted(EXAMPLES.glob("*.toml"))
    assert len(files) >= 4
    for f in files:
        load_faults(f)
    out = tmp_path / "run"
    rc = main(
        ["run", "--trace", str(Path(__file__).parent.parent / "traces" / "default.jsonl"),
         "--faults", str(EXAMPLES / "node_failure.toml"), "--persistence", "remote_store",
         "--out", str(out), "--quiet"]
    )  # fmt: skip
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert {"failed_requests", "failovers", "recomputed_tokens"} <= set(s)
    assert s["faults"]["persistence"] == "remote_store" and s["failovers"] > 0
    calls = pd.read_parquet(out / "calls.parquet")
    assert calls["failovers"].sum() == s["failovers"]
    assert "## Faults" in (out / "report.md").read_text()


LOADER_CASES = [
    ("[[faults]]\nat_s = 1\nkind = \"nod\"\nnode = 0\n", 3, "faults[0].kind", "did you mean 'node'"),
    ("[[faults]]\nat_s = 1\nkind = \"gpu\"\n", 1, "faults[0].gpu", "required for kind 'gpu'"),
    ("[[faults]]\nat_s = -1\nkind = \"gpu\"\ngpu = 0\n", 2, "faults[0].at_s", "must be >= 0"),
    ("[[faults]]\nat_s = 1\nkind = \"gpu\"\ngpu = 0\n\n[[faults]]\nat_s = 2\nkind = \"link\"\n"
     "edge = [\"a\", \"b\"]\nbandwidth_factor = -0.5\n", 10, "faults[1].bandwidth_factor", "must be > 0"),
    ("[[faults]]\nat_s = 1\nkind = \"node\"\nnode = 0\nrepiar_s = 3\n", 5, "faults[0].repiar_s", "did you mean 'repair_s'"),
    ("[generate]\nseed = 1\ngpu_mtbf_s = 1e5\n", 1, "generate.horizon_s", "required"),
    ("[generate]\nhorizon_s = 10\ngpu_mtbf_s = 0\n", 3, "generate.gpu_mtbf_s", "must be > 0"),
    ("[generate]\nhorizon_s = 10\nnode_mtbf_s = -5.0\n", 3, "generate.node_mtbf_s", "must be > 0"),
    ("[generate]\nseed = 3\nhorizon_s = 10\n", 1, "generate", "sets no MTBF"),
    ("[generate]\nhorizon_s = 10\ngpu_mttr_s = nan\n", 3, "generate.gpu_mttr_s", "finite"),
    ("[[faults]]\nat_s = 1\nkind = \"gpu\"\ngpu = 0\nedge = [\"a\", \"b\"]\n", 5, "faults[0].edge", "not used by kind 'gpu'"),
    ("faults = 3\n", None, "faults", "array of tables"),
    ("[[faults]\n", 1, None, "invalid TOML"),
    ("", None, "faults", "no [[faults]]"),
]  # fmt: skip


@pytest.mark.parametrize("text,line,fld,msg", LOADER_CASES)
def test_loader_errors_name_file_line_and_field(
    tmp_path: Path, text: str, line: int | None, fld: str | None, msg: str
) -> None:
    p = tmp_path / "f.toml"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        load_faults(p)
    assert e.value.path == str(p) and e.value.line == line and e.value.field == fld
    assert msg in str(e.value)


def test_targets_checked_against_the_cluster() -> None:
    w = workload([llm("a", "s", 10, 2)])
    sched = parse_faults({"faults": [{"at_s": 1, "kind": "gpu", "gpu": 99}]}, "x.toml")
    with pytest.raises(InputError, match="x.toml: faults\\[0\\].gpu: GPU 99 does not exist"):
        simulate(w, _cfg(), cost_model=ROOFLINE, faults=sched)
    sched = parse_faults(
        {
            "faults": [
                {"at_s": 1, "kind": "link", "edge": ["n0/nic0", "net/lef"], "bandwidth_factor": 0.5}
            ]
        },
        "x.toml",
    )
    with pytest.raises(AgentsimError, match="did you mean 'n0/nic0 - net/leaf'"):
        simulate(w, _cfg(), cost_model=ROOFLINE, faults=sched)


def test_no_faults_keeps_summary_contract_and_zero_counts() -> None:
    r = simulate(workload([llm("a", "s", 10, 2)]), _cfg(), cost_model=ROOFLINE)
    assert r.summary["failovers"] == 0 and r.summary["recomputed_tokens"] == 0
    assert "faults" not in r.summary
    assert r.calls["failovers"].tolist() == [0]
    assert not math.isnan(r.calls["ttft_s"].iloc[0])
