"""Memory follows the calls in flight, not the calls simulated: call records spill to
Parquet row groups (with the same frame as in memory), a lazy workload's sessions are
generated and forgotten as they go, and the event loop's peak allocations barely grow
when the workload grows 10x."""

from __future__ import annotations

import math
import tracemalloc

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.metrics.recorder import CALL_COLUMNS, CallRecord, Recorder
from sim.simulation import build_simulation, collect
from sim.workload.traces.arrivals import ArrivalConfig
from sim.workload.traces.distributions import const, lognormal
from sim.workload.traces.synth import ReactConfig, SynthConfig, lazy_workload
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
