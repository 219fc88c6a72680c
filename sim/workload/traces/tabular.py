"""Helpers for trace readers: header lookup, CSV rows, validated cells and the bounds
every reader applies to token counts and times."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from typing import IO

from sim.common.errors import InputError

#: Most tokens one call may have in its prompt or output (no model serves 100M tokens;
#: a larger count is a corrupt record, and would overflow the simulator's arithmetic).
MAX_TOKENS = 100_000_000
#: Longest time (s) a trace may span, or a gap / tool call may last (about 31 years).
MAX_TIME_S = 1e9
#: Skip reason of a record with 0 prompt or 0 output tokens (a request that failed or
#: was cancelled upstream: real logs hold many); such records are counted, not simulated.
SKIP_ZERO = "0 input or 0 output tokens (failed or cancelled request)"
#: Chain hashes and prefix-block ids must fit a signed 64-bit integer.
HASH_RANGE = (-(2**63), 2**63)


def check_tokens(path: str, line: int, field: str, v: int) -> int:
    """``v`` if it is at most :data:`MAX_TOKENS`, else raise naming the field."""
    if v > MAX_TOKENS:
        raise InputError(
            path,
            line,
            field,
            f"{v:.3g} tokens is more than any model serves (at most {MAX_TOKENS:,})",
        )
    return v


def check_time(path: str, line: int, field: str, t: float) -> float:
    """``t`` (seconds) if it is at most :data:`MAX_TIME_S`, else raise naming the field."""
    if t > MAX_TIME_S:
        raise InputError(
            path, line, field, f"{t:.6g} s is beyond any trace (at most {MAX_TIME_S:g} s)"
        )
    return t


def csv_rows(path: str, fh: IO[str]) -> Iterator[tuple[int, list[str]]]:
    """``(line, row)`` of every non-empty CSV row (the header first); a malformed row
    raises :class:`InputError` naming its line."""
    reader = csv.reader(fh)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise InputError(path, reader.line_num, None, f"malformed CSV row ({e})") from None
        if row:
            yield reader.line_num, row


def check_row_width(path: str, line: int, row: Sequence[str], header: Sequence[str]) -> None:
    """Raise unless ``row`` has as many cells as the header (a short row is a truncated
    file or a lost separator; a long one an unquoted comma)."""
    if len(row) != len(header):
        raise InputError(
            path,
            line,
            None,
            f"row has {len(row)} columns, the header has {len(header)} (truncated or misquoted row)",
        )


def check_not_empty(path: str, records: int) -> None:
    """Raise for a trace file that holds no data records at all."""
    if records == 0:
        raise InputError(path, 1, None, "empty trace file (no records)")


def header_index(path: str, header: Sequence[str] | None, columns: Sequence[str]) -> list[int]:
    """Positions of ``columns`` in the CSV ``header`` row (line 1), whitespace-tolerant."""
    if header is None:
        raise InputError(path, 1, None, "empty trace file")
    names = [h.strip() for h in header]
    out = []
    for col in columns:
        if col not in names:
            raise InputError(
                path, 1, col, f"column missing from the header (have: {', '.join(names)})"
            )
        out.append(names.index(col))
    return out


def check_width(
    path: str, line: int, row: Sequence[str], columns: Sequence[str], idx: Sequence[int]
) -> None:
    """Raise naming the first of ``columns`` that ``row`` is too short to hold."""
    for col, i in zip(columns, idx, strict=True):
        if i >= len(row):
            raise InputError(path, line, col, "missing value (row has too few columns)")


def row_int(path: str, line: int, cell: str, field: str, lo: int) -> int:
    """A cell holding an integer >= ``lo`` (``"12"`` or ``"12.0"``)."""
    if cell.isdigit() and cell.isascii():  # plain digits, the usual cell: no float
        v = int(cell)
        if lo <= v <= MAX_TOKENS:
            return v
    s = cell.strip()
    try:
        f = float(s)
    except ValueError:
        f = math.nan
    if not f.is_integer():
        raise InputError(path, line, field, f"expected an integer, got {s!r}")
    if f > MAX_TOKENS:
        return check_tokens(path, line, field, int(f))
    v = int(f)
    if v < lo:
        raise InputError(path, line, field, f"expected an integer >= {lo}, got {v}")
    return v


def row_float(path: str, line: int, cell: str, field: str) -> float:
    """A cell holding a finite number >= 0."""
    s = cell.strip()
    try:
        v = float(s)
    except ValueError:
        raise InputError(path, line, field, f"expected a number, got {s!r}") from None
    if not v >= 0 or v == float("inf"):
        raise InputError(path, line, field, f"expected a finite number >= 0, got {s!r}")
    return check_time(path, line, field, v)
