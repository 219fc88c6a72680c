"""Reader for Mooncake traces (FAST'25 release): one JSON request per line.

Fields: ``timestamp`` (integer milliseconds from trace start, non-decreasing),
``input_length`` and ``output_length`` (tokens), ``hash_ids`` (prefix-block ids of 512
tokens, global across the file; ``len == ceil(input_length / 512)``).  Mooncake ids are
prefix-identity ids (an id always follows the same predecessor), so they serve directly
as chain hashes.  Only the ``input_length // 512`` full blocks are kept: a trailing
partial block cannot be shared by a paged KV cache.

Requests carry no session id.  By default sessions are reconstructed from the prefix
chains (:mod:`sim.workload.traces.sessions`); with ``sessions=False`` every request is its own
session (open loop).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sim.common.errors import InputError
from sim.workload.calls import Call
from sim.workload.traces.hashing import repeated_hash
from sim.workload.traces.io import ReadReport, iter_json_objects
from sim.workload.traces.tabular import SKIP_ZERO, check_not_empty, check_time, check_tokens

BLOCK_SIZE = 512


def _nonneg_int(path: str, line: int, obj: dict[str, Any], key: str, lo: int) -> int:
    v = obj.get(key)
    if v is None:
        raise InputError(path, line, key, "required field is missing")
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(path, line, key, f"expected an integer, got {json.dumps(v)}")
    if v < lo:
        raise InputError(path, line, key, f"expected an integer >= {lo}, got {v}")
    return v


def iter_mooncake(path: str, report: ReadReport | None = None) -> Iterator[Call]:
    """Stream every request as its own root call (``mc-<line>`` ids), in file order;
    requests with 0 input or 0 output tokens are skipped and counted in ``report``."""
    report = report if report is not None else ReadReport()
    report.files += 1
    start = report.records
    last_ms = -1
    for lineno, obj in iter_json_objects(path, report):
        ts = _nonneg_int(path, lineno, obj, "timestamp", 0)
        if ts < last_ms:
            raise InputError(
                path, lineno, "timestamp", f"not monotonic: {ts} ms after {last_ms} ms"
            )
        last_ms = ts
        check_time(path, lineno, "timestamp", ts / 1000.0)
        inp = check_tokens(
            path, lineno, "input_length", _nonneg_int(path, lineno, obj, "input_length", 0)
        )
        out = check_tokens(
            path, lineno, "output_length", _nonneg_int(path, lineno, obj, "output_length", 0)
        )
        ids = obj.get("hash_ids")
        if ids is None:
            raise InputError(path, lineno, "hash_ids", "required field is missing")
        if not isinstance(ids, list) or (
            ids and (not all(type(h) is int for h in ids) or min(ids) < 0 or max(ids) >= 2**63)
        ):
            raise InputError(path, lineno, "hash_ids", "expected a list of integers in [0, 2**63)")
        nfull = inp // BLOCK_SIZE
        if len(ids) < nfull:
            raise InputError(
                path,
                lineno,
                "hash_ids",
                f"{len(ids)} ids cannot cover {inp} tokens in {BLOCK_SIZE}-token blocks",
            )
        if len(set(ids)) != len(ids):
            raise InputError(path, lineno, "hash_ids", repeated_hash(ids))
        report.records += 1
        if inp == 0 or out == 0:
            report.skip(SKIP_ZERO)
            continue
        report.calls += 1
        cid = f"mc-{lineno}"
        yield Call(
            call_id=cid,
            session_id=cid,
            issue_time_s=ts / 1000.0,
            input_tokens=inp,
            output_tokens=out,
            prefix_hashes=tuple(ids[:nfull]),
            block_size=BLOCK_SIZE,
        )
    check_not_empty(path, report.records - start)
