"""Reader for BurstGPT traces: CSV ``Timestamp, Model, Request tokens, Response tokens,
Total tokens, Log Type``.

``Timestamp`` is seconds from the trace start (non-decreasing).  Every row is its own
root call (ids ``bg-<line>``); ``Model`` (e.g. ``ChatGPT``, ``GPT-4``) is kept as the
call's model.  Rows with 0 request or 0 response tokens are requests that failed
upstream; they are skipped and counted in the read report, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterator

from sim.common.errors import InputError
from sim.workload.calls import Call
from sim.workload.traces.io import ReadReport, open_text
from sim.workload.traces.tabular import (
    SKIP_ZERO,
    check_not_empty,
    check_row_width,
    check_width,
    csv_rows,
    header_index,
    row_float,
    row_int,
)

COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens")


def iter_burstgpt(path: str, report: ReadReport | None = None) -> Iterator[Call]:
    """Stream the rows of a BurstGPT trace as root calls."""
    report = report if report is not None else ReadReport()
    report.files += 1
    with open_text(path) as fh:
        rows = csv_rows(path, fh)
        header = next(rows, (1, None))[1]
        idx = header_index(path, header, COLUMNS)
        assert header is not None
        report.lines += 1
        start = report.records
        its, imodel, iin, iout = idx
        last = -1.0
        for line, row in rows:
            report.lines += 1
            check_width(path, line, row, COLUMNS, idx)
            check_row_width(path, line, row, header)
            ts = row_float(path, line, row[its], "Timestamp")
            if ts < last:
                raise InputError(path, line, "Timestamp", f"not monotonic: {ts} s after {last} s")
            last = ts
            inp = row_int(path, line, row[iin], "Request tokens", 0)
            out = row_int(path, line, row[iout], "Response tokens", 0)
            report.records += 1
            if inp == 0 or out == 0:
                report.skip(SKIP_ZERO)
                continue
            model = row[imodel].strip() or None
            report.calls += 1
            cid = f"bg-{line}"
            yield Call(
                call_id=cid,
                session_id=cid,
                issue_time_s=ts,
                model=model,
                input_tokens=inp,
                output_tokens=out,
            )
        check_not_empty(path, report.records - start)
