"""Reader for BurstGPT traces: CSV ``Timestamp, Model, Request tokens, Response tokens,
Total tokens, Log Type``.

``Timestamp`` is seconds from the trace start (non-decreasing).  Every row is its own
root call (ids ``bg-<line>``); ``Model`` (e.g. ``ChatGPT``, ``GPT-4``) is kept as the
call's model.  Rows with 0 request or 0 response tokens are requests that failed
upstream; they are skipped and counted in the read report, never dropped silently.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator

from sim.errors import InputError
from sim.traces.io import ReadReport, open_text
from sim.traces.tabular import check_width, header_index, row_float, row_int
from sim.workload import Call

COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens")


def iter_burstgpt(path: str, report: ReadReport | None = None) -> Iterator[Call]:
    """Stream the rows of a BurstGPT trace as root calls."""
    report = report if report is not None else ReadReport()
    report.files += 1
    with open_text(path) as fh:
        reader = csv.reader(fh)
        idx = header_index(path, next(reader, None), COLUMNS)
        report.lines += 1
        its, imodel, iin, iout = idx
        last = -1.0
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            report.lines += 1
            check_width(path, line, row, COLUMNS, idx)
            ts = row_float(path, line, row[its], "Timestamp")
            if ts < last:
                raise InputError(path, line, "Timestamp", f"not monotonic: {ts} s after {last} s")
            last = ts
            inp = row_int(path, line, row[iin], "Request tokens", 0)
            out = row_int(path, line, row[iout], "Response tokens", 0)
            report.records += 1
            if inp == 0 or out == 0:
                report.skip("failed request (0 request or response tokens)")
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
