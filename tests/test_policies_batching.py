"""Batching policies: who is admitted first when calls wait, with known answers."""

from __future__ import annotations

from dataclasses import replace

from policies import registry
from sim.cluster.config import ClusterConfig
from sim.experiments.conformance import FakeSeq
from sim.simulation import simulate
from tests.helpers import ROOFLINE, cluster, llm, workload


def one_slot(batching: str) -> ClusterConfig:
    """One replica that runs one call at a time, so admission order is visible."""
    cfg = cluster(max_num_seqs=1)
    return replace(cfg, policies=replace(cfg.policies, batching=batching))


def test_plas_runs_a_new_short_program_ahead_of_a_long_running_one() -> None:
    calls = [
        llm("L0", "L", 3000, 10, t=0.0),  # L attains > 3000 tokens of service
        llm("X", "X", 100, 300, t=0.35),  # occupies the slot for seconds
        llm("L1", "L", 3000, 10, parents=("L0",), gap=0.2),  # waits from ~0.6 s
        llm("S0", "S", 500, 10, t=1.0),  # a new program, waits from 1.0 s
    ]
    w = workload(calls)
    fcfs = simulate(w, one_slot("fcfs"), cost_model=ROOFLINE).calls.set_index("call_id")
    plas = simulate(w, one_slot("plas"), cost_model=ROOFLINE).calls.set_index("call_id")
    assert (
        float(fcfs.loc["X", "admit_s"])
        < float(fcfs.loc["L1", "issue_s"])
        < float(fcfs.loc["S0", "issue_s"])
    )
    assert float(fcfs.loc["S0", "issue_s"]) < float(fcfs.loc["X", "finish_s"])
    assert float(fcfs.loc["L1", "admit_s"]) < float(fcfs.loc["S0", "admit_s"])
    assert float(plas.loc["S0", "admit_s"]) < float(plas.loc["L1", "admit_s"])
    assert float(plas.loc["S0", "admit_s"]) == float(fcfs.loc["L1", "admit_s"])  # right when X ends


def test_plas_anti_starvation_promotes_a_call_that_waited_too_long() -> None:
    calls = [
        llm("L0", "L", 3000, 10, t=0.0),
        llm("X", "X", 100, 300, t=0.35),
        llm("L1", "L", 3000, 10, parents=("L0",), gap=0.2),
        llm("S0", "S", 500, 10, t=1.0),
    ]
    w = workload(calls)
    # L1 waits ~4 s behind X while program L has had well under 1 s of service: with
    # beta=1 (wait >= 1 x max(service, 1 s)) it is promoted and, being older, goes first
    r = simulate(w, one_slot("plas:beta=1"), cost_model=ROOFLINE).calls.set_index("call_id")
    assert float(r.loc["L1", "admit_s"]) < float(r.loc["S0", "admit_s"])
    # with the default beta=8 it is not yet starving, and the new program goes first
    d = simulate(w, one_slot("plas"), cost_model=ROOFLINE).calls.set_index("call_id")
    assert float(d.loc["S0", "admit_s"]) < float(d.loc["L1", "admit_s"])


def test_plas_starvation_is_relative_to_the_program_service_not_a_fixed_wait() -> None:
    plas = registry.create("batching", "plas")
    long_call, short_call = llm("l1", "L", 100, 10), llm("s1", "S", 100, 10)
    # program L: a call that waited 2 s, then was served for 100 s
    first = FakeSeq(llm("l0", "L", 100, 10), 0.0)
    plas.on_arrival(first, [], 0.0)
    plas.on_tokens(first.call, 100, 2.0)
    plas.on_tokens(first.call, 9, 102.0)
    assert (plas.wait_s["L"], plas.service_s["L"]) == (2.0, 100.0)
    waiting_l, waiting_s = FakeSeq(long_call, 110.0), FakeSeq(short_call, 110.0)
    # after 300 s of waiting, L (302 s waited / 100 s served < 8) is not starving; a
    # program with no service is after 8 s
    assert not plas.starving(waiting_l, 410.0)
    assert plas.starving(waiting_s, 118.0) and not plas.starving(waiting_s, 117.0)
    assert plas.starving(waiting_l, 110.0 + 8 * 100.0 - 2.0)


def test_atlas_ranks_a_call_by_its_critical_path_not_the_whole_program() -> None:
    # program P: root p0, a heavy branch pa and a light branch pb; pb2 follows pb.
    # program Q: one earlier call of moderate size.
    p0 = llm("p0", "P", 100, 1)
    pa = llm("pa", "P", 9000, 1, parents=("p0",))
    pb = llm("pb", "P", 100, 1, parents=("p0",))
    pb2 = llm("pb2", "P", 100, 1, parents=("pb",))
    q0 = llm("q0", "Q", 3000, 1)
    q1 = llm("q1", "Q", 100, 1, parents=("q0",))
    plas, atlas = registry.create("batching", "plas"), registry.create("batching", "atlas")
    for pol in (plas, atlas):
        for c, tokens in ((p0, 100), (pa, 9000), (pb, 100), (q0, 3000)):
            pol.on_tokens(c, tokens, 0.0)
    waiting = [FakeSeq(q1, 1.0), FakeSeq(pb2, 2.0)]
    # PLAS: P attained 9200 (queue 3), Q 3000 (queue 1): q1 first
    assert [s.call.call_id for s in plas.order(waiting, 3.0)] == ["q1", "pb2"]
    # ATLAS: pb2's critical path p0 -> pb attained 200 (queue 0): pb2 first
    assert [s.call.call_id for s in atlas.order(waiting, 3.0)] == ["pb2", "q1"]
    assert atlas.attained(pb2) == 200 and atlas.attained(q1) == 3000


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
