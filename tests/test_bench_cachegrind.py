"""benchmarks/run.py --cachegrind: reading cachegrind's output and the per-call counts
(the start-up run's counts taken out), without running valgrind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import load_file

bench = load_file("bench_run", Path(__file__).resolve().parents[1] / "benchmarks" / "run.py")

# cachegrind's format: a function's lines are "line-number count count ..." under its
# fn=, and a function may appear under several files (its counts add up)
OUT = """\
desc: I1 cache:         32768 B, 64 B, 8-way associative
cmd: python -m sim.cli run
events: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw
fl=a.c
fn=hot
10 100 0 0 40 8 3 20 1 0
11 50 0 0 10 2 1 5 0 1
fn=cold
3 7 0 0 1 0 0 0 0 0
fl=b.c
fn=hot
1 10 0 0 2 1 0 0 0 0
summary: 167 0 0 53 11 4 25 1 1
"""


def test_counts_sum_each_function_over_its_lines_and_files(tmp_path: Path) -> None:
    path = tmp_path / "cg.out"
    path.write_text(OUT)
    total, per_fn = bench.cachegrind_counts(path)
    assert total == {"Ir": 167, "I1mr": 0, "ILmr": 0, "Dr": 53, "D1mr": 11, "DLmr": 4,
                     "Dw": 25, "D1mw": 1, "DLmw": 1}  # fmt: skip
    assert per_fn["hot"]["Ir"] == 160 and per_fn["hot"]["DLmr"] == 4
    assert per_fn["hot"]["DLmw"] == 1 and per_fn["cold"] == dict.fromkeys(total, 0) | {
        "Ir": 7,
        "Dr": 1,
    }


def test_per_call_counts_take_the_one_session_run_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start-up run (1 session, 20 calls) and the scenario's run (500 sessions):
    per call is the difference over the 9,980 calls more, per function as well."""
    runs = {1: (20, 1_000_000, 2_000, 100), 500: (10_000, 11_000_000, 52_000, 3_100)}

    def fake_run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        cg = Path(next(a for a in cmd if a.startswith("--cachegrind-out-file=")).split("=", 1)[1])
        toml = Path(cmd[cmd.index("--trace") + 1])
        sessions = int(toml.read_text().split("sessions = ", 1)[1].split()[0])
        calls, ir, d1, ll = runs[sessions]
        cg.write_text(
            "events: Ir D1mr DLmr DLmw\nfn=loop\n1 "
            f"{ir} {d1} {ll} {ll // 10}\nsummary: {ir} {d1} {ll} {ll // 10}\n"
        )
        out = Path(cmd[cmd.index("--out") + 1])
        (out / "summary.json").write_text(json.dumps({"requests": calls}))
        (out / "perf.json").write_text(json.dumps({"native": "on" if sessions > 1 else "off (x)"}))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.setattr(bench.shutil, "which", lambda name: "/usr/bin/valgrind")
    sc = bench.scaling(16)
    row = bench.cachegrind_one(sc)
    n = 10_000 - 20
    assert row["calls"] == 10_000
    assert row["instr_per_call"] == round(10_000_000 / n, 1)
    assert row["l1_read_miss_per_call"] == round(50_000 / n, 1)
    assert row["ll_read_miss_per_call"] == round(3_000 / n, 1)
    assert row["ll_write_miss_per_call"] == round(300 / n, 1)
    assert row["top_ll_miss_per_call"] == {"loop": round(3_300 / n, 1)}
    # the two runs were not the same code (the build was off for one): the row says so
    assert row["native"] == "differs: ['off (x)', 'on']"


def test_only_synthetic_scenarios_and_only_with_valgrind(monkeypatch: pytest.MonkeyPatch) -> None:
    trace = bench.Scenario("azure", ["--trace", "x.csv"])
    assert "synthetic" in bench.cachegrind_one(trace)["skipped"]
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    assert bench.cachegrind_one(bench.scaling(16))["skipped"] == "valgrind is not installed"
