"""Reader for a user's own request logs: CSV or JSONL, columns mapped by name.

A :class:`ColumnMap` names the columns holding the arrival time, prompt tokens and
output tokens, and optionally a session id and a model.  Without an explicit map the
header (CSV) or first record (JSONL) is matched against common names (see
``ALIASES``).  Times are numbers in ``time_unit`` (``s``, ``ms``, ``us``, ``ns``) or ISO
8601 strings (``iso``); they must be non-decreasing and become seconds since the first
record.  Without a session column every record is its own session; with one, the calls
of a session form a chain (each call's parent is the session's previous call, gap =
arrival - (previous arrival + estimated service time), clamped at 0).
Call ids are ``r<line>``.  Records with 0 prompt or 0 output tokens (requests that
failed upstream) are skipped and counted in the read report; within a session the next
call's parent is then the session's previous kept call.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sim.common.errors import InputError
from sim.workload.calls import Call
from sim.workload.traces.estimate import ServiceEstimate
from sim.workload.traces.io import ReadReport, iter_json_objects, open_text
from sim.workload.traces.tabular import (
    SKIP_ZERO,
    check_not_empty,
    check_row_width,
    check_time,
    check_tokens,
    csv_rows,
)

TIME_UNITS: dict[str, float] = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}

#: Column names recognised when no mapping is given, per role, in order of preference.
ALIASES: dict[str, tuple[str, ...]] = {
    "time": ("timestamp", "time", "arrival_time", "arrival_time_s", "issue_time_s", "ts"),
    "input": ("input_tokens", "prompt_tokens", "input_length", "contexttokens", "request tokens"),
    "output": (
        "output_tokens",
        "completion_tokens",
        "output_length",
        "generatedtokens",
        "response tokens",
    ),
    "session": ("session_id", "conversation_id", "session", "conversation"),
    "model": ("model", "model_name"),
}


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """Which column plays which role (column names as in the file).

    Attributes:
        time: arrival time column.
        input: prompt tokens column.
        output: output tokens column.
        session: optional session id column.
        model: optional model name column.
        time_unit: ``s``, ``ms``, ``us``, ``ns`` or ``iso``.
    """

    time: str
    input: str
    output: str
    session: str | None = None
    model: str | None = None
    time_unit: str = "s"

    @classmethod
    def parse(cls, spec: str, time_unit: str = "s") -> ColumnMap:
        """Parse ``"time=ts,input=prompt,output=completion[,session=sid][,model=m]"``."""
        roles = {f.name for f in fields(cls)} - {"time_unit"}
        got: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            role, eq, col = part.partition("=")
            role = role.strip()
            if not eq or role not in roles or not col.strip():
                raise InputError(
                    "--columns",
                    None,
                    role or part,
                    f"expected ROLE=COLUMN with ROLE in {', '.join(sorted(roles))}",
                )
            got[role] = col.strip()
        for need in ("time", "input", "output"):
            if need not in got:
                raise InputError("--columns", None, need, "required role is not mapped")
        _check_unit(time_unit)
        return cls(time_unit=time_unit, **got)


def _check_unit(unit: str) -> None:
    if unit not in TIME_UNITS and unit != "iso":
        raise InputError(
            "--time-unit", None, None, f"unknown unit {unit!r}; use s, ms, us, ns or iso"
        )


def guess_map(path: str, names: list[str], time_unit: str = "s") -> ColumnMap:
    """A :class:`ColumnMap` from well-known column names; raises naming the missing role."""
    lower = {n.strip().lower(): n for n in names}
    found: dict[str, str] = {}
    for role, aliases in ALIASES.items():
        for a in aliases:
            if a in lower:
                found[role] = lower[a]
                break
    for need in ("time", "input", "output"):
        if need not in found:
            raise InputError(
                path,
                1,
                need,
                f"no column for this role among {names}; map it with --columns {need}=NAME",
            )
    _check_unit(time_unit)
    return ColumnMap(time_unit=time_unit, **found)


def _records(
    path: str, report: ReadReport
) -> Iterator[tuple[int, list[str] | None, dict[str, Any]]]:
    """Yield ``(line, header_or_None, record)``; CSV records are dicts of strings."""
    with open_text(path) as fh:
        first = fh.read(1)
    if first == "{":
        for lineno, obj in iter_json_objects(path, report):
            yield lineno, None, obj
        return
    with open_text(path) as fh:
        rows = csv_rows(path, fh)
        head = next(rows, None)
        if head is None:
            raise InputError(path, 1, None, "empty trace file")
        report.lines += 1
        header = [h.strip() for h in head[1]]
        for line, row in rows:
            report.lines += 1
            check_row_width(path, line, row, header)
            yield line, header, dict(zip(header, row, strict=False))


def _number(path: str, line: int, rec: dict[str, Any], col: str) -> float:
    v = rec.get(col)
    if v is None or v == "":
        raise InputError(path, line, col, "required field is missing")
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise InputError(path, line, col, f"expected a number, got {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise InputError(path, line, col, f"expected a number, got {json.dumps(v)}")
    return float(v)


def _tokens(path: str, line: int, rec: dict[str, Any], col: str) -> int:
    v = _number(path, line, rec, col)
    if not v.is_integer() or v < 0:
        raise InputError(path, line, col, f"expected an integer >= 0, got {v:g}")
    return check_tokens(path, line, col, int(v))


def _time_parser(path: str, unit: str) -> Callable[[int, dict[str, Any], str], float]:
    if unit == "iso":

        def iso(line: int, rec: dict[str, Any], col: str) -> float:
            v = rec.get(col)
            if not isinstance(v, str) or not v:
                raise InputError(path, line, col, "expected an ISO 8601 time string")
            try:
                dt = datetime.fromisoformat(v.strip())
            except ValueError:
                raise InputError(path, line, col, f"expected an ISO 8601 time, got {v!r}") from None
            return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()

        return iso
    factor = TIME_UNITS[unit]

    def num(line: int, rec: dict[str, Any], col: str) -> float:
        return _number(path, line, rec, col) * factor

    return num


def iter_generic(
    path: str,
    cmap: ColumnMap | None = None,
    report: ReadReport | None = None,
    est: ServiceEstimate | None = None,
) -> Iterator[Call]:
    """Stream calls from a mapped CSV/JSONL request log."""
    report = report if report is not None else ReadReport()
    est = est or ServiceEstimate()
    report.files += 1
    start = report.records
    t0: float | None = None
    last_t = -math.inf
    prev: dict[str, tuple[str, float, int]] = {}
    m = cmap
    parse_time: Callable[[int, dict[str, Any], str], float] | None = None
    for line, header, rec in _records(path, report):
        if m is None:
            m = guess_map(path, header if header is not None else list(rec), "s")
        if parse_time is None:
            parse_time = _time_parser(path, m.time_unit)
        t = parse_time(line, rec, m.time)
        if t < last_t:
            raise InputError(path, line, m.time, "not monotonic: earlier than the previous record")
        last_t = t
        if t0 is None:
            t0 = t
        check_time(path, line, m.time, t - t0)
        inp = _tokens(path, line, rec, m.input)
        out = _tokens(path, line, rec, m.output)
        if inp == 0 or out == 0:
            report.records += 1
            report.skip(SKIP_ZERO)
            continue
        model = None
        if m.model is not None:
            mv = rec.get(m.model)
            model = str(mv) if mv not in (None, "") else None
        cid = f"r{line}"
        session, gap = cid, 0.0
        parents: tuple[str, ...] = ()
        if m.session is not None:
            sv = rec.get(m.session)
            if sv is None or sv == "":
                raise InputError(path, line, m.session, "required field is missing")
            session = str(sv)
            if session in prev:
                pid, pt, pout = prev[session]
                parents = (pid,)
                gap = max(0.0, t - (pt + est.seconds(pout)))
            prev[session] = (cid, t, out)
        report.records += 1
        report.calls += 1
        yield Call(
            call_id=cid,
            session_id=session,
            parents=parents,
            issue_time_s=t - t0,
            gap_s=gap,
            model=model,
            input_tokens=inp,
            output_tokens=out,
        )
    check_not_empty(path, report.records - start)
