"""Per-call records and the run summary (the output contract).

The recorder appends one :class:`CallRecord` (a named tuple) per finished call; every
:data:`ROW_GROUP` records go to an unnamed temporary Parquet file as one row group, so
a long run holds at most one row group of records in memory.  At the end they become a
pandas DataFrame (``calls.parquet``) and the summary dict (``summary.json``).

Definitions (seconds unless stated):
- TTFT = first token time - issue time; TPOT = (finish - first token) / (output - 1)
  for calls with more than one output token; e2e = finish - issue.
- session time = last call's finish - first call's issue, per session whose calls
  all completed.
- throughput_tokens_per_s = output tokens of completed calls / makespan.
- prefix_hit_rate = prompt tokens served from the prefix cache / prompt tokens, over
  first admissions.
- gpu_hours = sum over replicas of GPUs x time held (placement to release or end);
  cost_usd = gpu_hours x the GPU's price per hour.
- overload (:func:`overload`): whether arrivals outpaced service, from the queueing
  delay of LLM calls against their service time and the offered vs served call rates.
"""

from __future__ import annotations

import functools
import math
import tempfile
from typing import IO, Any, NamedTuple

import numpy as np
import pandas as pd


class CallRecord(NamedTuple):
    """One finished call: a row of ``calls.parquet``, its fields the columns in order.

    Times are seconds of simulated time (NaN: never happened); tokens are counts.
    """

    call_id: str
    session_id: str
    kind: str  # "llm" or "tool"
    model: str | None  # None for tool calls
    replica: int  # the replica that served it last (-1: none)
    status: str  # "completed" or "failed"
    reason: str  # why it failed ("" when completed)
    issue_s: float
    admit_s: float  # first admission onto a replica
    first_token_s: float
    finish_s: float
    input_tokens: int  # as served (truncated to max_model_len)
    output_tokens: int
    cached_tokens: int  # prompt tokens hit in the prefix cache at first admission
    preemptions: int
    generated_tokens: int
    failovers: int  # times it moved off a failed replica


CALL_COLUMNS = list(CallRecord._fields)

SUMMARY_KEYS = (
    "requests",
    "completed_requests",
    "failed_requests",
    "sessions",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "session_s",
    "throughput_tokens_per_s",
    "prefix_hit_rate",
    "preemptions",
    "cold_starts",
    "gpu_hours",
    "cost_usd",
    "makespan_s",
    "seed",
    "policy",
)


#: Records a :class:`Recorder` holds in memory before writing them out as a row group.
ROW_GROUP = 65_536


