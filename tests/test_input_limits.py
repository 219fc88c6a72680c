"""Real request logs are read whole: records with 0 prompt or 0 output tokens are
skipped and counted (never the whole file refused, never dropped silently)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.cli import main
from sim.traces import load_trace
from sim.traces.tabular import SKIP_ZERO

ZERO_CASES = [
    (
        "azure",
        "a.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.0,374,44\n2023-11-16 18:15:47.0,37,0\n"
        "2023-11-16 18:15:48.0,0,5\n2023-11-16 18:15:49.0,10,2\n",
    ),
    (
        "burstgpt",
        "b.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n6,ChatGPT,472,0,472,Conversation log\n"
        "7,GPT-4,0,230,230,API log\n8,GPT-4,10,2,12,API log\n",
    ),
    (
        "mooncake",
        "m.jsonl",
        '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}\n'
        '{"timestamp": 1, "input_length": 600, "output_length": 0, "hash_ids": [1, 2]}\n'
        '{"timestamp": 2, "input_length": 0, "output_length": 3, "hash_ids": []}\n'
        '{"timestamp": 3, "input_length": 10, "output_length": 2, "hash_ids": [9]}\n',
    ),
    (
        "csv",
        "u.csv",
        "timestamp,input_tokens,output_tokens\n0,10,2\n1,20,0\n2,0,4\n3,5,1\n",
    ),
    (
        "csv",
        "u.jsonl",
        '{"timestamp": 0, "prompt_tokens": 10, "completion_tokens": 2}\n'
        '{"timestamp": 1, "prompt_tokens": 10, "completion_tokens": 0}\n'
        '{"timestamp": 2, "prompt_tokens": 0, "completion_tokens": 2}\n'
        '{"timestamp": 3, "prompt_tokens": 7, "completion_tokens": 1}\n',
    ),
    (
        "agentsim",
        "c.jsonl",
        '{"session_id":"s","call_id":"a","issue_time_s":0,"input_tokens":40,"output_tokens":4}\n'
        '{"session_id":"t","call_id":"b","issue_time_s":1,"input_tokens":40,"output_tokens":0}\n'
        '{"session_id":"u","call_id":"c","issue_time_s":2,"input_tokens":0,"output_tokens":3}\n'
        '{"session_id":"v","call_id":"d","issue_time_s":3,"input_tokens":9,"output_tokens":1}\n',
    ),
]


@pytest.mark.parametrize("fmt,name,text", ZERO_CASES, ids=[f"{c[0]}-{c[1]}" for c in ZERO_CASES])
def test_zero_token_records_are_skipped_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, name: str, text: str
) -> None:
    src = tmp_path / name
    src.write_text(text)
    w = load_trace(src, fmt)
    assert len(w.calls) == 2  # the first and the last record
    assert [c.input_tokens for c in w.calls] == [int(x) for x in _inputs(fmt, text)]
    read = w.meta["read"]
    assert read["records"] == 4 and read["calls"] == 2
    assert read["skipped"] == {SKIP_ZERO: 2}
    # trace stats shows the skipped records and their reason
    assert main(["trace", "stats", str(src), "--trace-format", fmt]) == 0
    out = capsys.readouterr().out
    assert "(2 skipped)" in out and SKIP_ZERO in out
    assert main(["trace", "stats", str(src), "--trace-format", fmt, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["read"]["skipped"] == {SKIP_ZERO: 2}


def _inputs(fmt: str, text: str) -> list[str]:
    return {
        "azure": ["374", "10"],
        "burstgpt": ["472", "10"],
        "mooncake": ["600", "10"],
        "csv": ["10", "5"] if text.startswith("timestamp") else ["10", "7"],
        "agentsim": ["40", "9"],
    }[fmt]


def test_canonical_children_of_a_skipped_call_wait_for_its_parents(tmp_path: Path) -> None:
    """a -> b(0 output) -> c: c waits for a, after b's gap plus its own."""
    src = tmp_path / "c.jsonl"
    rows = [
        {"session_id": "s", "call_id": "a", "issue_time_s": 4, "input_tokens": 5, "output_tokens": 2},
        {"session_id": "s", "call_id": "b", "parents": ["a"], "gap_s": 1.5, "input_tokens": 5, "output_tokens": 0},
        {"session_id": "s", "call_id": "c", "parents": ["b"], "gap_s": 0.25, "input_tokens": 5, "output_tokens": 1},
        {"session_id": "r", "call_id": "x", "issue_time_s": 2, "input_tokens": 0, "output_tokens": 2},
        {"session_id": "r", "call_id": "y", "parents": ["x"], "gap_s": 3.0, "input_tokens": 5, "output_tokens": 1},
    ]  # fmt: skip
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    w = load_trace(src)
    calls = {c.call_id: c for c in w.calls}
    assert sorted(calls) == ["a", "c", "y"]
    assert calls["c"].parents == ("a",) and calls["c"].gap_s == pytest.approx(1.75)
    # the skipped root's child becomes a root issued at x's time plus its gap
    assert calls["y"].parents == () and calls["y"].issue_time_s == pytest.approx(5.0)
    assert w.meta["read"]["skipped"] == {SKIP_ZERO: 2}
