"""The per-call latencies and session_frame (NumPy) against the pandas code they replaced.

calls.parquet and sessions.parquet must not change by a byte: same values to the bit
(signs of zero too), dtypes and row order; NaN where a latency or time does not exist,
NaN skipped in a session's min/max, failed and tool calls as before.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.metrics.recorder import (
    CallRecord,
    Recorder,
    _session_frame_groupby,
    _with_latencies,
    _with_latencies_pandas,
    session_frame,
)

times = st.sampled_from([0.0, -0.0, 1.5, 2.0, 1e6, math.nan])
calls = st.builds(
    CallRecord,
    st.text("abc", max_size=3),
    st.sampled_from(["s1", "s2", "s3", "a-long-session-id"]),
    st.sampled_from(["llm", "tool"]),
    st.none(),
    st.integers(-1, 3),
    st.sampled_from(["completed", "failed"]),
    st.just(""),
    *(times, times, times, times),
    *(st.integers(0, 9), st.integers(1, 9), st.integers(0, 9)),
    *(st.integers(0, 2), st.integers(0, 9), st.integers(0, 1)),
)


def _frame(rows: list[CallRecord]) -> pd.DataFrame:
    rec = Recorder()
    for r in rows:
        rec.add(r)
    return rec.frame()


def _signs(df: pd.DataFrame, cols: tuple[str, ...]) -> list[list[float]]:
    return [[math.copysign(1, x) for x in df[c].to_numpy()] for c in cols]


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(calls, min_size=1, max_size=12))
def test_latencies_are_the_pandas_latencies(rows: list[CallRecord]) -> None:
    rec = Recorder()
    for r in rows:
        rec.add(r)
    records = rec.records()
    got, expected = _with_latencies(records.copy()), _with_latencies_pandas(records.copy())
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    cols = ("ttft_s", "e2e_s", "tpot_s")
    assert _signs(got, cols) == _signs(expected, cols)


def _same_as_groupby(rows: list[CallRecord]) -> None:
    df = _frame(rows)
    got, expected = session_frame(df), _session_frame_groupby(df)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    # signs of zero too (assert_frame_equal takes -0.0 == 0.0)
    cols = ("start_s", "end_s", "session_s")
    assert _signs(got, cols) == _signs(expected, cols)


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(calls, max_size=12))
def test_session_frame_is_the_groupby_frame(rows: list[CallRecord]) -> None:
    _same_as_groupby(rows)


@pytest.mark.parametrize("n", [2, 9, 17])
@pytest.mark.parametrize("zeros", [(0.0, -0.0), (-0.0, 0.0)])
@pytest.mark.parametrize("column", ["issue", "finish"])
def test_zeros_of_both_signs_in_one_session(
    n: int, zeros: tuple[float, float], column: str
) -> None:
    """Which zero groupby keeps depends on how NumPy reduces (first or last, by
    length): such sessions must come out as groupby makes them."""
    rows = []
    for i in range(n):
        zero = zeros[1] if i == n - 1 else zeros[0]
        issue, finish = (zero, 5.0) if column == "issue" else (1.0, zero)
        rows.append(
            CallRecord(f"c{i}", "s", "llm", None, 0, "completed", "", issue, 1.0, 1.0, finish,
                       1, 1, 0, 0, 1, 0)
        )  # fmt: skip
    _same_as_groupby(rows)


def test_hand_worked_sessions() -> None:
    nan = math.nan
    rows = [
        CallRecord("c1", "s2", "llm", None, 0, "completed", "", 1.0, 1.0, 2.0, 3.0, 5, 2, 0, 0, 2, 0),
        CallRecord("c2", "s1", "tool", None, -1, "completed", "", 0.5, nan, nan, 0.7, 0, 0, 0, 0, 0, 0),
        CallRecord("c3", "s2", "llm", None, 1, "failed", "x", 4.0, nan, nan, nan, 5, 2, 0, 0, 0, 0),
    ]  # fmt: skip
    got = session_frame(_frame(rows))
    assert list(got["session_id"]) == ["s2", "s1"]  # first appearance
    assert list(got["start_s"]) == [1.0, 0.5] and list(got["end_s"]) == [3.0, 0.7]
    assert list(got["calls"]) == [2, 1] and list(got["llm_calls"]) == [2, 0]
    assert list(got["completed"]) == [False, True]
    assert math.isnan(got["session_s"][0]) and math.isclose(got["session_s"][1], 0.2)
