"""Reader for the Azure LLM inference traces 2023 (Splitwise): CSV
``TIMESTAMP, ContextTokens, GeneratedTokens``.

``TIMESTAMP`` is a wall-clock string ``YYYY-MM-DD HH:MM:SS.fffffff`` (7 fractional
digits, no time zone); it is read exactly (in 100 ns ticks) and becomes seconds since
the first row.  Rows must be in time order.  There are no sessions: every row is its
own root call (open-loop arrivals), ids ``az-<line>``.  No prefix information.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sim.common.errors import InputError
from sim.workload.calls import Call
from sim.workload.traces.io import ReadReport, open_text
from sim.workload.traces.tabular import (
    SKIP_ZERO,
    check_not_empty,
    check_row_width,
    check_time,
    check_width,
    csv_rows,
    header_index,
    row_int,
)

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_TICKS = 10_000_000  # 100 ns ticks per second


def parse_timestamp(path: str, line: int, s: str, cache: dict[str, int]) -> int:
    """``YYYY-MM-DD HH:MM:SS[.f{1,7}]`` as integer 100 ns ticks since the Unix epoch
    (the string is read as UTC; only differences are used)."""
    whole, _, frac = s.partition(".")
    secs = cache.get(whole)
    if secs is None:
        try:
            secs = int(datetime.fromisoformat(whole + "+00:00").timestamp())
        except ValueError:
            raise InputError(
                path, line, "TIMESTAMP", f"expected 'YYYY-MM-DD HH:MM:SS.fffffff', got {s!r}"
            ) from None
        cache[whole] = secs
    if frac and (not frac.isdigit() or len(frac) > 7):
        raise InputError(path, line, "TIMESTAMP", f"bad fractional seconds in {s!r}")
    return secs * _TICKS + (int(frac.ljust(7, "0")) if frac else 0)


def iter_azure(path: str, report: ReadReport | None = None) -> Iterator[Call]:
    """Stream the rows of an Azure trace as root calls; rows with 0 context or 0
    generated tokens (requests that failed or were cancelled upstream) are skipped and
    counted in ``report``."""
    report = report if report is not None else ReadReport()
    report.files += 1
    cache: dict[str, int] = {}
    with open_text(path) as fh:
        rows = csv_rows(path, fh)
        header = next(rows, (1, None))[1]
        idx = header_index(path, header, COLUMNS)
        assert header is not None
        report.lines += 1
        start = report.records
        its, iin, iout = idx
        width = len(header)  # holds every column of idx: a row this wide has them all
        t0 = last = None
        for line, row in rows:
            report.lines += 1
            if len(row) != width:
                check_width(path, line, row, COLUMNS, idx)
                check_row_width(path, line, row, header)
            stamp = row[its].strip()
            whole, _, frac = stamp.partition(".")
            secs = cache.get(whole)
            if secs is not None and len(frac) == 7 and frac.isdigit():
                ticks = secs * _TICKS + int(frac)  # a second seen before, 7 digits
            else:
                ticks = parse_timestamp(path, line, stamp, cache)
            if last is not None and ticks < last:
                raise InputError(
                    path, line, "TIMESTAMP", f"not monotonic: {row[its]} is before the previous row"
                )
            if t0 is None:
                t0 = ticks
            last = ticks
            t = check_time(path, line, "TIMESTAMP", (ticks - t0) / _TICKS)
            inp = row_int(path, line, row[iin], "ContextTokens", 0)
            out = row_int(path, line, row[iout], "GeneratedTokens", 0)
            report.records += 1
            if inp == 0 or out == 0:
                report.skip(SKIP_ZERO)
                continue
            report.calls += 1
            cid = f"az-{line}"
            yield Call(
                call_id=cid,
                session_id=cid,
                issue_time_s=t,
                input_tokens=inp,
                output_tokens=out,
            )
        check_not_empty(path, report.records - start)
