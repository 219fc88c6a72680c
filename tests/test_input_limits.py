"""Real request logs are read whole: records with 0 prompt or 0 output tokens are
skipped and counted (never the whole file refused, never dropped silently)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.cli.main import main
from sim.workload.traces import load_trace
from sim.workload.traces.tabular import SKIP_ZERO

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
    assert read["skipped"] == {SKIP_ZERO: 2} and w.meta["skipped"] == {SKIP_ZERO: 2}
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


# ---- request length limits (max_model_len) -----------------------------------------------

from sim.cluster.config import load_cluster_config, max_model_len  # noqa: E402
from sim.simulation import simulate  # noqa: E402
from sim.specs.models import PRESETS  # noqa: E402
from tests.helpers import ROOFLINE, cluster, llm, workload  # noqa: E402


@pytest.mark.parametrize(
    "model,context",
    [
        ("llama-2-7b", 4096),  # meta-llama/Llama-2-7b-hf max_position_embeddings
        ("llama-2-70b", 4096),
        ("llama-3-8b", 8192),  # meta-llama/Meta-Llama-3-8B
        ("llama-3-70b", 8192),
        ("mistral-7b", 32768),  # mistralai/Mistral-7B-v0.1
        ("mixtral-8x7b", 32768),
        ("qwen2-7b", 32768),  # Qwen/Qwen2-7B-Instruct
    ],
)
def test_max_model_len_defaults_to_the_models_context(model: str, context: int) -> None:
    assert PRESETS[model].max_context == context
    assert max_model_len(cluster(model=model, max_model_len=0).deployments[0]) == context
    assert max_model_len(cluster(model=model, max_model_len=1234).deployments[0]) == 1234


def test_prompt_longer_than_the_context_is_rejected_at_arrival_by_default() -> None:
    """A 200k-token prompt on Llama-2-7B (4,096 tokens) fails at arrival with no GPU
    time; its session's next call fails as a failed parent's child does; others run."""
    w = workload(
        [
            llm("long", "s", 200_000, 10, t=1.0),
            llm("next", "s", 100, 10, parents=("long",)),
            llm("fits", "t", 4000, 96, t=0.5),  # 4,096 exactly: served
            llm("over", "u", 4000, 97, t=0.7),  # prompt fits, prompt + output does not
        ]
    )
    r = simulate(w, cluster(max_model_len=0), cost_model=ROOFLINE)
    rows = r.calls.set_index("call_id")
    assert rows.loc["long", "reason"] == "exceeds_max_model_len"
    assert rows.loc["long", "finish_s"] != rows.loc["long", "finish_s"]  # NaN: never served
    assert rows.loc["over", "reason"] == "exceeds_max_model_len"
    assert rows.loc["next", "reason"] == "parent_failed"
    assert rows.loc["fits", "status"] == "completed"
    assert r.summary["rejected_too_long"] == 2
    assert r.summary["max_model_len"] == {"llama-2-7b": 4096}
    assert int(r.replicas["prompt_tokens"].sum()) <= 4000  # only "fits" reached a GPU


def test_rejection_does_not_wait_for_a_cold_replica() -> None:
    w = workload(
        [
            llm("long", "s", 5000, 10, t=2.0),
            llm("child", "s", 10, 10, parents=("long",)),
            llm("ok", "t", 100, 10, t=2.0),
        ]
    )
    r = simulate(w, cluster(cold_start=True, max_model_len=0), cost_model=ROOFLINE)
    rows = r.calls.set_index("call_id")
    assert rows.loc["long", "reason"] == "exceeds_max_model_len"
    # the served call waited for the replica's weights, the rejected one did not: its
    # child failed (and is recorded as issued) the moment it arrived
    assert rows.loc["ok", "first_token_s"] > 2.0 + 20.0
    assert rows.loc["child", "reason"] == "parent_failed"
    assert rows.loc["child", "issue_s"] == 2.0


def test_truncate_keeps_the_prompts_tail_and_caps_the_output() -> None:
    w = workload(
        [
            llm("long", "s", 10_000, 100, hashes=tuple(range(600))),
            llm("huge-out", "t", 50, 9000, t=0.1),
            llm("ok", "u", 1000, 10, t=0.2, hashes=tuple(range(1000, 1062))),
        ]
    )
    r = simulate(w, cluster(too_long="truncate", max_model_len=0), cost_model=ROOFLINE)
    rows = r.calls.set_index("call_id")
    assert (rows["status"] == "completed").all()
    assert (rows.loc["long", "input_tokens"], rows.loc["long", "output_tokens"]) == (3996, 100)
    assert (rows.loc["huge-out", "input_tokens"], rows.loc["huge-out", "output_tokens"]) == (
        1,
        4095,
    )
    assert (rows.loc["ok", "input_tokens"], rows.loc["ok", "output_tokens"]) == (1000, 10)
    s = r.summary
    assert (s["truncated_calls"], s["rejected_too_long"]) == (2, 0)
    assert s["truncated_prompt_tokens"] == (10_000 - 3996) + (50 - 1)
    assert s["truncated_output_tokens"] == 9000 - 4095


def test_max_model_len_and_too_long_from_toml_and_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(
        'gpu = "a100-80gb"\n[[nodes]]\nbuilder = "dgx-a100"\ncount = 1\ngpus = 8\n'
        '[[deployments]]\nmodel = "llama-3-8b"\ntp = 1\nreplicas = 1\n'
        'max_model_len = 2000\ntoo_long = "truncate"\n'
    )
    d = load_cluster_config(toml).deployments[0]
    assert (max_model_len(d), d.too_long) == (2000, "truncate")
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        '{"session_id":"s","call_id":"a","issue_time_s":0,"input_tokens":3000,"output_tokens":10}\n'
        '{"session_id":"t","call_id":"b","issue_time_s":1,"input_tokens":100,"output_tokens":10}\n'
    )

    def run(*extra: str) -> dict[str, object]:
        out = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
        argv = ["run", "--trace", str(trace), "--out", str(out), "--quiet", "--no-html"]
        argv += [
            "--costmodel",
            str(Path(__file__).parents[1] / "calibration/costmodels/vidur-a100.toml"),
        ]
        assert main([*argv, *extra]) == 0
        capsys.readouterr()
        return json.loads((out / "summary.json").read_text())

    s = run("--cluster", str(toml))
    assert (s["truncated_calls"], s["rejected_too_long"]) == (1, 0)
    s = run("--cluster", str(toml), "--too-long", "reject")
    assert (s["truncated_calls"], s["rejected_too_long"]) == (0, 1)
    s = run("--cluster", str(toml), "--max-model-len", "4000")
    assert (s["truncated_calls"], s["rejected_too_long"]) == (0, 0)
    s = run("--model", "llama-3-8b", "--tp", "1")  # the model's 8,192 tokens
    assert s["max_model_len"] == {"llama-3-8b": 8192} and s["rejected_too_long"] == 0
    s = run("--model", "llama-3-8b", "--tp", "1", "--max-model-len", "1000")
    assert s["rejected_too_long"] == 1 and s["completed_requests"] == 1
    for bad, field in (
        (["--max-model-len", "-1"], "max_model_len"),
        (["--max-model-len", "1"], "max_model_len"),
    ):
        assert main(["run", "--trace", str(trace), "--quiet", *bad]) == 2
        assert f"deployments[0].{field}" in capsys.readouterr().err


def test_default_scenario_completes_every_call() -> None:
    """``make run``: the default trace on the default cluster serves every call (its
    longest prompts, 11.6k tokens, fit Llama-3.1-70B's context)."""
    from sim.cluster.config import default_cluster_config
    from sim.common.paths import DEFAULT_TRACE
    from sim.workload.traces import load_trace

    w = load_trace(DEFAULT_TRACE)
    cfg = default_cluster_config()
    longest = max(c.input_tokens + c.output_tokens for c in w.calls)
    assert 8192 < longest <= max_model_len(cfg.deployments[0])


# ---- faults beyond the run ---------------------------------------------------------------


def test_fault_after_the_run_is_counted_and_warned_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sim.cluster.faults import load_faults

    f = tmp_path / "f.toml"
    f.write_text(
        '[[faults]]\nat_s = 1e9\nkind = "gpu"\ngpu = 0\n\n'
        '[[faults]]\nat_s = 1e308\nkind = "node"\nnode = 0\n\n'
        '[[faults]]\nat_s = 0.5\nkind = "gpu"\ngpu = 1\nrepair_s = 1.0\n'
    )
    w = workload([llm("a", "s", 100, 20), llm("b", "t", 100, 20, t=1.0)])
    r = simulate(
        w, cluster(replicas=2, max_model_len=0), cost_model=ROOFLINE, faults=load_faults(f)
    )
    err = capsys.readouterr().err
    assert r.summary["faults_ignored"] == 2
    assert r.summary["faults"]["injected"] == {"gpu": 1}
    assert err.count("agentsim: warning:") == 1 and "2 fault(s) scheduled after" in err
    assert str(f) in err


def test_report_states_the_limit_and_what_was_rejected() -> None:
    from sim.report.results import limits_lines

    s = {"max_model_len": {"llama-3-8b": 8192}, "rejected_too_long": 508, "truncated_calls": 0}
    assert limits_lines(s) == [
        "- max_model_len: llama-3-8b 8,192 tokens; rejected as longer: 508; truncated: 0"
    ]
    s |= {"trace_skipped_records": 3, "faults_ignored": 1}
    lines = limits_lines(s)
    assert len(lines) == 3 and "skipped by the reader" in lines[1] and ": 1" in lines[2]
