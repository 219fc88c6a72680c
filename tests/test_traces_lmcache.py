"""LMCache agent sessions: ordering, tokens, prefix sharing, parents, tool gaps."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest

from sim.workload.traces import TraceOptions, load_trace
from sim.workload.traces.estimate import ServiceEstimate
from sim.workload.traces.hashing import chain_hashes
from sim.workload.traces.stats import meta_section, trace_stats
from sim.workload.traces.tokenizer import encode

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
REPO = Path(__file__).parents[1]


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def test_sequential_agent_chain_with_tool_calls(tmp_path: Path) -> None:
    base = "You are an agent. Task: fix the bug in parser.py. " * 20
    out1 = "THOUGHT: look\n```bash\ncat parser.py\n```"
    t1 = base + out1 + " OBSERVATION: def parse(): pass " * 10
    rows = [  # file order is not time order
        {"timestamp": 3_000_000, "input": t1, "output": "fixed", "session_id": "s"},
        {"timestamp": 1_000_000, "input": base, "output": out1, "session_id": "s"},
    ]
    w = load_trace(_write(tmp_path / "s.jsonl.gz", rows), "lmcache")
    llm0, tool, llm1 = w.calls
    assert (llm0.call_id, tool.call_id, llm1.call_id) == ("s-0", "s-1-tool", "s-1")
    assert llm0.input_tokens == len(encode(base)) and llm0.output_tokens == len(encode(out1))
    assert llm0.prefix_hashes == chain_hashes(encode(base))
    end0 = ServiceEstimate().seconds(llm0.output_tokens)  # issued at t=0
    assert tool.kind == "tool" and tool.parents == ("s-0",)
    assert tool.issue_time_s == pytest.approx(end0)
    assert tool.tool_duration_s == pytest.approx(2.0 - end0)
    assert llm1.parents == ("s-1-tool",) and llm1.gap_s == 0.0 and llm1.issue_time_s == 2.0
    # the later turn re-reads the earlier prompt: it shares all but the boundary block
    shared = sum(1 for a, b in zip(llm0.prefix_hashes, llm1.prefix_hashes, strict=False) if a == b)
    assert shared >= len(llm0.prefix_hashes) - 1 > 10


def test_concurrent_calls_branch_and_gaps_are_never_negative(tmp_path: Path) -> None:
    est = ServiceEstimate(0.05, 0.006)
    rows = [
        {"timestamp": 0, "input": "plan", "output": "go", "session_id": "m"},
        {"timestamp": 1_000_000, "input": "web", "output": "a " * 500, "session_id": "m"},
        {
            "timestamp": 1_100_000,
            "input": "code",
            "output": "b",
            "session_id": "m",
        },  # overlaps call 1
        {"timestamp": 9_000_000, "input": "merge", "output": "c", "session_id": "m"},
    ]
    w = load_trace(_write(tmp_path / "m.jsonl.gz", rows), "lmcache", TraceOptions(est=est))
    by = {c.call_id: c for c in w.calls}
    assert by["m-1"].parents == ("m-0",) and by["m-2"].parents == ("m-0",)  # fan-out
    assert by["m-3"].parents == ("m-1",)  # the call that ended last before m-3 started
    assert all(c.gap_s >= 0 for c in w.calls)
    assert meta_section(w, "read")["notes"] == {}
    assert by["m-1"].gap_s == pytest.approx(1.0 - est.seconds(by["m-0"].output_tokens))


@pytest.mark.skipif(
    not (DATA / "lmcache-agent-trace").is_dir(),
    reason="../shared/data/lmcache-agent-trace not present",
)
@pytest.mark.parametrize("kind,sessions,records", [("miniswe", 20, 402), ("magagent", 25, 746)])
def test_all_real_sessions_convert_and_match_committed(
    kind: str, sessions: int, records: int
) -> None:
    t = time.perf_counter()
    w = load_trace(DATA / "lmcache-agent-trace" / kind)
    assert time.perf_counter() - t < 20
    assert w.num_sessions == sessions and meta_section(w, "read")["records"] == records == len(
        w.llm_calls
    )
    committed = load_trace(REPO / "traces" / "lmcache" / f"{kind}.jsonl.gz")
    assert committed.calls == w.calls
    s = trace_stats(w)
    assert s.prefix_reuse.session_token_hit_ratio > 0.8  # agents re-read their context
