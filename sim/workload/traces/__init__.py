"""Trace readers: every supported format loads into a :class:`~sim.workload.calls.Workload`.

``load_trace(path, fmt=None)`` is the single entry point used by the CLI and the API.
``FORMATS`` maps a format name to its loader; ``detect_format`` guesses the format of
a file (or a directory of per-session files) from its name and first record.
``stream_trace`` yields the calls of any format without building a workload, for
conversions that stream from reader to writer.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.common.errors import InputError
from sim.workload.calls import AnyWorkload, Call, Workload, topo_order
from sim.workload.traces.azure import COLUMNS as AZURE_COLUMNS
from sim.workload.traces.azure import iter_azure
from sim.workload.traces.burstgpt import COLUMNS as BURSTGPT_COLUMNS
from sim.workload.traces.burstgpt import iter_burstgpt
from sim.workload.traces.canonical import HEADER_KEY, iter_canonical_checked, read_canonical
from sim.workload.traces.estimate import ServiceEstimate
from sim.workload.traces.generic import ColumnMap, guess_map, iter_generic
from sim.workload.traces.io import ReadReport, open_text, trace_files
from sim.workload.traces.lmcache import iter_lmcache
from sim.workload.traces.mooncake import iter_mooncake
from sim.workload.traces.sessions import SHARED_FANOUT, reconstruct_sessions


@dataclass(frozen=True)
class TraceOptions:
    """Reader options; each applies to the formats named.

    Attributes:
        est: service-time estimate for gaps (lmcache, mooncake sessions, csv sessions).
        sessions: reconstruct sessions from prefix chains (mooncake).
        shared_fanout: branching from which a prefix node is a shared prompt (mooncake).
        columns: column mapping (csv); ``None`` recognises common column names.
    """

    est: ServiceEstimate = field(default_factory=ServiceEstimate)
    sessions: bool = True
    shared_fanout: int = SHARED_FANOUT
    columns: ColumnMap | None = None


@dataclass
class TraceStream:
    """Calls of a trace as they are read, plus what the reader reports.

    ``report`` and ``meta`` are complete once ``calls`` has been consumed.
    """

    calls: Iterable[Call]
    report: ReadReport
    meta: dict[str, Any]


def stream_trace(path: str, fmt: str, opts: TraceOptions | None = None) -> TraceStream:
    """Open a trace of format ``fmt`` as a stream of calls (parents before children).

    Streams for agentsim, azure, burstgpt and csv; mooncake with session
    reconstruction reads the whole file first (the prefix tree needs every request);
    lmcache holds one session's text at a time.
    """
    opts = opts or TraceOptions()
    report = ReadReport()
    meta: dict[str, Any] = {"format": fmt}
    calls: Iterable[Call]
    if fmt == "agentsim":
        calls = iter_canonical_checked(path, report)
    elif fmt == "lmcache":
        calls = iter_lmcache(path, report, opts.est)
        meta["service_estimate"] = opts.est.as_dict()
    elif fmt == "mooncake":
        calls = iter_mooncake(_single(path), report)
        if opts.sessions:
            listed = list(calls)
            rec = reconstruct_sessions(listed, opts.est, opts.shared_fanout, session_prefix="mc-s")
            meta["reconstruction"] = rec.as_dict()
            calls = listed
    elif fmt == "azure":
        calls = iter_azure(_single(path), report)
    elif fmt == "burstgpt":
        calls = iter_burstgpt(_single(path), report)
    elif fmt == "synth":
        from sim.workload.traces.synth import generate, load_synth_config

        calls = generate(load_synth_config(path))
    elif fmt == "csv":
        calls = iter_generic(_single(path), opts.columns, report, opts.est)
        if opts.columns is not None and opts.columns.session is not None:
            meta["service_estimate"] = opts.est.as_dict()
    else:
        raise InputError(
            path, None, "--trace-format", f"unknown format {fmt!r}; known: {', '.join(FORMATS)}"
        )
    return TraceStream(calls=calls, report=report, meta=meta)


def _single(path: str) -> str:
    if Path(path).is_dir():
        raise InputError(path, None, None, "is a directory; this format reads one file")
    return path


def _load_synth(path: str) -> Workload:
    """Generate a synthetic workload from its TOML config, in memory (no file written)."""
    from sim.workload.traces.synth import generate, load_synth_config

    cfg = load_synth_config(path)
    meta: dict[str, Any] = {"format": "synth", "seed": cfg.seed, "sessions": cfg.sessions}
    return Workload(calls=list(generate(cfg)), name=Path(path).stem, source=path, meta=meta)


def open_trace(path: str, fmt: str | None = None) -> AnyWorkload:
    """What a simulation replays from ``path``: like :func:`load_trace`, except that a
    synthetic workload (format ``synth``) is generated session by session while the
    simulation runs (:class:`~sim.workload.calls.LazyWorkload`), so its length does
    not bound memory."""
    if not Path(path).is_file() or (fmt or detect_format(path)) != "synth":
        return load_trace(path, fmt)
    from sim.workload.traces.synth import lazy_workload, load_synth_config

    cfg = load_synth_config(path)
    meta: dict[str, Any] = {"format": "synth", "seed": cfg.seed, "sessions": cfg.sessions}
    return lazy_workload(cfg, Path(path).stem, path, meta)


def _loader(fmt: str) -> Callable[..., Workload]:
    def load(path: str, opts: TraceOptions | None = None) -> Workload:
        if fmt == "agentsim":
            return read_canonical(path)
        if fmt == "synth":
            return _load_synth(path)
        st = stream_trace(path, fmt, opts)
        calls = list(st.calls)
        if fmt == "lmcache":
            calls = topo_order(calls)
        st.meta["read"] = st.report.as_dict()
        st.meta["skipped"] = dict(st.report.skipped)  # reason -> records not simulated
        return Workload(calls=calls, name=Path(path).name.split(".")[0], source=path, meta=st.meta)

    load.__doc__ = f"Load a {fmt} trace into a Workload."
    return load


#: Format name -> loader ``(path, opts=None) -> Workload``.
FORMATS: dict[str, Callable[..., Workload]] = {
    name: _loader(name)
    for name in ("agentsim", "mooncake", "azure", "burstgpt", "lmcache", "csv", "synth")
}


def _first_record(path: str) -> str:
    with open_text(path) as fh:
        for raw in fh:
            s = raw.strip()
            if s:
                return s
    raise InputError(path, 1, None, "empty trace file")


def detect_format(path: str) -> str:
    """Guess a trace's format from its first record (a directory: from its first file).

    A ``.toml`` file is a synthetic workload config, generated on load (``synth``).
    """
    if path.endswith(".toml"):
        return "synth"
    first_file = trace_files(path)[0]
    first = _first_record(first_file)
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        if HEADER_KEY in obj or "call_id" in obj:
            return "agentsim"
        if "hash_ids" in obj and "input_length" in obj:
            return "mooncake"
        if (
            isinstance(obj.get("input"), str)
            and isinstance(obj.get("output"), str)
            and "timestamp" in obj
        ):
            return "lmcache"
        guess_map(first_file, list(obj))
        return "csv"
    header = [h.strip() for h in next(csv.reader([first]), [])]
    if all(c in header for c in AZURE_COLUMNS):
        return "azure"
    if all(c in header for c in BURSTGPT_COLUMNS):
        return "burstgpt"
    try:
        guess_map(first_file, header)
    except InputError:
        raise InputError(
            path,
            1,
            None,
            f"cannot detect the trace format; pass --trace-format (one of {', '.join(FORMATS)})",
        ) from None
    return "csv"


def load_trace(
    path: str | Path, fmt: str | None = None, opts: TraceOptions | None = None
) -> Workload:
    """Load a trace in any supported format (auto-detected when ``fmt`` is None)."""
    p = str(path)
    if not Path(p).exists():
        raise InputError(p, None, None, "file not found")
    try:
        name = fmt or detect_format(p)
        if name not in FORMATS:
            raise InputError(
                p, None, "--trace-format", f"unknown format {name!r}; known: {', '.join(FORMATS)}"
            )
        return FORMATS[name](p, opts)
    except UnicodeDecodeError as e:
        raise InputError(p, None, None, f"not UTF-8 text (byte {e.start}: {e.reason})") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InputError(p, None, None, f"corrupt or truncated gzip file: {e}") from None


__all__ = [
    "FORMATS",
    "ColumnMap",
    "ServiceEstimate",
    "TraceOptions",
    "TraceStream",
    "detect_format",
    "load_trace",
    "open_trace",
    "read_canonical",
    "stream_trace",
]
