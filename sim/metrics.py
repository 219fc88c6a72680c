"""Per-call records and the run summary (the output contract).

The recorder appends one compact tuple per finished call; at the end they become a
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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

CALL_COLUMNS = [
    "call_id",
    "session_id",
    "kind",
    "model",
    "replica",
    "status",
    "reason",
    "issue_s",
    "admit_s",
    "first_token_s",
    "finish_s",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "preemptions",
    "generated_tokens",
    "failovers",
]

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


@dataclass
class Recorder:
    """Append-only per-call records."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def add(self, row: tuple[Any, ...]) -> None:
        self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame.from_records(self.rows, columns=CALL_COLUMNS)
        df["ttft_s"] = df["first_token_s"] - df["issue_s"]
        df["e2e_s"] = df["finish_s"] - df["issue_s"]
        decode_steps = (df["output_tokens"] - 1).where(df["output_tokens"] > 1)
        df["tpot_s"] = (df["finish_s"] - df["first_token_s"]) / decode_steps
        failed = df["status"] != "completed"
        df.loc[failed, ["ttft_s", "e2e_s", "tpot_s"]] = math.nan
        tool = df["kind"] == "tool"
        df.loc[tool, ["ttft_s", "tpot_s"]] = math.nan
        return df


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


def session_frame(calls: pd.DataFrame) -> pd.DataFrame:
    """Per-session start, end, call counts, completion and completion time (seconds)."""
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
    llm = calls[calls["kind"] == "llm"]
    ok = llm[llm["status"] == "completed"]
    out: dict[str, Any] = {
        "requests": int(len(llm)),
        "completed_requests": int(len(ok)),
        "failed_requests": int(len(llm) - len(ok)),
        "sessions": int(sessions),
        "ttft_s": percentiles(ok["ttft_s"]),
        "tpot_s": percentiles(ok["tpot_s"]),
        "e2e_s": percentiles(ok["e2e_s"]),
        "session_s": percentiles(sessions_frame["session_s"]),
        "throughput_tokens_per_s": _r(ok["output_tokens"].sum() / makespan_s)
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
