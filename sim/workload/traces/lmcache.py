"""Reader for the LMCache agent traces (real agent runs, one gzipped JSONL per session).

Each line is one LLM call: ``timestamp`` (microseconds since the Unix epoch, the call's
issue time), ``input`` (full prompt text), ``output`` (completion text) and
``session_id``.  Lines are not sorted and calls of multi-agent runs overlap.

Conversion (documented in ``traces/SCHEMA.md``):

* calls are sorted by timestamp (ties keep file order); token counts and 16-token chain
  prefix hashes come from the offline ``cl100k_base`` tokenizer, so the real prefix
  sharing between turns (and across sessions: shared instructions) is kept;
* each call's end is estimated with :class:`~sim.workload.traces.estimate.ServiceEstimate`;
  a call's parent is the call of the session that ended last (by the estimate) before
  it was issued; a call issued before any earlier call ended is a root issued at its
  recorded time (concurrent calls of a multi-agent run become sibling branches);
* the gap ``issue - parent_end`` (>= 0 by construction) becomes an explicit ``tool``
  call when the parent's output invokes a tool (a fenced ```` ```bash ```` block as
  mini-SWE-agent emits, or a ``<tool_call>`` tag), otherwise the child's ``gap_s``;
* an empty recorded prompt (some Magentic-One WebSurfer calls; their multimodal input
  was not logged) counts as 1 token with no hashes and is reported in the read notes.

Times are seconds since the earliest call of all sessions read together; sessions keep
their recorded relative start times.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sim.common.errors import InputError
from sim.workload.calls import Call
from sim.workload.traces.estimate import ServiceEstimate
from sim.workload.traces.hashing import TEXT_BLOCK_SIZE, chain_hashes
from sim.workload.traces.io import ReadReport, iter_json_objects, trace_files
from sim.workload.traces.tabular import check_time
from sim.workload.traces.tokenizer import encode

TOOL_MARKERS = ("```bash", "<tool_call>")


@dataclass(slots=True)
class _Rec:
    """One recorded LLM call, text already reduced to tokens."""

    line: int
    ts_us: int
    input_tokens: int
    output_tokens: int
    hashes: tuple[int, ...]
    invokes_tool: bool


def _str_field(path: str, line: int, obj: dict[str, object], key: str) -> str:
    v = obj.get(key)
    if v is None:
        raise InputError(path, line, key, "required field is missing")
    if not isinstance(v, str):
        raise InputError(path, line, key, f"expected a string, got {type(v).__name__}")
    return v


def _read_session(path: str, report: ReadReport) -> tuple[str, list[_Rec]]:
    """Parse one session file into records sorted by issue time."""
    recs: list[_Rec] = []
    session: str | None = None
    report.files += 1
    for lineno, obj in iter_json_objects(path, report):
        ts = obj.get("timestamp")
        if ts is None:
            raise InputError(path, lineno, "timestamp", "required field is missing")
        if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
            raise InputError(
                path, lineno, "timestamp", f"expected integer microseconds >= 0, got {ts!r}"
            )
        text_in = _str_field(path, lineno, obj, "input")
        text_out = _str_field(path, lineno, obj, "output")
        sid = obj.get("session_id")
        if sid is not None:
            if not isinstance(sid, str) or not sid:
                raise InputError(path, lineno, "session_id", "expected a non-empty string")
            if session is not None and sid != session:
                raise InputError(
                    path,
                    lineno,
                    "session_id",
                    f"{sid!r} differs from {session!r} earlier in the file",
                )
            session = sid
        report.records += 1
        tok_in = encode(text_in)
        n_out = len(encode(text_out))
        if not tok_in:
            report.note("empty prompt counted as 1 token")
        if n_out == 0:
            report.note("empty output counted as 1 token")
        recs.append(
            _Rec(
                line=lineno,
                ts_us=ts,
                input_tokens=max(1, len(tok_in)),
                output_tokens=max(1, n_out),
                hashes=chain_hashes(tok_in, TEXT_BLOCK_SIZE),
                invokes_tool=any(m in text_out for m in TOOL_MARKERS),
            )
        )
    if not recs:
        raise InputError(path, 1, None, "empty trace file (no LLM calls)")
    if session is None:
        session = Path(path).name.split(".")[0]
    recs.sort(key=lambda r: r.ts_us)
    return session, recs


def _session_calls(
    session: str, recs: list[_Rec], t0_us: int, est: ServiceEstimate, report: ReadReport
) -> list[Call]:
    """Turn one session's sorted records into LLM calls plus derived tool calls."""
    calls: list[Call] = []
    ends_us: list[float] = []
    for i, r in enumerate(recs):
        parent = -1
        for j in range(i):
            if ends_us[j] <= r.ts_us and (parent < 0 or ends_us[j] >= ends_us[parent]):
                parent = j
        cid = f"{session}-{i}"
        issue_s = (r.ts_us - t0_us) / 1e6
        parents: tuple[str, ...] = ()
        gap_s = 0.0
        if parent >= 0:
            gap_s = (r.ts_us - ends_us[parent]) / 1e6
            parents = (f"{session}-{parent}",)
            if recs[parent].invokes_tool and gap_s > 0:
                tool_id = f"{cid}-tool"
                calls.append(
                    Call(
                        call_id=tool_id,
                        session_id=session,
                        kind="tool",
                        parents=parents,
                        issue_time_s=(ends_us[parent] - t0_us) / 1e6,
                        tool_duration_s=gap_s,
                    )
                )
                parents, gap_s = (tool_id,), 0.0
        elif i > 0:
            report.note("concurrent calls (issued before any earlier call ended)")
        calls.append(
            Call(
                call_id=cid,
                session_id=session,
                kind="llm",
                parents=parents,
                issue_time_s=issue_s,
                gap_s=gap_s,
                input_tokens=r.input_tokens,
                output_tokens=r.output_tokens,
                prefix_hashes=r.hashes,
                block_size=TEXT_BLOCK_SIZE,
            )
        )
        ends_us.append(r.ts_us + est.seconds(r.output_tokens) * 1e6)
    return calls


def iter_lmcache(
    path: str, report: ReadReport | None = None, est: ServiceEstimate | None = None
) -> Iterator[Call]:
    """Calls of every session under ``path`` (a session file or a directory of them),
    sessions ordered by their first call.  Holds one session's text at a time."""
    report = report if report is not None else ReadReport()
    est = est or ServiceEstimate()
    sessions: list[tuple[str, list[_Rec]]] = []
    seen: dict[str, str] = {}
    files: dict[str, str] = {}
    for f in trace_files(path):
        sid, recs = _read_session(f, report)
        if sid in seen:
            raise InputError(f, None, "session_id", f"{sid!r} also used by {seen[sid]}")
        seen[sid] = f
        sessions.append((sid, recs))
        files[sid] = f
    sessions.sort(key=lambda s: s[1][0].ts_us)
    t0 = sessions[0][1][0].ts_us
    for sid, recs in sessions:
        check_time(files[sid], recs[-1].line, "timestamp", (recs[-1].ts_us - t0) / 1e6)
        for c in _session_calls(sid, recs, t0, est, report):
            report.calls += 1
            yield c
