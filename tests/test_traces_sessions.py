"""Session reconstruction from prefix chains, on hand-built traces with known sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim.workload.calls import Call
from sim.workload.traces import TraceOptions, load_trace
from sim.workload.traces.estimate import ServiceEstimate
from sim.workload.traces.sessions import reconstruct_sessions
from sim.workload.traces.stats import meta_section

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
SYS = 0  # a system-prompt block every conversation starts with


def _req(i: int, t: float, blocks: list[int], extra: int = 100, out: int = 50) -> Call:
    return Call(
        call_id=f"r{i}",
        session_id=f"r{i}",
        issue_time_s=t,
        input_tokens=len(blocks) * 512 + extra,
        output_tokens=out,
        prefix_hashes=tuple(blocks),
        block_size=512,
    )


def _known_trace() -> tuple[list[Call], dict[str, str], dict[str, tuple[str, ...]]]:
    """Five conversations behind one shared system block, interleaved in time.

    Returns calls, the true session of each call, the true parents of each call.
    """
    # Conversation k uses private block ids 100*k + j.
    specs = [
        # (id, time, blocks, true session, true parent)
        (0, 0.0, [SYS, 101], "A", None),
        (1, 1.0, [SYS, 201, 202], "B", None),
        (2, 2.0, [SYS], "C", None),  # only the shared block: cannot be extended
        (3, 10.0, [SYS, 101, 102, 103], "A", "r0"),
        (4, 11.0, [SYS, 201, 202, 203], "B", "r1"),
        (5, 12.0, [SYS, 301], "D", None),
        (6, 20.0, [SYS, 101, 102, 103, 104], "A", "r3"),
        (7, 21.0, [SYS, 101, 102, 103, 105], "A", "r3"),  # fan-out: a retry of turn 2
        (8, 30.0, [SYS, 201, 202, 203, 204, 205], "B", "r4"),
        (9, 31.0, [SYS, 401], "E", None),
        (10, 32.0, [SYS, 301, 302], "D", "r5"),
        (11, 40.0, [SYS, 101, 102, 103, 104, 106], "A", "r6"),  # longest match wins over r3
    ]
    # More unrelated first turns so the shared block branches 16+ ways.
    specs += [(100 + k, 50.0 + k, [SYS, 1000 + k], f"X{k}", None) for k in range(14)]
    calls = [_req(i, t, b) for i, t, b, _, _ in specs]
    truth = {f"r{i}": s for i, _, _, s, _ in specs}
    parents: dict[str, tuple[str, ...]] = {f"r{i}": ((p,) if p else ()) for i, _, _, _, p in specs}
    return calls, truth, parents


def test_reconstruction_recovers_known_sessions_exactly() -> None:
    calls, truth, parents = _known_trace()
    rep = reconstruct_sessions(calls, ServiceEstimate(0.05, 0.006))
    got_parents = {c.call_id: c.parents for c in calls}
    assert got_parents == parents
    # The partition into sessions is the true one (names differ).
    got: dict[str, set[str]] = {}
    want: dict[str, set[str]] = {}
    for c in calls:
        got.setdefault(c.session_id, set()).add(c.call_id)
        want.setdefault(truth[c.call_id], set()).add(c.call_id)
    assert sorted(map(sorted, got.values())) == sorted(map(sorted, want.values()))
    assert rep.sessions == len(want) and rep.linked == 7 and rep.shared_nodes == 1
    assert rep.multi_turn_sessions == 3 and rep.turns_per_session["max"] == 5
    # gap = arrival - (parent arrival + 0.05 + 0.006 * 50)
    r3 = next(c for c in calls if c.call_id == "r3")
    assert r3.gap_s == pytest.approx(10.0 - 0.35)


def test_match_must_be_strictly_earlier_and_gap_never_negative() -> None:
    calls = [_req(0, 5.0, [7, 8]), _req(1, 5.0, [7, 8, 9]), _req(2, 5.1, [7, 8, 9, 10], out=1)]
    rep = reconstruct_sessions(calls, ServiceEstimate(1.0, 0.0))
    assert calls[1].parents == ()  # same arrival time: not a later turn
    assert calls[2].parents == ("r1",)  # the longest match
    assert calls[2].gap_s == 0.0 and rep.clamped_gaps == 1


def test_shared_fanout_threshold_controls_shared_prompts() -> None:
    calls = [_req(0, 0.0, [SYS]), _req(1, 1.0, [SYS, 5]), _req(2, 2.0, [SYS, 6])]
    reconstruct_sessions(calls, shared_fanout=16)
    assert calls[1].parents == ("r0",) and calls[2].parents == ("r0",)
    calls = [_req(0, 0.0, [SYS]), _req(1, 1.0, [SYS, 5]), _req(2, 2.0, [SYS, 6])]
    reconstruct_sessions(calls, shared_fanout=2)
    assert all(not c.parents for c in calls)


def test_mooncake_loader_reconstructs_by_default(tmp_path: Path) -> None:
    calls, truth, _ = _known_trace()
    src = tmp_path / "mc.jsonl"
    with src.open("w") as fh:
        for c in calls:
            ids = list(c.prefix_hashes) + [99_999 + len(c.call_id)]  # a partial last block
            row = {
                "timestamp": int(c.issue_time_s * 1000),
                "input_length": c.input_tokens,
                "output_length": 50,
                "hash_ids": ids,
            }
            fh.write(json.dumps(row) + "\n")
    w = load_trace(src, "mooncake")
    assert w.num_sessions == len(set(truth.values()))
    assert meta_section(w, "reconstruction")["linked"] == 7
    assert load_trace(src, "mooncake", TraceOptions(sessions=False)).num_sessions == len(calls)


@pytest.mark.skipif(not (DATA / "mooncake").is_dir(), reason="../shared/data/mooncake not present")
def test_stats_on_real_mooncake_prints_sessions_and_reuse() -> None:
    path = DATA / "mooncake" / "conversation_trace.jsonl"
    out = subprocess.run(
        [sys.executable, "-m", "sim.cli", "trace", "stats", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "sessions reconstructed from prefix chains:" in out
    assert "prefix reuse (infinite cache):" in out
    w = load_trace(path)
    rec = meta_section(w, "reconstruction")
    assert rec["requests"] == 12031 and 1 < rec["sessions"] < 12031
    assert w.num_sessions == rec["sessions"]
    # every linked call extends its parent's full blocks
    by = {c.call_id: c for c in w.calls}
    for c in w.calls:
        if c.parents:
            p = by[c.parents[0]]
            assert c.prefix_hashes[: len(p.prefix_hashes)] == p.prefix_hashes
            assert p.issue_time_s < c.issue_time_s and c.gap_s >= 0