class Recorder:
    """Per-call records, in the order the calls ended.

    Every ``row_group`` records are written as one row group of a temporary Parquet
    file (unnamed on disk: nothing is left behind, even if the process is killed) and
    dropped from memory; :meth:`frame` reads them back after the run.  A run of fewer
    calls never touches the disk.  Either way the frame is the same.
    """

    def __init__(self, row_group: int = ROW_GROUP) -> None:
        if row_group < 1:
            raise ValueError(f"row_group must be >= 1, got {row_group}")
        self.row_group = row_group
        self.rows: list[CallRecord] = []
        self.spilled = 0  # records written to the temporary file
        self._file: IO[bytes] | None = None
        self._writer: Any = None  # pyarrow.parquet.ParquetWriter once records spill

    def add(self, record: CallRecord) -> None:
        rows = self.rows
        rows.append(record)
        if len(rows) >= self.row_group:
            self._spill()

    def _spill(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            # closed in records(), or with the process (it has no name on disk)
            self._file = tempfile.TemporaryFile(prefix="agentsim-calls-", suffix=".parquet")  # noqa: SIM115
            self._writer = pq.ParquetWriter(self._file, _schema())
        columns = list(zip(*self.rows, strict=True))
        self._writer.write_table(
            pa.Table.from_arrays(
                [pa.array(c, type=f.type) for c, f in zip(columns, _schema(), strict=True)],
                schema=_schema(),
            )
        )
        self.spilled += len(self.rows)
        self.rows = []

    def records(self) -> pd.DataFrame:
        """Every record, one row each, columns :data:`CALL_COLUMNS` (and dtypes as
        ``pandas.DataFrame.from_records`` gives them, spilled or not)."""
        if self._writer is None:
            table = _inferred_table(self.rows)
            if table is None:
                return pd.DataFrame.from_records(self.rows, columns=CALL_COLUMNS)
            return _with_object_nones(table.to_pandas())
        import pyarrow.parquet as pq

        if self.rows:
            self._spill()
        assert self._file is not None
        self._writer.close()
        self._file.seek(0)
        df = pq.read_table(self._file).to_pandas()
        self._file.close()
        self._writer = self._file = None
        self.spilled = 0
        return _with_object_nones(df)

    def frame(self) -> pd.DataFrame:
        """:meth:`records` with the derived latencies (:func:`_with_latencies`)."""
        return _with_latencies(self.records())


def _with_latencies(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (call records) with ``ttft_s``, ``e2e_s`` and ``tpot_s`` added: NaN for
    failed calls, TTFT and TPOT NaN for tool calls, TPOT NaN for one output token.
    Computed on the NumPy columns where the times are floats (else
    :func:`_with_latencies_pandas`, the same through pandas)."""
    times = ("issue_s", "first_token_s", "finish_s")
    if not all(df[c].dtype == np.float64 for c in times) or df["output_tokens"].dtype != np.int64:
        return _with_latencies_pandas(df)
    issue, first, finish = (df[c].to_numpy() for c in times)
    out_tok = df["output_tokens"].to_numpy()
    not_done = (df["status"] != "completed").to_numpy()
    no_token = not_done | (df["kind"] == "tool").to_numpy()
    steps = np.where(out_tok > 1, out_tok - 1, np.nan)
    df["ttft_s"] = np.where(no_token, np.nan, first - issue)
    df["e2e_s"] = np.where(not_done, np.nan, finish - issue)
    df["tpot_s"] = np.where(no_token, np.nan, (finish - first) / steps)
    return df


def _with_latencies_pandas(df: pd.DataFrame) -> pd.DataFrame:
    df["ttft_s"] = df["first_token_s"] - df["issue_s"]
    df["e2e_s"] = df["finish_s"] - df["issue_s"]
    decode_steps = (df["output_tokens"] - 1).where(df["output_tokens"] > 1)
    df["tpot_s"] = (df["finish_s"] - df["first_token_s"]) / decode_steps
    failed = df["status"] != "completed"
    df.loc[failed, ["ttft_s", "e2e_s", "tpot_s"]] = math.nan
    tool = df["kind"] == "tool"
    df.loc[tool, ["ttft_s", "tpot_s"]] = math.nan
    return df


#: Columns of :class:`CallRecord` by type (the rest are floats, seconds).
_STRING_COLUMNS = ("call_id", "session_id", "kind", "model", "status", "reason")
_INT_COLUMNS = (
    *("replica", "input_tokens", "output_tokens", "cached_tokens"),
    *("preemptions", "generated_tokens", "failovers"),
)


def _with_object_nones(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (read from Arrow) with each string column of only None as an object
    column of None, as ``from_records`` keeps it."""
    for col in _STRING_COLUMNS:
        if df[col].isna().all():
            df[col] = pd.Series([None] * len(df), dtype=object)
    return df


def _inferred_table(rows: list[CallRecord]) -> Any:
    """``rows`` as an Arrow table, each column of the type Arrow infers from its
    values, or None unless every column infers as :func:`_schema` says (a string
    column of only None infers as null), or when there are no rows.  Where it holds,
    its ``to_pandas()`` is ``from_records``'s frame (strings, int64, float64), and
    about twice as fast; a column of other values (say a time column of only ints,
    which ``from_records`` makes int64) is left to ``from_records``."""
    if not rows:
        return None
    import pyarrow as pa

    arrays = []
    for values, field in zip(zip(*rows, strict=True), _schema(), strict=True):
        try:
            a = pa.array(values)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            return None
        if a.type != field.type and not (
            pa.types.is_null(a.type) and field.name in _STRING_COLUMNS
        ):
            return None
        arrays.append(a)
    return pa.Table.from_arrays(arrays, names=CALL_COLUMNS)


@functools.cache
def _schema() -> Any:
    """The Arrow schema of the spilled records (pyarrow is imported only when needed)."""
    import pyarrow as pa

    def kind(name: str) -> Any:
        if name in _STRING_COLUMNS:
            return pa.string()
        return pa.int64() if name in _INT_COLUMNS else pa.float64()

    return pa.schema([pa.field(n, kind(n)) for n in CALL_COLUMNS])


def percentiles(values: Any) -> dict[str, float | None]:
    """``mean``, ``p50``, ``p90``, ``p99`` of the finite values (None when empty)."""
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean": _r(a.mean()), "p50": _r(p50), "p90": _r(p90), "p99": _r(p99)}


def _r(x: float) -> float:
    """Round for stable JSON (12 significant digits)."""
    return float(f"{float(x):.12g}")


def llm_masks(calls: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks over the rows of ``calls`` (the :class:`Recorder` frame): its LLM
    calls, and its completed LLM calls.  Selecting columns through them, rather than
    filtering the frame, copies only the columns used."""
    llm = (calls["kind"] == "llm").to_numpy(dtype=bool)
    return llm, llm & (calls["status"] == "completed").to_numpy(dtype=bool)


def session_frame(calls: pd.DataFrame) -> pd.DataFrame:
    """Per-session start, end, call counts, completion and completion time (seconds),
    one row per session in order of first appearance.

    Columns: ``session_id``; ``start_s`` / ``end_s``, the earliest issue and latest
    finish (NaN skipped; NaN when all are); ``calls``, ``llm_calls``; ``completed``
    (every call completed); ``session_s`` = end - start of a completed session, else
    NaN.  Computed with NumPy over the sessions' codes; :func:`_session_frame_groupby`
    (the same frame through a pandas groupby, 2-5x slower) where that could differ by
    a bit: a missing session id, times that are not floats, or a -0.0 among them
    (groupby's min/max pick between 0.0 and -0.0 by how NumPy reduces, not by rule)."""
    codes, uniques = pd.factorize(calls["session_id"], sort=False)
    issue, finish = calls["issue_s"].to_numpy(), calls["finish_s"].to_numpy()
    if (
        not len(calls)
        or (codes < 0).any()
        or issue.dtype != np.float64
        or finish.dtype != np.float64
        or _negative_zero(issue)
        or _negative_zero(finish)
    ):
        return _session_frame_groupby(calls)
    n = len(uniques)
    start = _group_extreme(np.minimum, codes, issue, n)
    end = _group_extreme(np.maximum, codes, finish, n)
    llm = calls["kind"].to_numpy() == "llm"
    failed = calls["status"].to_numpy() != "completed"
    completed = np.bincount(codes, weights=failed, minlength=n) == 0
    return pd.DataFrame(
        {
            "session_id": uniques,
            "start_s": start,
            "end_s": end,
            "calls": np.bincount(codes, minlength=n).astype(np.int64),
            "llm_calls": np.bincount(codes, weights=llm, minlength=n).astype(np.int64),
            "completed": completed,
            "session_s": np.where(completed, end - start, np.nan),
        }
    )


def _negative_zero(values: np.ndarray) -> bool:
    return bool((np.signbit(values) & (values == 0)).any())


def _group_extreme(op: np.ufunc, codes: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per group (``codes`` 0..n-1) the minimum (``op`` = np.minimum) or maximum of
    ``values`` (no -0.0 among them: equal values are then the same bits), as groupby
    gives it: NaN skipped, NaN for a group with nothing else."""
    ok = ~np.isnan(values)
    out = np.full(n, np.inf if op is np.minimum else -np.inf)
    op.at(out, codes[ok], values[ok])
    out[np.bincount(codes[ok], minlength=n) == 0] = np.nan
    return out


def _session_frame_groupby(calls: pd.DataFrame) -> pd.DataFrame:
    """:func:`session_frame` through ``DataFrame.groupby``."""
    df = calls[["session_id", "issue_s", "finish_s"]].assign(
        llm=calls["kind"].to_numpy() == "llm", ok=calls["status"].to_numpy() == "completed"
    )
    out = df.groupby("session_id", sort=False).agg(
        start_s=("issue_s", "min"),
        end_s=("finish_s", "max"),
        calls=("issue_s", "size"),
        llm_calls=("llm", "sum"),
        completed=("ok", "all"),
    )
    out["session_s"] = (out["end_s"] - out["start_s"]).where(out["completed"])
    return out.reset_index()


def summarize(
    calls: pd.DataFrame,
    sessions_frame: pd.DataFrame,
    *,
    sessions: int,
    makespan_s: float,
    prompt_tokens: int,
    hit_tokens: int,
    preemptions: int,
    cold_starts: int,
    gpu_hours: float,
    price_per_hour: float,
    seed: int,
    policy: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``summary.json`` object (keys in :data:`SUMMARY_KEYS`, then extras)."""
    llm, ok = llm_masks(calls)
    n_llm, n_ok = int(llm.sum()), int(ok.sum())
    out: dict[str, Any] = {
        "requests": n_llm,
        "completed_requests": n_ok,
        "failed_requests": n_llm - n_ok,
        "sessions": int(sessions),
        "ttft_s": percentiles(calls["ttft_s"].to_numpy()[ok]),
        "tpot_s": percentiles(calls["tpot_s"].to_numpy()[ok]),
        "e2e_s": percentiles(calls["e2e_s"].to_numpy()[ok]),
        "session_s": percentiles(sessions_frame["session_s"]),
        "throughput_tokens_per_s": _r(calls["output_tokens"].to_numpy()[ok].sum() / makespan_s)
        if makespan_s > 0
        else 0.0,
        "prefix_hit_rate": _r(hit_tokens / prompt_tokens) if prompt_tokens else 0.0,
        "preemptions": int(preemptions),
        "cold_starts": int(cold_starts),
        "gpu_hours": _r(gpu_hours),
        "cost_usd": _r(gpu_hours * price_per_hour),
        "makespan_s": _r(makespan_s),
        "seed": int(seed),
        "policy": policy,
    }
    if extra:
        out.update(extra)
    return out


#: :func:`overload`: a run is overloaded when LLM calls waited for a replica, on
#: average, more than this fraction of the time they then took to be served ...
OVERLOAD_QUEUE_RATIO = 0.5
#: ... or when completions came out at less than this fraction of the arrival rate
#: (a backlog built up) while calls queued for at least :data:`BACKLOG_QUEUE_RATIO`
#: of their service time (so a run whose last call is merely long is not flagged).
OVERLOAD_SERVED_FRACTION = 0.9
BACKLOG_QUEUE_RATIO = 0.1


def overload(calls: pd.DataFrame) -> dict[str, Any]:
    """Whether arrivals outpaced service, and the numbers behind the verdict.

    Over the completed LLM calls of ``calls`` (the :class:`Recorder` frame), with
    queueing = admission onto a replica - issue and service = finish - admission
    (seconds):

    - ``offered_load_rps``: LLM calls issued per second between the first and the last
      issue (None when they all arrive at one instant);
    - ``served_load_rps``: LLM calls completed per second between the first and the
      last completion (None with fewer than two completions at distinct times);
    - ``mean_queue_s``, ``mean_service_s``: mean queueing and service time;
    - ``overloaded``: ``mean_queue_s > OVERLOAD_QUEUE_RATIO x mean_service_s`` (by
      Little's law: on average at least one call waited for every two being served),
      or ``served_load_rps < OVERLOAD_SERVED_FRACTION x offered_load_rps`` with
      ``mean_queue_s > BACKLOG_QUEUE_RATIO x mean_service_s`` (completions lagged the
      arrivals: the run drained a backlog after the last arrival).  The served rate
      counts completions only but the comparison uses the time windows, so calls that
      failed (faults, length limits) do not count as overload.

    The queueing test is the one that sees overload in closed-loop traces: there a
    session's next call is issued only when the previous one ends, so a slow cluster
    also slows the arrivals, and offered and served rates stay close while calls queue.
    """
    llm, ok = llm_masks(calls)

    def col(name: str, mask: np.ndarray) -> np.ndarray:
        return calls[name].to_numpy(dtype=np.float64)[mask]

    issue = col("issue_s", llm)
    issue = issue[np.isfinite(issue)]
    fin = np.sort(col("finish_s", ok))
    fin = fin[np.isfinite(fin)]
    admit = col("admit_s", ok)
    queue = admit - col("issue_s", ok)
    service = col("finish_s", ok) - admit
    good = np.isfinite(queue) & np.isfinite(service)
    arrive_s = float(issue.max() - issue.min()) if issue.size else 0.0
    serve_s = float(fin[-1] - fin[0]) if fin.size else 0.0
    offered = issue.size / arrive_s if arrive_s > 0 else None
    served = fin.size / serve_s if serve_s > 0 else None
    mean_q = float(queue[good].mean()) if good.any() else None
    mean_s = float(service[good].mean()) if good.any() else None
    over = False
    if mean_q is not None and mean_s is not None:
        over = mean_q > OVERLOAD_QUEUE_RATIO * mean_s
        if not over and arrive_s > 0 and fin.size > 1:
            # completed / serve_s < 0.9 x completed / arrive_s, in time windows
            lagged = serve_s * OVERLOAD_SERVED_FRACTION > arrive_s
            over = lagged and mean_q > BACKLOG_QUEUE_RATIO * mean_s
    return {
        "overloaded": bool(over),
        "offered_load_rps": None if offered is None else _r(offered),
        "served_load_rps": None if served is None else _r(served),
        "mean_queue_s": None if mean_q is None else _r(mean_q),
        "mean_service_s": None if mean_s is None else _r(mean_s),
    }
