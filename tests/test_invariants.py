"""Invariants of the simulator on random small traces and clusters (hypothesis)."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.costmodel.base import BatchShape, ReplicaHardware
from sim.simulation import simulate
from sim.specs.hardware import get_gpu
from sim.specs.models import get_model
from sim.workload.calls import Call, Workload, topo_order
from tests.helpers import ROOFLINE, cluster

SYSTEM_PROMPT = tuple(range(10**6, 10**6 + 8))  # 8 shared blocks every session may start with


def delays(hi: float) -> st.SearchStrategy[float]:
    """Gaps and tool durations (s): 0 or at least 1 ms.  The fast path equals the step
    path only to float rounding, so a delay below the rounding of the clock (hypothesis
    once drew a 2.2e-16 s gap) may land a child call just before the replica's boundary
    in one path and just after it in the other: an ordering of coincident events, not a
    scheduling difference."""
    return st.one_of(st.just(0.0), st.floats(1e-3, hi))


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    block = 16
    calls: list[Call] = []
    for s in range(draw(st.integers(1, 8))):
        t0 = draw(st.floats(0, 1))
        shared = draw(st.booleans())
        ctx = draw(st.integers(1, 300))
        prev: tuple[str, ...] = ()
        for k in range(draw(st.integers(1, 4))):
            ctx += draw(st.integers(0, 200))
            own = tuple(hash((s, i)) & (2**62 - 1) for i in range(ctx // block))
            hashes = (SYSTEM_PROMPT + own)[: ctx // block] if shared else own
            fan = draw(st.integers(1, 2)) if k else 1
            ids = []
            for f in range(fan):
                cid = f"s{s}-{k}-{f}"
                ids.append(cid)
                calls.append(
                    Call(cid, f"s{s}", "llm", prev, t0, draw(delays(2)) if prev else 0.0, None,
                         ctx, draw(st.integers(1, 120)), hashes, block)
                )  # fmt: skip
            prev = tuple(ids)
            if draw(st.booleans()):
                tid = f"s{s}-{k}-tool"
                calls.append(
                    Call(
                        tid,
                        f"s{s}",
                        "tool",
                        prev,
                        t0,
                        0.0,
                        None,
                        0,
                        0,
                        (),
                        16,
                        draw(delays(3)),
                    )
                )
                prev = (tid,)
    return Workload(topo_order(calls), name="hyp")


def clusters_with(blocks: st.SearchStrategy[int]) -> st.SearchStrategy:
    return st.builds(
        lambda replicas, seqs, budget, nblocks, bs, router: cluster(
            replicas=replicas,
            max_num_seqs=seqs,
            max_num_batched_tokens=max(seqs, budget),
            num_gpu_blocks_override=nblocks,
            block_size=bs,
            router=router,
        ),
        st.integers(1, 3),
        st.integers(1, 8),
        st.integers(16, 2048),
        blocks,
        st.sampled_from([8, 16, 32]),
        st.sampled_from(["round_robin", "least_loaded", "session_affinity"]),
    )


clusters = clusters_with(st.integers(30, 300))
# tight memory: many preemptions and recomputations
tight_clusters = clusters_with(st.integers(20, 60))

IT = ROOFLINE.for_replica(ReplicaHardware(get_model("llama-2-7b"), get_gpu("a100-80gb")))

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(workloads(), st.one_of(clusters, tight_clusters))
def test_conservation_tokens_kv_and_dependencies(w: Workload, cfg) -> None:
    r = simulate(w, cfg, cost_model=ROOFLINE, check_invariants=True)
    calls = r.calls.set_index("call_id")
    # every call ends exactly once
    assert len(calls) == len(w.calls) and calls.index.is_unique
    assert set(calls["status"]) <= {"completed", "failed"}
    ok = calls[(calls["kind"] == "llm") & (calls["status"] == "completed")]
    # tokens generated equal tokens requested
    assert (ok["generated_tokens"] == ok["output_tokens"]).all()
    # TTFT is at least the call's own prefill time (uncached part, alone on the GPU)
    for row in ok.itertuples():
        alone = IT.iteration_time(
            BatchShape((row.input_tokens - row.cached_tokens,), (row.cached_tokens,))
        )
        assert row.ttft_s >= alone * (1 - 1e-9)
    # dependencies and gaps: a call is issued exactly gap_s after its last parent finishes
    for c in w.calls:
        if c.parents and calls.loc[c.call_id, "status"] == "completed":
            last = max(calls.loc[p, "finish_s"] for p in c.parents)
            assert np.isclose(
                calls.loc[c.call_id, "issue_s"], last + c.gap_s, rtol=1e-12, atol=1e-12
            )
    failed = calls[calls["status"] == "failed"]
    assert set(failed["reason"]) <= {"exceeds_kv_capacity", "parent_failed"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.one_of(clusters, tight_clusters), st.integers(0, 2**31 - 1))
def test_same_seed_same_summary_and_fast_forward_is_exact(w: Workload, cfg, seed: int) -> None:
    a = simulate(w, cfg, seed=seed, cost_model=ROOFLINE)
    b = simulate(w, cfg, seed=seed, cost_model=ROOFLINE)
    assert json.dumps(a.summary) == json.dumps(b.summary)
    from dataclasses import replace

    slow = simulate(w, replace(cfg, fast_forward=False), seed=seed, cost_model=ROOFLINE)
    x = a.calls.set_index("call_id").sort_index()
    y = slow.calls.set_index("call_id").sort_index()
    for col in ("issue_s", "first_token_s", "finish_s"):
        np.testing.assert_allclose(x[col].to_numpy(), y[col].to_numpy(), rtol=1e-9)
    assert (x["preemptions"] == y["preemptions"]).all()
