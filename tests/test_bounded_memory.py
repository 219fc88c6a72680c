"""Memory follows the calls in flight, not the calls simulated: call records spill to
Parquet row groups (with the same frame as in memory), a lazy workload's sessions are
generated and forgotten as they go, and the event loop's peak allocations barely grow
when the workload grows 10x.  Sessions waiting in flight hold no prefix-hash tuples
(they are made when a call is first read), and ``simulate`` releases the engine before
it builds the output frames."""

from __future__ import annotations

import gc
import math
import tracemalloc
from dataclasses import replace
from typing import Any

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import simulation
from sim.metrics.recorder import CALL_COLUMNS, CallRecord, Recorder
from sim.simulation import _Node, build_simulation, collect
from sim.workload.calls import Call
from sim.workload.traces.arrivals import ArrivalConfig
from sim.workload.traces.distributions import const, lognormal
from sim.workload.traces.synth import (
    FanoutConfig,
    ReactConfig,
    SynthConfig,
    generate_sessions,
    lazy_workload,
)
from tests.helpers import ROOFLINE, cluster

texts = st.text(alphabet="abcxyz-0123456789", max_size=6)
floats = st.one_of(st.floats(0, 1e6, allow_nan=False), st.just(math.nan))
ints = st.integers(-1, 1 << 40)
records = st.builds(
    CallRecord,
    texts,
    texts,
    st.sampled_from(["llm", "tool"]),
    st.one_of(st.none(), texts),
    ints,
    st.sampled_from(["completed", "failed"]),
    texts,
    floats,
    floats,
    floats,
    floats,
    ints,
    ints,
    ints,
    ints,
    ints,
    ints,
)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(records, max_size=40), row_group=st.integers(1, 9))
def test_spilled_records_read_back_as_the_in_memory_frame(
    rows: list[CallRecord], row_group: int
) -> None:
    memory, spilled = Recorder(row_group=1 << 30), Recorder(row_group=row_group)
    for r in rows:
        memory.add(r)
        spilled.add(r)
        assert len(spilled.rows) < row_group  # never more than one row group held
    assert spilled.spilled + len(spilled.rows) == len(rows)
    a, b = memory.frame(), spilled.frame()
    assert list(b.columns[: len(CALL_COLUMNS)]) == CALL_COLUMNS
    pd.testing.assert_frame_equal(a, b)


#: Times as the driver may record them: floats, NaN, or a Python int (SimPy's clock
#: starts at the int 0), so that a column may hold only ints.
times = st.one_of(st.floats(0, 1e6, allow_nan=False), st.just(math.nan), st.integers(0, 10))
any_records = st.builds(
    CallRecord,
    *(texts, texts, st.sampled_from(["llm", "tool"]), st.one_of(st.none(), texts), ints),
    *(st.sampled_from(["completed", "failed"]), texts, times, times, times, times),
    *(ints, ints, ints, ints, ints, ints),
)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(any_records, max_size=4))
def test_in_memory_records_are_the_from_records_frame(rows: list[CallRecord]) -> None:
    """The in-memory frame (built through Arrow where the columns allow) is exactly
    ``pandas.DataFrame.from_records``'s: values, dtypes, None columns, int-only times."""
    rec = Recorder()
    for r in rows:
        rec.add(r)
    expected = pd.DataFrame.from_records(rows, columns=CALL_COLUMNS)
    pd.testing.assert_frame_equal(rec.records(), expected, check_exact=True)


def _workload(sessions: int) -> tuple[object, int]:
    """ReAct sessions of 10 LLM calls (contexts to ~5k tokens) arriving at a steady rate
    one replica keeps up with: the calls in flight do not grow with ``sessions``."""
    agent = ReactConfig(
        task_tokens=lognormal(800, 0.2),
        turns=const(10),
        output_tokens=lognormal(40, 0.3, lo=1, hi=200),
        tool_output_tokens=lognormal(300, 0.3, hi=1000),
        tool_duration_s=lognormal(1.0, 0.5, hi=10),
    )
    cfg = SynthConfig(
        seed=3,
        sessions=sessions,
        arrivals=ArrivalConfig(process="poisson", rate_per_s=0.5),
        agents=(agent,),
        hash_block_tokens=64,
    )
    return lazy_workload(cfg, "bounded", "", {}), sessions * 19


