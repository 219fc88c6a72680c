"""The README's promise: `agentsim run` with defaults writes a valid report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from sim.cli.main import main
from sim.metrics.recorder import SUMMARY_KEYS

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = [
    "requests", "completed_requests", "sessions", "ttft_s", "tpot_s", "e2e_s", "session_s",
    "throughput_tokens_per_s", "prefix_hit_rate", "preemptions", "cold_starts", "gpu_hours",
    "cost_usd", "makespan_s", "seed", "policy",
]  # fmt: skip


def test_default_run_writes_the_output_contract(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "sim.cli", "run", "--quiet", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    for key in CONTRACT:
        assert key in summary, key
    for key in ("ttft_s", "tpot_s", "e2e_s", "session_s"):
        assert set(summary[key]) == {"mean", "p50", "p90", "p99"}
    assert list(summary)[: len(SUMMARY_KEYS)] == list(SUMMARY_KEYS)
    calls = pd.read_parquet(out / "calls.parquet")
    llm = calls[calls["kind"] == "llm"]
    assert len(llm) == summary["requests"] > 0
    assert summary["completed_requests"] == int((llm["status"] == "completed").sum())
    assert (out / "report.md").read_text().startswith("# agentsim run")
    assert summary["policy"] == "round_robin" and summary["seed"] == 0


def test_same_seed_gives_byte_identical_summary(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert main(["run", "--quiet", "--seed", "7", "--out", str(tmp_path / name)]) == 0
    assert (tmp_path / "a" / "summary.json").read_bytes() == (
        tmp_path / "b" / "summary.json"
    ).read_bytes()


def test_quick_flags_build_the_cluster(tmp_path: Path) -> None:
    rc = main(["run", "--quiet", "--gpu", "a100-80gb", "--nodes", "1", "--model", "llama-2-70b", "--tp", "2",
               "--replicas", "4", "--max-num-seqs", "64", "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    cfg = json.loads((tmp_path / "config.json").read_text())["cluster"]
    dep = cfg["deployments"][0]
    assert (dep["model"], dep["tp"], dep["replicas"], dep["max_num_seqs"]) == (
        "llama-2-70b",
        2,
        4,
        64,
    )
    reps = pd.read_csv(tmp_path / "replicas.csv")
    assert len(reps) == 4 and set(reps["node"]) == {0}


def test_impossible_config_is_one_line_error(capsys) -> None:
    rc = main(["run", "--quiet", "--gpu", "a100-40gb", "--nodes", "1", "--model", "llama-2-70b", "--tp", "1",
               "--replicas", "1"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert "does not fit" in err and "short by" in err


def test_unknown_model_suggests_a_preset(capsys) -> None:
    rc = main(["run", "--quiet", "--model", "llama-2-7", "--tp", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "did you mean 'llama-2-7b'" in err
