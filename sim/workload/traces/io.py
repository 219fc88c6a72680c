"""Small file helpers shared by the trace readers: transparent gzip, text mode, input
listing for per-session directories, and the read report that keeps conversions honest.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sim.common.errors import InputError

#: File name endings a directory of per-session trace files may use.
TRACE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".csv.gz")


def open_text(path: str) -> IO[str]:
    """Open ``path`` for reading UTF-8 text, decompressing ``.gz`` transparently.

    Reading it raises :class:`InputError` naming the line for bytes that are not
    UTF-8 and for a corrupt or truncated gzip stream (never ``UnicodeDecodeError``).
    """
    try:
        if path.endswith(".gz"):
            fh: IO[str] = gzip.open(path, "rt", encoding="utf-8")  # noqa: SIM115
        else:
            fh = open(path, encoding="utf-8")  # noqa: SIM115
    except FileNotFoundError:
        raise InputError(path, None, None, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, None, None, "is a directory, expected a file") from None
    except OSError as e:
        raise InputError(path, None, None, f"cannot read: {e.strerror or e}") from None
    return _CheckedText(fh, path)  # type: ignore[return-value]


def _raw_bytes(path: str) -> Iterator[bytes]:
    """The file's (decompressed) bytes in chunks, as far as they can be read."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk
    except (OSError, EOFError, zlib.error):
        return


def _not_utf8(path: str) -> InputError:
    """The error for a file that is not UTF-8, naming the line of the first bad byte."""
    dec = codecs.getincrementaldecoder("utf-8")()
    line, offset = 1, 0
    for chunk in _raw_bytes(path):
        try:
            dec.decode(chunk)
        except UnicodeDecodeError as e:
            # e.start is relative to the decoder's buffered bytes plus this chunk
            pending = len(e.object) - len(chunk)
            bad = e.start - pending
            line += chunk[: max(0, bad)].count(b"\n")
            col = bad - (chunk.rfind(b"\n", 0, max(0, bad)) + 1)
            return InputError(
                path,
                line,
                "encoding",
                f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at byte {offset + bad}, "
                f"column {col + 1}: {e.reason})",
            )
        line += chunk.count(b"\n")
        offset += len(chunk)
    return InputError(path, line, "encoding", "not UTF-8 text (truncated multi-byte character)")


class _CheckedText:
    """A text stream whose decoding and decompression errors raise :class:`InputError`
    with the line they occur on (delegates everything else to the wrapped stream)."""

    def __init__(self, fh: IO[str], path: str) -> None:
        self._fh = fh
        self._path = path
        self._lines = 0

    def _fail(self, e: BaseException) -> InputError:
        if isinstance(e, UnicodeDecodeError):
            return _not_utf8(self._path)
        return InputError(
            self._path, self._lines + 1, None, f"corrupt or truncated gzip file ({e})"
        )

    def __iter__(self) -> _CheckedText:
        return self

    def __next__(self) -> str:
        try:
            s = next(self._fh)
        except (UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise self._fail(e) from None
        self._lines += 1
        return s

    def readline(self, size: int = -1) -> str:
        try:
            s = self._fh.readline(size)
        except (UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise self._fail(e) from None
        self._lines += 1
        return s

    def read(self, size: int = -1) -> str:
        try:
            return self._fh.read(size)
        except (UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise self._fail(e) from None

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> _CheckedText:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


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