def _run_peak(sessions: int) -> tuple[int, int]:
    """Peak bytes Python allocated for building and running the simulation (the
    workload included), and the calls recorded."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        wl, _ = _workload(sessions)
        # a small KV cache without a host tier: the cache is full early in both runs
        c = cluster(
            model="llama-3-8b", max_model_len=0, num_gpu_blocks_override=4000, host_kv_gib=0.0
        )
        sim = build_simulation(wl, c, cost_model=ROOFLINE)  # type: ignore[arg-type]
        sim.recorder.row_group = 2_000
        sim.run()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, len(collect(sim).calls)


def test_memory_is_bounded_when_the_workload_grows_10x() -> None:
    small_peak, small_n = _run_peak(100)
    big_peak, big_n = _run_peak(1_000)
    assert (small_n, big_n) == (1_900, 19_000)
    # What still grows with the run: the replica's timeline (40 bytes a step, an
    # output) and small per-session tables, about 66 bytes a call here.  Holding the
    # workload in memory costs about 850 bytes a call on this workload (its prefix
    # hashes), and records kept in memory about 380: either fails this.
    per_call = (big_peak - small_peak) / (big_n - small_n)
    assert per_call < 150, (small_peak, big_peak, per_call)


def _long_sessions(n: int) -> SynthConfig:
    """``n`` ReAct sessions of 20 turns with contexts growing to ~30k tokens (the fleet
    benchmark's agents), plus one orchestrator agent with sub-agents."""
    react = ReactConfig(
        task_tokens=lognormal(2000, 0.2, lo=256),
        turns=const(20),
        output_tokens=lognormal(100, 0.4, lo=1, hi=1024),
        tool_output_tokens=lognormal(1300, 0.3, hi=4096),
        small_model="small",
        small_model_fraction=0.3,
    )
    return SynthConfig(seed=5, sessions=n, agents=(react, FanoutConfig()), hash_block_tokens=64)


def test_sessions_in_flight_hold_no_hash_tuples_until_their_calls_are_read() -> None:
    """A session waiting in the driver holds its calls but not their prefix hashes.
    Generated eagerly, the hashes (a tuple per call, the hash objects) were most of
    what a session in flight holds: the fleet benchmark (50,000 sessions in flight at
    its peak) spent about 2 GB on them.  Reading them makes them, once; the driver drops
    them when the call ends."""
    react = _long_sessions(0).agents[0]
    assert isinstance(react, ReactConfig)
    react = replace(react, small_model_fraction=0.0)
    cfg = replace(_long_sessions(40), agents=(react,))  # the fleet benchmark's agents
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        held = list(generate_sessions(cfg))
        deferred = tracemalloc.get_traced_memory()[0] - base
        calls = [c for s in held for c in s]
        first = [c.prefix_hashes for c in calls]
        read = tracemalloc.get_traced_memory()[0] - base - deferred
    finally:
        tracemalloc.stop()
    assert deferred / len(calls) < 1_000, deferred / len(calls)
    assert read > 3 * deferred, (read, deferred)
    assert all(c.prefix_hashes is h for c, h in zip(calls, first, strict=True))  # kept
    # an ended call forgets a deferred tuple (made again, equal, if read); a given one stays
    turn = calls[4]  # the third LLM call of the first session
    assert turn.kind == "llm" and len(first[4]) > 30
    turn.forget_hashes()
    assert turn.prefix_hashes == first[4] and turn.prefix_hashes is not first[4]
    given = Call("c", "s", prefix_hashes=first[4])
    given.forget_hashes()
    assert given.prefix_hashes is first[4]


def test_deferred_hashes_do_not_depend_on_when_they_are_read() -> None:
    """Hashes read call by call as a run reaches them, or last call first (a context's
    blocks hashed all at once), or copied by ``dataclasses.replace`` before being read,
    are the same; each ReAct turn's hashes extend the previous turn's and cover the
    prompt's full blocks."""
    cfg = _long_sessions(12)
    forward = [c for s in generate_sessions(cfg) for c in s]
    backward = [c for s in generate_sessions(cfg) for c in s]
    copied = [replace(c) for s in generate_sessions(cfg) for c in s]
    seen = {id(c): c.prefix_hashes for c in reversed(backward)}
    assert [c.prefix_hashes for c in forward] == [seen[id(c)] for c in backward]
    assert forward == copied
    for c in forward:
        if c.kind == "llm":
            assert len(c.prefix_hashes) == c.input_tokens // c.block_size
    react = replace(cfg, agents=cfg.agents[:1])  # one context per session but the small model's
    last: dict[str, tuple[int, ...]] = {}
    for c in (c for s in generate_sessions(react) for c in s):
        if c.kind == "llm" and c.model is None:
            prev = last.get(c.session_id, ())
            assert c.prefix_hashes[: len(prev)] == prev
            last[c.session_id] = c.prefix_hashes
    assert len(last) == 12


#: the engine's objects: none of a run's may be alive when its frames are built
ENGINE_TYPES = ("Cluster", "BlockPool", "Driver", "Environment")


def _engine_objects() -> list[Any]:
    """Every live object of :data:`ENGINE_TYPES`, found through ``gc`` (the compiled
    engine's objects take no weak references, and the compiled ``simulate`` calls
    ``build_simulation`` directly: neither can be intercepted)."""
    return [o for o in gc.get_objects() if type(o).__name__ in ENGINE_TYPES]


def test_simulate_releases_the_engine_before_building_the_frames(monkeypatch: Any) -> None:
    """By the time the output frames are built (the recorder's calls frame is read), the
    cluster, its KV pools, the driver and the SimPy environment are gone (at scale they
    are the largest thing alive); the result is the one ``collect`` gives on a
    simulation kept alive."""
    before = {id(o) for o in _engine_objects()}  # (other tests' leftovers)
    alive: list[list[str]] = []
    real_frame = Recorder.frame

    def frame(self: Recorder) -> pd.DataFrame:
        alive.append(sorted(type(o).__name__ for o in _engine_objects() if id(o) not in before))
        return real_frame(self)

    c = cluster(model="llama-3-8b", max_model_len=0, num_gpu_blocks_override=4000)
    monkeypatch.setattr(simulation, "COLLECT_ENGINE_CALLS", 380)  # (a run this size)
    monkeypatch.setattr(Recorder, "frame", frame)
    res = simulation.simulate(_workload(20)[0], c, cost_model=ROOFLINE)  # type: ignore[arg-type]
    assert alive == [[]]
    monkeypatch.undo()
    sim = build_simulation(_workload(20)[0], c, cost_model=ROOFLINE)  # type: ignore[arg-type]
    sim.run()
    kept = collect(sim)
    assert len(res.calls) == 380 and len(res.timeline) > 380
    assert res.summary == kept.summary
    for a, b in ((res.calls, kept.calls), (res.timeline, kept.timeline)):
        pd.testing.assert_frame_equal(a, b)


def test_a_session_in_flight_holds_only_its_calls_still_to_end() -> None:
    """The driver drops a call's node (and with it, for a lazy workload, the call) as
    soon as the call ends, not when its whole session has: mid-run, the nodes alive are
    exactly the calls taken and not ended, though live sessions have ended calls."""
    c = cluster(model="llama-3-8b", max_model_len=0, num_gpu_blocks_override=4000)
    sim = build_simulation(_workload(40)[0], c, cost_model=ROOFLINE)  # type: ignore[arg-type]
    while sim.driver.done < 300:
        sim.env.step()
    live = list(sim.driver.live.values())
    assert any(0 < s.left < 19 for s in live)  # sessions in flight with calls ended
    gc.collect()
    nodes = [o for o in gc.get_objects() if type(o) is _Node]
    assert len(nodes) == sim.driver.pulled - sim.driver.done == sum(s.left for s in live)
    assert not any(n.ended for n in nodes)
    assert set(sim.driver.index) == {n.call.call_id for n in nodes}
