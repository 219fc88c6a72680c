"""The canonical agentsim trace format: JSON Lines, one call per line.

See ``traces/SCHEMA.md`` for every field and unit.  An optional first line
``{"agentsim_trace": 1, ...}`` carries metadata (source, attribution) and marks the
file for format auto-detection.  Reading streams line by line; every problem raises
:class:`~sim.common.errors.InputError` naming ``path:line: field``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from sim.common.errors import InputError
from sim.workload.calls import Call, Workload, topo_order
from sim.workload.traces.hashing import repeated_hash
from sim.workload.traces.io import (
    ReadReport,
    iter_json_objects,
    open_text,
    trace_files,
)
from sim.workload.traces.tabular import (
    HASH_RANGE,
    SKIP_ZERO,
    check_not_empty,
    check_time,
    check_tokens,
)

FORMAT_VERSION = 1
HEADER_KEY = "agentsim_trace"
DEFAULT_BLOCK_SIZE = 16

_KNOWN = {
    "session_id",
    "call_id",
    "parents",
    "type",
    "issue_time_s",
    "gap_s",
    "model",
    "input_tokens",
    "output_tokens",
    "prefix_hashes",
    "block_size",
    "tool_duration_s",
}


def _num(path: str, line: int, obj: dict[str, Any], key: str, default: float | None) -> float:
    v = obj.get(key, default)
    if v is None:
        raise InputError(path, line, key, "required field is missing")
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InputError(path, line, key, f"expected a number, got {json.dumps(v)}")
    if not math.isfinite(v) or v < 0:
        raise InputError(path, line, key, f"expected a finite number >= 0, got {v}")
    return check_time(path, line, key, float(v))


def _int(path: str, line: int, obj: dict[str, Any], key: str, default: int | None, lo: int) -> int:
    v = obj.get(key, default)
    if v is None:
        raise InputError(path, line, key, "required field is missing")
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise InputError(path, line, key, f"expected an integer, got {json.dumps(v)}")
    if v < lo:
        raise InputError(path, line, key, f"expected an integer >= {lo}, got {v}")
    return check_tokens(path, line, key, int(v))


def parse_call(obj: Any, path: str, line: int) -> Call:
    """Validate one decoded JSON object and build a :class:`Call`."""
    if not isinstance(obj, dict):
        raise InputError(path, line, None, "expected a JSON object per line")
    unknown = set(obj) - _KNOWN
    if unknown:
        raise InputError(path, line, sorted(unknown)[0], "unknown field (see traces/SCHEMA.md)")
    for key in ("session_id", "call_id"):
        v = obj.get(key)
        if v is None:
            raise InputError(path, line, key, "required field is missing")
        if not isinstance(v, str | int) or isinstance(v, bool) or str(v) == "":
            raise InputError(path, line, key, "expected a non-empty string")
    kind = obj.get("type", "llm")
    if kind not in ("llm", "tool"):
        raise InputError(path, line, "type", f"expected 'llm' or 'tool', got {json.dumps(kind)}")
    parents = obj.get("parents", [])
    if not isinstance(parents, list) or not all(
        isinstance(p, str | int) and not isinstance(p, bool) for p in parents
    ):
        raise InputError(path, line, "parents", "expected a list of call ids")
    issue = _num(path, line, obj, "issue_time_s", 0.0 if parents else None)
    gap = _num(path, line, obj, "gap_s", 0.0)
    model = obj.get("model")
    if model is not None and not isinstance(model, str):
        raise InputError(path, line, "model", "expected a string or null")
    if kind == "llm":
        inp = _int(path, line, obj, "input_tokens", None, 0)
        out = _int(path, line, obj, "output_tokens", None, 0)
        bs = _int(path, line, obj, "block_size", DEFAULT_BLOCK_SIZE, 1)
        hashes = obj.get("prefix_hashes", [])
        lo, hi = HASH_RANGE
        if not isinstance(hashes, list) or not all(
            isinstance(h, int) and not isinstance(h, bool) and lo <= h < hi for h in hashes
        ):
            raise InputError(
                path, line, "prefix_hashes", "expected a list of signed 64-bit integers"
            )
        if len(set(hashes)) != len(hashes):
            raise InputError(path, line, "prefix_hashes", repeated_hash(hashes))
        if len(hashes) * bs > inp:
            raise InputError(
                path,
                line,
                "prefix_hashes",
                f"{len(hashes)} blocks of {bs} tokens exceed input_tokens={inp}",
            )
        tool = 0.0
    else:
        inp = out = 0
        bs = 16
        hashes = []
        tool = _num(path, line, obj, "tool_duration_s", None)
    return Call(
        call_id=str(obj["call_id"]),
        session_id=str(obj["session_id"]),
        kind=kind,
        parents=tuple(str(p) for p in parents),
        issue_time_s=issue,
        gap_s=gap,
        model=model,
        input_tokens=inp,
        output_tokens=out,
        prefix_hashes=tuple(hashes),
        block_size=bs,
        tool_duration_s=tool,
    )


def iter_canonical(
    path: str | Path, report: ReadReport | None = None
) -> Iterator[tuple[int, Call]]:
    """Stream ``(line_number, Call)`` from a canonical trace (``.jsonl`` or ``.jsonl.gz``)."""
    p = str(path)
    report = report if report is not None else ReadReport()
    report.files += 1
    start = report.records
    for lineno, obj in iter_json_objects(p, report):
        if lineno == 1 and HEADER_KEY in obj:
            if obj[HEADER_KEY] != FORMAT_VERSION:
                raise InputError(p, 1, HEADER_KEY, f"unsupported version {obj[HEADER_KEY]!r}")
            continue
        call = parse_call(obj, p, lineno)
        report.records += 1
        report.calls += 1
        yield lineno, call
    check_not_empty(p, report.records - start)


def read_header(path: str | Path) -> dict[str, Any]:
    """The metadata header of a canonical trace, or ``{}`` if it has none."""
    with open_text(str(path)) as fh:
        first = fh.readline().strip()
    try:
        obj = json.loads(first) if first else {}
    except json.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) and HEADER_KEY in obj else {}


def _bypass(call: Call, skipped: dict[str, tuple[tuple[str, ...], float, float]]) -> Call:
    """``call`` with its skipped parents replaced by theirs: it waits for their parents
    and their gaps too; a call left without parents becomes a root issued when its
    skipped root ancestor was, plus the gaps."""
    if not any(p in skipped for p in call.parents):
        return call
    parents: list[str] = []
    extra = 0.0
    root_t = 0.0
    for p in call.parents:
        if p in skipped:
            sp, gap, t = skipped[p]
            parents += sp
            extra = max(extra, gap)
            root_t = max(root_t, t)
        else:
            parents.append(p)
    kept = tuple(dict.fromkeys(parents))
    if kept:
        return replace(call, parents=kept, gap_s=call.gap_s + extra)
    return replace(call, parents=(), issue_time_s=root_t + extra + call.gap_s, gap_s=0.0)


def iter_canonical_checked(path: str | Path, report: ReadReport | None = None) -> Iterator[Call]:
    """Stream the calls of a canonical file or directory of files (sorted by name),
    checking that ids are unique and every parent appears on an earlier line.

    An LLM call with 0 input or 0 output tokens is skipped and counted in ``report``;
    its children wait for its parents instead (plus its gap)."""
    report = report if report is not None else ReadReport()
    seen: dict[str, str] = {}
    skipped: dict[str, tuple[tuple[str, ...], float, float]] = {}
    for f in trace_files(str(path)):
        for lineno, call in iter_canonical(f, report):
            if call.call_id in seen:
                raise InputError(
                    f,
                    lineno,
                    "call_id",
                    f"duplicate id {call.call_id!r} (first at {seen[call.call_id]})",
                )
            for parent in call.parents:
                if parent not in seen:
                    raise InputError(
                        f,
                        lineno,
                        "parents",
                        f"parent {parent!r} does not appear on an earlier line",
                    )
            seen[call.call_id] = f"{f}:{lineno}"
            call = _bypass(call, skipped)
            if call.kind == "llm" and (call.input_tokens == 0 or call.output_tokens == 0):
                skipped[call.call_id] = (
                    call.parents,
                    call.gap_s if call.parents else 0.0,
                    call.issue_time_s,
                )
                report.calls -= 1
                report.skip(SKIP_ZERO)
                continue
            yield call


def read_canonical(path: str | Path) -> Workload:
    """Load a canonical trace (a file or a directory of files)."""
    p = str(path)
    report = ReadReport()
    calls = list(iter_canonical_checked(p, report))
    header = read_header(trace_files(p)[0])
    try:
        ordered = topo_order(calls)
    except ValueError as e:  # pragma: no cover - parents-before-children is checked above
        raise InputError(p, None, "parents", str(e)) from None
    meta: dict[str, Any] = {
        **header,
        "format": "agentsim",
        "read": report.as_dict(),
        "skipped": dict(report.skipped),  # reason -> records not simulated
    }
    return Workload(calls=ordered, name=Path(p).name.split(".")[0], source=p, meta=meta)


def call_to_dict(c: Call) -> dict[str, Any]:
    """The canonical JSON object of a call (defaults omitted where the schema allows)."""
    d: dict[str, Any] = {"session_id": c.session_id, "call_id": c.call_id}
    if c.parents:
        d["parents"] = list(c.parents)
    d["type"] = c.kind
    d["issue_time_s"] = c.issue_time_s
    if c.gap_s:
        d["gap_s"] = c.gap_s
    if c.kind == "llm":
        if c.model is not None:
            d["model"] = c.model
        d["input_tokens"] = c.input_tokens
        d["output_tokens"] = c.output_tokens
        if c.prefix_hashes:
            d["prefix_hashes"] = list(c.prefix_hashes)
        if c.prefix_hashes or c.block_size != DEFAULT_BLOCK_SIZE:
            d["block_size"] = c.block_size
    else:
        d["tool_duration_s"] = c.tool_duration_s
    return d


def write_canonical(
    calls: Iterable[Call], out: str | Path | IO[str], header: dict[str, Any] | None = None
) -> int:
    """Write calls as canonical JSONL (with a header line), streaming; a path ending in
    ``.gz`` is gzip-compressed.  Returns the number of calls written.  A path is
    written atomically (:func:`sim.common.io.atomic_write_stream`: a failure or Ctrl-C leaves
    it as it was, never a header-only or partial file)."""
    if not hasattr(out, "write"):
        from sim.common.io import atomic_write_stream

        return atomic_write_stream(str(out), lambda f: write_canonical(calls, f, header))
    fh: IO[str] = out  # type: ignore[assignment]
    n = 0
    fh.write(json.dumps({HEADER_KEY: FORMAT_VERSION, **(header or {})}, sort_keys=True) + "\n")
    for c in calls:
        fh.write(json.dumps(call_to_dict(c), separators=(",", ":")) + "\n")
        n += 1
    return n
