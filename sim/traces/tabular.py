"""Helpers for CSV trace readers: header lookup and validated integer cells."""

from __future__ import annotations

import math
from collections.abc import Sequence

from sim.errors import InputError


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
    s = cell.strip()
    try:
        f = float(s)
    except ValueError:
        f = math.nan
    if not f.is_integer():
        raise InputError(path, line, field, f"expected an integer, got {s!r}")
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
    return v
