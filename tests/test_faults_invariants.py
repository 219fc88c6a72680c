"""Conservation under random fault schedules: every call ends exactly once, nothing is lost."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.cluster.faults import REASONS, Fault, FaultSchedule
from sim.simulation import simulate
from sim.workload.calls import Workload
from tests.helpers import ROOFLINE
from tests.test_invariants import clusters, tight_clusters, workloads

EDGES = [("n0/nic0", "net/leaf"), ("n0/gpu0", "n0/nvswitch"), ("net/storage", "net/leaf")]


@st.composite
def fault_schedules(draw: st.DrawFn) -> FaultSchedule:
    faults = []
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.floats(0, 6))
        kind = draw(st.sampled_from(["gpu", "node", "replica_restart", "spot", "link"]))
        repair = draw(st.one_of(st.none(), st.floats(0, 5)))
        if kind == "gpu":
            f = Fault(at, kind, gpu=draw(st.integers(0, 3)), repair_s=repair)
        elif kind in ("node", "spot"):
            f = Fault(at, kind, node=0, repair_s=repair, notice_s=draw(st.floats(0, 2)))
        elif kind == "replica_restart":
            f = Fault(at, kind, replica=0, repair_s=repair if repair is not None else 0.0)
        else:
            f = Fault(at, kind, edge=draw(st.sampled_from(EDGES)),
                      bandwidth_factor=draw(st.floats(0.01, 1)),
                      duration_s=draw(st.one_of(st.none(), st.floats(0.1, 3))))  # fmt: skip
        faults.append(f)
    return FaultSchedule(tuple(faults), None, "<hypothesis>")


PERSISTENCE = st.sampled_from(["none", "host_offload", "remote_store", "migrate"])
N_EXAMPLES = 60


@settings(max_examples=N_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.one_of(clusters, tight_clusters), fault_schedules(), PERSISTENCE)
def test_every_call_ends_exactly_once_under_faults(w: Workload, cfg, sched, persistence) -> None:
    cfg = replace(cfg, policies=replace(cfg.policies, persistence=persistence))
    r = simulate(w, cfg, cost_model=ROOFLINE, faults=sched, check_invariants=True)
    calls = r.calls.set_index("call_id")
    # every call of the trace ends exactly once, completed or failed with a reason
    assert len(calls) == len(w.calls) and calls.index.is_unique
    assert set(calls.index) == {c.call_id for c in w.calls}
    assert set(calls["status"]) <= {"completed", "failed"}
    failed = calls[calls["status"] == "failed"]
    assert (failed["reason"] != "").all()
    assert set(failed["reason"]) <= {"exceeds_kv_capacity", "parent_failed", *REASONS.values()}
    ok = calls[(calls["kind"] == "llm") & (calls["status"] == "completed")]
    assert (ok["generated_tokens"] == ok["output_tokens"]).all()
    # a failed-over call keeps its issue time: TTFT and e2e include the failure
    assert (ok["first_token_s"] >= ok["issue_s"]).all() and (
        ok["finish_s"] >= ok["first_token_s"]
    ).all()
    assert r.summary["failovers"] == int(calls["failovers"].sum())
    assert r.summary["requests"] == r.summary["completed_requests"] + r.summary["failed_requests"]
    assert r.summary["recomputed_tokens"] >= 0


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), clusters, fault_schedules(), PERSISTENCE)
def test_fast_forward_is_exact_under_random_faults(w: Workload, cfg, sched, persistence) -> None:
    cfg = replace(cfg, policies=replace(cfg.policies, persistence=persistence))
    a = simulate(w, cfg, cost_model=ROOFLINE, faults=sched)
    b = simulate(w, replace(cfg, fast_forward=False), cost_model=ROOFLINE, faults=sched)
    x = a.calls.set_index("call_id").sort_index()
    y = b.calls.set_index("call_id").sort_index()
    assert (x["status"] == y["status"]).all()
    for col in ("issue_s", "first_token_s", "finish_s"):
        np.testing.assert_allclose(x[col].to_numpy(), y[col].to_numpy(), rtol=1e-9)
