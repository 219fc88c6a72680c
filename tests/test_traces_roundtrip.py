"""Round trips: every format -> canonical -> read gives identical calls."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cli.main import main
from sim.workload.calls import Call
from sim.workload.traces import detect_format, load_trace
from sim.workload.traces.canonical import read_canonical, write_canonical
from sim.workload.traces.stats import meta_section


def _convert(src: Path, out: Path, *extra: str) -> int:
    return main(["trace", "convert", str(src), "-o", str(out), *extra])


def test_azure_roundtrip_and_times(tmp_path: Path) -> None:
    src = tmp_path / "az.csv"
    src.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:50.9951691,12,1\n"
    )
    assert detect_format(str(src)) == "azure"
    out = tmp_path / "az.jsonl"
    assert _convert(src, out) == 0
    a, b = load_trace(src), load_trace(out)
    assert a.calls == b.calls
    assert [c.issue_time_s for c in a] == [0.0, 4.314579, 4.3145791]
    assert [(c.input_tokens, c.output_tokens) for c in a] == [(374, 44), (396, 109), (12, 1)]
    assert all(not c.parents and c.session_id == c.call_id for c in a)


def test_burstgpt_roundtrip_counts_failed_rows(tmp_path: Path) -> None:
    src = tmp_path / "bg.csv"
    src.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "45,ChatGPT,1087,0,1087,Conversation log\n"
        "118,GPT-4,417,276,693,API log\n"
    )
    assert detect_format(str(src)) == "burstgpt"
    w = load_trace(src)
    assert [c.model for c in w] == ["ChatGPT", "GPT-4"]
    assert meta_section(w, "read")["records"] == 3 and meta_section(w, "read")["calls"] == 2
    assert sum(meta_section(w, "read")["skipped"].values()) == 1
    out = tmp_path / "bg.jsonl.gz"
    assert _convert(src, out) == 0
    assert load_trace(out).calls == w.calls


def test_mooncake_roundtrip_keeps_full_blocks(tmp_path: Path) -> None:
    src = tmp_path / "mc.jsonl"
    rows = [
        {"timestamp": 0, "input_length": 1100, "output_length": 10, "hash_ids": [0, 1, 2]},
        {"timestamp": 5000, "input_length": 1600, "output_length": 20, "hash_ids": [0, 1, 3, 4]},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert detect_format(str(src)) == "mooncake"
    w = load_trace(src)
    assert [c.prefix_hashes for c in w] == [(0, 1), (0, 1, 3)]
    assert all(c.block_size == 512 for c in w)
    out = tmp_path / "mc.jsonl"
    assert _convert(src, tmp_path / "out.jsonl") == 0
    assert load_trace(tmp_path / "out.jsonl").calls == w.calls
    assert _convert(src, out.with_name("open.jsonl"), "--no-sessions") == 0
    assert {c.session_id for c in load_trace(out.with_name("open.jsonl"))} == {"mc-1", "mc-2"}


def test_generic_csv_and_jsonl_with_sessions(tmp_path: Path) -> None:
    src = tmp_path / "mine.csv"
    src.write_text("t_ms,conv,p,c\n0,a,100,10\n500,b,50,5\n2000,a,150,7\n")
    out = tmp_path / "mine.jsonl"
    cols = "time=t_ms,input=p,output=c,session=conv"
    assert _convert(src, out, "--from", "csv", "--columns", cols, "--time-unit", "ms") == 0
    calls = read_canonical(out).calls
    by = {c.call_id: c for c in calls}
    assert by["r4"].parents == ("r2",) and by["r4"].session_id == "a"
    assert abs(by["r4"].gap_s - (2.0 - (0.05 + 0.006 * 10))) < 1e-12
    jl = tmp_path / "mine2.jsonl"
    jl.write_text('{"timestamp": 1.5, "prompt_tokens": 9, "completion_tokens": 3}\n')
    assert detect_format(str(jl)) == "csv"
    w = load_trace(jl)
    assert (w.calls[0].input_tokens, w.calls[0].output_tokens, w.calls[0].issue_time_s) == (
        9,
        3,
        0.0,
    )


def test_lmcache_directory_roundtrip(tmp_path: Path) -> None:
    d = tmp_path / "sessions"
    d.mkdir()
    for sid, t0 in (("s1", 1_000_000), ("s2", 5_000_000)):
        lines = [
            {
                "timestamp": t0 + 3_000_000,
                "input": "sys task obs1 " * 40,
                "output": "done",
                "session_id": sid,
            },
            {
                "timestamp": t0,
                "input": "sys task " * 40,
                "output": "```bash\nls\n```",
                "session_id": sid,
            },
        ]
        with gzip.open(d / f"{sid}.jsonl.gz", "wt") as fh:
            fh.writelines(json.dumps(x) + "\n" for x in lines)
    assert detect_format(str(d)) == "lmcache"
    out = tmp_path / "lm.jsonl.gz"
    assert _convert(d, out) == 0
    assert load_trace(out).calls == load_trace(d).calls


@st.composite
def workloads(draw: st.DrawFn) -> list[Call]:
    n = draw(st.integers(1, 25))
    calls: list[Call] = []
    t = 0.0
    for i in range(n):
        t += draw(st.floats(0, 100, allow_nan=False))
        parents = tuple(
            sorted(set(draw(st.lists(st.sampled_from([c.call_id for c in calls]), max_size=3))))
            if calls
            else ()
        )
        kind = draw(st.sampled_from(["llm", "tool"]))
        sid = draw(st.sampled_from(["a", "b", "sess 3"]))
        if kind == "tool":
            calls.append(
                Call(
                    call_id=f"c{i}",
                    session_id=sid,
                    kind="tool",
                    parents=parents,
                    issue_time_s=t,
                    gap_s=draw(st.floats(0, 10, allow_nan=False)),
                    tool_duration_s=draw(st.floats(0, 1e4, allow_nan=False)),
                )
            )
            continue
        bs = draw(st.sampled_from([16, 512]))
        inp = draw(st.integers(1, 20_000))
        hashes = tuple(draw(st.lists(st.integers(0, 2**63 - 1), max_size=inp // bs, unique=True)))
        calls.append(
            Call(
                call_id=f"c{i}",
                session_id=sid,
                parents=parents,
                issue_time_s=t,
                gap_s=draw(st.floats(0, 10, allow_nan=False)),
                model=draw(st.sampled_from([None, "llama-3-8b"])),
                input_tokens=inp,
                output_tokens=draw(st.integers(1, 4000)),
                prefix_hashes=hashes,
                block_size=bs,
            )
        )
    return calls


@settings(max_examples=60, deadline=None)
@given(calls=workloads(), gz=st.booleans())
def test_hypothesis_canonical_roundtrip(calls: list[Call], gz: bool) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("t.jsonl.gz" if gz else "t.jsonl")
        assert write_canonical(calls, path, {"source": "hypothesis"}) == len(calls)
        w = read_canonical(path)
        assert w.calls == calls
        assert w.meta["source"] == "hypothesis"
        assert meta_section(w, "read")["lines"] == len(calls) + 1
