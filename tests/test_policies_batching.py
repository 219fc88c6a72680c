"""Batching policies: who is admitted first when calls wait, with known answers."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from policies import registry
from policies.base import BatchPolicy
from sim.cluster.config import ClusterConfig
from sim.experiments.conformance import FakeSeq
from sim.simulation import simulate
from sim.workload.calls import Call
from tests.helpers import ROOFLINE, cluster, llm, workload


def one_slot(batching: str) -> ClusterConfig:
    """One replica that runs one call at a time, so admission order is visible."""
    cfg = cluster(max_num_seqs=1)
    return replace(cfg, policies=replace(cfg.policies, batching=batching))


def _autellix_scenario() -> list[Call]:
    """L attains ~4.77 s of model time (L0); S ~0.66 s (S0, from 4.8 s); X, a new
    program, needs ~6.8 s of decoding; L1 is issued at ~4.87 s, S1 at ~11.46 s."""
    return [
        llm("L0", "L", 3000, 400, t=0.0),
        llm("S0", "S", 500, 60, t=4.8),
        llm("X", "X", 100, 600, t=5.0),
        llm("L1", "L", 3000, 10, parents=("L0",), gap=0.1),
        llm("S1", "S", 500, 10, parents=("S0",), gap=6.0),
    ]


def _run(batching: str) -> pd.DataFrame:
    w = workload(_autellix_scenario())
    return simulate(w, one_slot(batching), cost_model=ROOFLINE).calls.set_index("call_id")


def test_plas_prioritises_new_programs_and_preempts_demoted_calls() -> None:
    fcfs, plas = _run("fcfs"), _run("plas")
    # FCFS: L1 (waiting since 4.87 s) goes before X, which then blocks S1 for ~0.6 s
    assert list(fcfs.sort_values("admit_s").index) == ["L0", "S0", "L1", "X", "S1"]
    assert fcfs["preemptions"].sum() == 0
    # PLAS (queues from 1 s, doubling): X arrives while S0 runs; both in queue 0, X
    # later, so X waits for S0 (no preemption) and then goes before L1 (queue 3: L has
    # 4.77 s of service)
    x_admit = float(plas.loc["X", "admit_s"])
    assert x_admit == float(plas.loc["S0", "finish_s"])
    assert x_admit < float(plas.loc["L1", "admit_s"])
    # X runs 1 s in queue 0, 1 s in queue 1 and 2 s in queue 2, reaching queue 3 at
    # +4 s: L1 (queue 3, earlier) then preempts it
    assert abs(float(plas.loc["L1", "admit_s"]) - (x_admit + 4.0)) < 0.05
    # S1 (queue 0) preempts X (queue >= 3) on arrival instead of waiting for it
    assert float(plas.loc["S1", "admit_s"]) - float(plas.loc["S1", "issue_s"]) < 0.05
    assert int(plas.loc["X", "preemptions"]) == 2


def test_plas_anti_starvation_promotes_a_program_by_its_wait_to_service_ratio() -> None:
    # beta = 0.5: L (4.77 s of service) is promoted once L1 has waited 2.39 s, at
    # ~7.26 s, and then displaces X (in queue 1 by then) at once
    plas = _run("plas:beta=0.5")
    promoted = float(plas.loc["L1", "issue_s"]) + 0.5 * float(plas.loc["L0", "finish_s"])
    assert abs(float(plas.loc["L1", "admit_s"]) - promoted) < 0.05
    # beta = 2: the ratio (at most ~0.96 before X is demoted) never reaches it
    late = _run("plas:beta=2")
    assert float(late.loc["L1", "admit_s"]) > promoted + 1.0


def _finish(pol: BatchPolicy, call: Call, arrive: float, admit: float, end: float) -> None:
    seq = FakeSeq(call, arrive, admit_s=admit, generated_tokens=call.output_tokens)
    pol.on_arrival(seq, [], arrive)
    pol.on_tokens(call, call.output_tokens, end)


def test_atlas_ranks_a_program_by_its_critical_path_not_its_total_service() -> None:
    # program P: root p0 (1 s), then seven parallel calls of 1 s each; program Q: one
    # sequential call of 4.5 s.  Then Q, and after it P, issue one more call.
    p0 = llm("p0", "P", 100, 10)
    par = [llm(f"p{i}", "P", 100, 10, parents=("p0",)) for i in range(1, 8)]
    q0 = llm("q0", "Q", 100, 10)
    p8, q1 = llm("p8", "P", 100, 1, parents=("p1",)), llm("q1", "Q", 100, 1, parents=("q0",))
    plas, atlas = registry.create("batching", "plas"), registry.create("batching", "atlas")
    for pol in (plas, atlas):
        assert isinstance(pol, BatchPolicy)
        _finish(pol, p0, 0.0, 0.0, 1.0)
        for c in par:
            pol.on_arrival(FakeSeq(c, 1.0), [], 1.0)  # all seven take p0's 1 s
        for c in par:
            _finish(pol, c, 1.0, 1.0, 2.0)
        _finish(pol, q0, 0.0, 0.0, 4.5)
    waiting = [FakeSeq(q1, 4.6), FakeSeq(p8, 4.7)]
    # PLAS: P attained 1 + 7 x 1 = 8 s (queue 4), Q 4.5 s (queue 3): q1 first
    assert plas.attained(p8) == 8.0
    assert [s.call.call_id for s in plas.order(waiting, 5.0)] == ["q1", "p8"]
    # ATLAS: P's critical path is 1 + 1 = 2 s (queue 2), Q's 4.5 s (queue 3): p8 first
    assert atlas.attained(p8) == 2.0
    assert [s.call.call_id for s in atlas.order(waiting, 5.0)] == ["p8", "q1"]


def test_vtc_serves_a_light_session_between_a_heavy_sessions_backlog() -> None:
    calls = [llm(f"H{i}", "H", 1000, 50, t=0.0) for i in range(5)]
    calls.append(llm("L", "L", 1000, 50, t=0.001))
    w = workload(calls)
    fcfs = simulate(w, one_slot("fcfs"), cost_model=ROOFLINE).calls
    vtc = simulate(w, one_slot("vtc"), cost_model=ROOFLINE).calls

    def rank(df) -> int:  # type: ignore[no-untyped-def]
        return list(df.sort_values("admit_s")["call_id"]).index("L")

    assert rank(fcfs) == 5
    assert rank(vtc) == 1


def test_vtc_lifts_a_returning_clients_counter() -> None:
    vtc = registry.create("batching", "vtc")
    a, a2, b = llm("a", "A", 100, 1), llm("a2", "A", 100, 1), llm("b", "B", 100, 1)
    vtc.on_tokens(a, 1000, 0.0)  # A was served 1000 prompt tokens while B was idle
    vtc.on_tokens(a, 5, 0.0)  # and 5 output tokens (weight 2)
    vtc.on_arrival(FakeSeq(b, 1.0), [FakeSeq(a2, 0.5)], 1.0)  # B arrives behind A's queued call
    assert vtc.counter["B"] == vtc.counter["A"] == 1000 + 2 * 5
    c = llm("c", "C", 100, 1)
    vtc.on_arrival(FakeSeq(c, 2.0), [], 2.0)  # empty queue: lifted to the last served (A)
    assert vtc.counter["C"] == 1010


def test_sarathi_budget_splits_a_long_prefill_lowering_tpot_and_raising_ttft() -> None:
    """A (100-token prompt, 20 tokens out) decodes when B (16,000-token prompt) arrives.
    fcfs with a 16,384-token budget prefills B in one step that A's next token waits
    for, so A finishes only after B's first token; sarathi's 512-token budget splits
    B into ~32 chunks and A's remaining decodes each share a step with one chunk, so A
    finishes before B's first token (lower TPOT), and B pays more, smaller steps (each
    also carrying A's decode and its own weight read): a higher TTFT."""
    w = workload([llm("A", "A", 100, 20, t=0.0), llm("B", "B", 16000, 5, t=0.1)])
    base = cluster(max_num_batched_tokens=16384)
    runs = {}
    for spec in ("fcfs", "sarathi:chunk_size=512"):
        cfg = replace(base, policies=replace(base.policies, batching=spec))
        runs[spec] = simulate(w, cfg, cost_model=ROOFLINE).calls.set_index("call_id")
    f, s = runs["fcfs"], runs["sarathi:chunk_size=512"]
    assert float(f.loc["A", "finish_s"]) > float(f.loc["B", "first_token_s"])
    assert float(s.loc["A", "finish_s"]) < float(s.loc["B", "first_token_s"])
    assert float(s.loc["A", "tpot_s"]) < float(f.loc["A", "tpot_s"]) / 2
    assert float(s.loc["B", "ttft_s"]) > float(f.loc["B", "ttft_s"])
    # without a budget below the engine's, sarathi is fcfs exactly
    wide = replace(base, policies=replace(base.policies, batching="sarathi:chunk_size=20000"))
    same = simulate(w, wide, cost_model=ROOFLINE).calls.set_index("call_id")
    assert same.sort_index().equals(f.sort_index())
