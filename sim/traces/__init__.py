"""Trace readers: every supported format loads into a :class:`~sim.workload.Workload`.

``load_trace(path, fmt=None)`` is the single entry point used by the CLI and the API.
``FORMATS`` maps a format name to its loader; ``detect_format`` guesses the format of
a file from its name and first line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sim.errors import InputError
from sim.traces.canonical import HEADER_KEY, read_canonical
from sim.traces.io import open_text
from sim.workload import Workload

Loader = Callable[[str], Workload]

FORMATS: dict[str, Loader] = {
    "agentsim": read_canonical,
}


def detect_format(path: str) -> str:
    """Guess a trace's format from its first non-empty line."""
    with open_text(path) as fh:
        first = ""
        for raw in fh:
            first = raw.strip()
            if first:
                break
    if not first:
        raise InputError(path, 1, None, "empty trace file")
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and (HEADER_KEY in obj or "call_id" in obj):
        return "agentsim"
    raise InputError(
        path, 1, None, f"cannot detect the trace format; pass --trace-format (one of {', '.join(sorted(FORMATS))})"
    )


def load_trace(path: str | Path, fmt: str | None = None) -> Workload:
    """Load a trace in any supported format (auto-detected when ``fmt`` is None)."""
    p = str(path)
    if not Path(p).exists():
        raise InputError(p, None, None, "file not found")
    name = fmt or detect_format(p)
    if name not in FORMATS:
        raise InputError(p, None, "--trace-format", f"unknown format {name!r}; known: {', '.join(sorted(FORMATS))}")
    return FORMATS[name](p)
