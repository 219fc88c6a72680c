"""Every malformed input gives one line naming file, line and field; nothing is dropped."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from sim.cli.main import main

MC_OK = '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}\n'
AZ_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
AZ_OK = "2023-11-16 18:15:46.6805900,374,44\n"

CASES = [
    # (name, file name, content, extra args, expected "line: field" fragment)
    (
        "repeated chain hash",
        "t.jsonl",
        '{"agentsim_trace": 1, "name": "dup"}\n{"session_id": "s", "call_id": "a", "type": "llm",'
        ' "issue_time_s": 0, "input_tokens": 64, "output_tokens": 2, "prefix_hashes": [5, 6, 5]}\n',
        [],
        ":2: prefix_hashes: hash 5 repeats at positions 0 and 2",
    ),
    (
        "repeated mooncake id",
        "t.jsonl",
        MC_OK + '{"timestamp": 1, "input_length": 600, "output_length": 5, "hash_ids": [7, 7]}\n',
        [],
        ":2: hash_ids: hash 7 repeats",
    ),
    ("bad json", "t.jsonl", MC_OK + "{oops\n", [], ":2: invalid JSON"),
    (
        "missing field",
        "t.jsonl",
        MC_OK + '{"timestamp": 1, "output_length": 5, "hash_ids": []}\n',
        [],
        ":2: input_length: required",
    ),
    (
        "negative tokens",
        "t.jsonl",
        MC_OK + '{"timestamp": 1, "input_length": 5, "output_length": -5, "hash_ids": []}\n',
        [],
        ":2: output_length:",
    ),
    (
        "non-monotonic",
        "t.jsonl",
        '{"timestamp": 9, "input_length": 5, "output_length": 5, "hash_ids": []}\n' + MC_OK,
        [],
        ":2: timestamp: not monotonic",
    ),
    (
        "hash ids short",
        "t.jsonl",
        '{"timestamp": 0, "input_length": 1500, "output_length": 5, "hash_ids": [1]}\n',
        [],
        ":1: hash_ids:",
    ),
    (
        "azure negative",
        "a.csv",
        AZ_HEAD + AZ_OK + "2023-11-16 18:15:47.0,-3,44\n",
        [],
        ":3: ContextTokens:",
    ),
    (
        "azure non-monotonic",
        "a.csv",
        AZ_HEAD + AZ_OK + "2023-11-16 18:15:40.0,3,44\n",
        [],
        ":3: TIMESTAMP: not monotonic",
    ),
    ("azure bad time", "a.csv", AZ_HEAD + "yesterday,3,44\n", [], ":2: TIMESTAMP:"),
    ("azure short row", "a.csv", AZ_HEAD + "2023-11-16 18:15:40.0,3\n", [], ":2: GeneratedTokens:"),
    (
        "azure missing column",
        "a.csv",
        "TIMESTAMP,ContextTokens\n" + "2023-11-16 18:15:40.0,3\n",
        ["--from", "azure"],
        ":1: GeneratedTokens: column missing",
    ),
    (
        "canonical unknown field",
        "c.jsonl",
        '{"session_id":"s","call_id":"a","issue_time_s":0,"input_tokens":3,"output_tokens":1,"colour":1}\n',
        [],
        ":1: colour: unknown field",
    ),
    (
        "canonical bad parent",
        "c.jsonl",
        '{"session_id":"s","call_id":"a","parents":["z"],"input_tokens":3,"output_tokens":1}\n',
        [],
        ":1: parents:",
    ),
    (
        "canonical negative",
        "c.jsonl",
        '{"session_id":"s","call_id":"a","issue_time_s":0,"input_tokens":-3,"output_tokens":1}\n',
        [],
        ":1: input_tokens:",
    ),
    (
        "lmcache missing output",
        "l.jsonl",
        '{"timestamp": 1, "input": "x", "output": "y"}\n{"timestamp": 2, "input": "x"}\n',
        ["--from", "lmcache"],
        ":2: output: required",
    ),
    (
        "csv non-monotonic",
        "u.csv",
        "timestamp,input_tokens,output_tokens\n5,1,1\n4,1,1\n",
        [],
        ":3: timestamp: not monotonic",
    ),
    (
        "csv bad number",
        "u.csv",
        "timestamp,input_tokens,output_tokens\n5,x,1\n",
        [],
        ":2: input_tokens:",
    ),
    ("undetectable", "u.csv", "a,b,c\n1,2,3\n", [], ":1: cannot detect the trace format"),
]


@pytest.mark.parametrize("name,fname,content,extra,expect", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_one_line_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    fname: str,
    content: str,
    extra: list[str],
    expect: str,
) -> None:
    src = tmp_path / fname
    src.write_text(content)
    for cmd in (["convert", str(src), "-o", str(tmp_path / "o.jsonl")], ["stats", str(src)]):
        args = ["trace", *cmd, *extra]
        if cmd[0] == "stats":
            args = [a.replace("--from", "--trace-format") for a in args]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"{src}{expect}" in err, err


def test_unknown_format_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "x.jsonl"
    src.write_text(MC_OK)
    with pytest.raises(SystemExit):  # argparse rejects names outside the choices
        main(["trace", "stats", str(src), "--trace-format", "parquet"])
    assert "invalid choice: 'parquet'" in capsys.readouterr().err
    from sim.common.errors import InputError
    from sim.workload.traces import load_trace

    with pytest.raises(InputError, match=r"x.jsonl: --trace-format: unknown format 'parquet'"):
        load_trace(src, "parquet")


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "stats", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: file not found" in capsys.readouterr().err


def test_stats_counts_lines_read_against_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "s1.jsonl.gz"
    rows = [
        {"timestamp": 2, "input": "b " * 50, "output": "```bash\nls\n```", "session_id": "s1"},
        {"timestamp": 1, "input": "", "output": "x", "session_id": "s1"},
        {"timestamp": 900_000, "input": "b " * 60, "output": "ok", "session_id": "s1"},
    ]
    with gzip.open(src, "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert main(["trace", "stats", str(src), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in (
        "calls",
        "sessions",
        "duration_s",
        "input_tokens",
        "output_tokens",
        "calls_per_session",
        "prefix_reuse",
    ):
        assert key in out
    read = out["read"]
    assert (read["lines"], read["records"]) == (3, 3)
    assert out["llm_calls"] == 3 and out["calls"] == read["calls"]
    assert read["notes"] == {
        "empty prompt counted as 1 token": 1,
        "concurrent calls (issued before any earlier call ended)": 1,  # 1 us apart
    }
