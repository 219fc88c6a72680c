"""Small file helpers shared by the trace readers: transparent gzip, text mode, input
listing for per-session directories, and the read report that keeps conversions honest.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sim.errors import InputError

#: File name endings a directory of per-session trace files may use.
TRACE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".csv.gz")


def open_text(path: str) -> IO[str]:
    """Open ``path`` for reading text, decompressing ``.gz`` transparently."""
    try:
        if path.endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8")
        return open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, None, None, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, None, None, "is a directory, expected a file") from None


def open_write(path: str) -> IO[str]:
    """Open ``path`` for writing text; ``.gz`` paths are gzip-compressed with a fixed
    mtime so that the same content always gives the same bytes."""
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.GzipFile(path, mode="wb", mtime=0), encoding="utf-8")
    return open(path, "w", encoding="utf-8")


def trace_files(path: str) -> list[str]:
    """The trace files behind ``path``: the file itself, or a directory's trace files
    (sorted by name; hidden files and READMEs are not traces)."""
    p = Path(path)
    if not p.exists():
        raise InputError(path, None, None, "file not found")
    if p.is_file():
        return [path]
    files = sorted(
        str(f)
        for f in p.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.name.endswith(TRACE_SUFFIXES)
    )
    if not files:
        raise InputError(
            path, None, None, "directory holds no trace files (*.jsonl[.gz], *.csv[.gz])"
        )
    return files


def iter_lines(path: str) -> Iterator[tuple[int, str]]:
    """Stream ``(line_number, stripped_line)`` for the non-blank lines of a text file."""
    with open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            s = raw.strip()
            if s:
                yield lineno, s


def iter_json_objects(path: str, report: ReadReport) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream ``(line_number, object)`` from a JSON Lines file, one object per line,
    counting lines in ``report``; anything else raises :class:`InputError`."""
    for lineno, s in iter_lines(path):
        report.lines += 1
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            raise InputError(
                path, lineno, None, f"invalid JSON ({e.msg} at column {e.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise InputError(path, lineno, None, "expected a JSON object per line")
        yield lineno, obj


@dataclass
class ReadReport:
    """What a reader consumed and produced, so nothing is dropped silently.

    Attributes:
        files: input files read.
        lines: non-blank input lines (or CSV rows, header included) read.
        records: data records among them (lines minus headers).
        calls: calls produced (may exceed ``records`` where tool calls are derived).
        skipped: records deliberately not turned into calls, by reason (always reported).
        notes: counts of records that were adjusted (e.g. empty prompts), by reason.
    """

    files: int = 0
    lines: int = 0
    records: int = 0
    calls: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def note(self, reason: str, n: int = 1) -> None:
        self.notes[reason] = int(self.notes.get(reason, 0)) + n

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "lines": self.lines,
            "records": self.records,
            "calls": self.calls,
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),
        }
