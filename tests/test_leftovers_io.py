"""Issue 15 leftovers: sweep takes (and honours) every run flag, atomic and vetted
calibration / keynote outputs, costmodel predict's precision flags, the report's
cluster title under --gpu overrides."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from sim.cli import build_parser, main
from sim.paths import DEFAULT_TRACE

REPO = Path(__file__).resolve().parents[1]


def hidden_leftovers(root: Path) -> list[Path]:
    """Temporary siblings an atomic write leaves only when it goes wrong."""
    return [p for p in root.rglob(".*") if p.name.endswith((".tmp", ".partial", ".old"))]


# ---- 1. compare and sweep accept every flag run takes ----------------------------------


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _help_flags(cmd: str) -> set[str]:
    """The long flags ``agentsim CMD --help`` prints (as a user reads them)."""
    text = _subparsers()[cmd].format_help()
    found = re.findall(r"^ {2}(?:-\w(?: \S+)?, )?(--[a-z][a-z0-9-]*)", text, re.M)
    return set(found) - {"--help"}


def _sample_value(action: argparse.Action) -> list[str]:
    if action.nargs == 0:
        return []
    if action.choices:
        return [str(next(iter(action.choices)))]
    if action.type is int:
        return ["1"]
    if action.type is float:
        return ["0.5"]
    return ["x"]


@pytest.mark.parametrize("cmd", ["compare", "sweep"])
def test_every_run_flag_is_accepted_by_compare_and_sweep(cmd: str) -> None:
    run_flags = _help_flags("run")
    assert {"--slo-ttft", "--slo-tpot", "--faults", "--dtype", "--out"} <= run_flags
    assert run_flags - _help_flags(cmd) == set()
    # ... and parses there with a value like run's
    parsers = _subparsers()
    by_flag = {o: a for a in parsers["run"]._actions for o in a.option_strings}
    required = {"compare": ["--policies", "round_robin"], "sweep": ["s.toml"]}[cmd]
    for flag in sorted(run_flags):
        argv = [*required, flag, *_sample_value(by_flag[flag])]
        ns, unknown = parsers[cmd].parse_known_args(argv)
        assert unknown == [], (flag, unknown)
        assert getattr(ns, by_flag[flag].dest) is not None, flag


SMALL = """
[sweep]
metrics = ["ttft_s.p99"]

[base]
trace = "{trace}"
nodes = 1
model = "llama-3-8b"
tp = 1
replicas = 2
max_num_seqs = 4

[grid]
policies = ["round_robin", "session_affinity"]
"""

# GPU 0 (replica 0's) fails at 100 s and is not repaired: its calls fail or move.
FAULTS = """
[[faults]]
at_s = 100.0
kind = "gpu"
gpu = 0
"""


def _table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "sweep.parquet").sort_values("policy").reset_index(drop=True)


def test_sweep_honours_faults_and_persistence(tmp_path: Path) -> None:
    """--faults and --persistence were parsed by sweep and silently dropped."""
    s = tmp_path / "s.toml"
    s.write_text(SMALL.format(trace=DEFAULT_TRACE))
    f = tmp_path / "f.toml"
    f.write_text(FAULTS)
    base = ["sweep", str(s), "--workers", "1", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--out", str(tmp_path / "f"), "--faults", str(f)]) == 0
    args = ["--faults", str(f), "--persistence", "remote_store"]
    assert main([*base, "--out", str(tmp_path / "fp"), *args]) == 0
    plain, faulty, kept = (_table(tmp_path / d) for d in ("plain", "f", "fp"))
    # the fault schedule is part of each run's identity, and of its results
    assert set(plain.run_id).isdisjoint(faulty.run_id)
    assert set(faulty.run_id).isdisjoint(kept.run_id)
    assert (faulty["faults"] == str(f)).all() and "faults" not in plain
    assert (kept["persistence"] == "remote_store").all() and "persistence" not in faulty
    assert "faults.injected.gpu" not in plain
    assert (faulty["faults.injected.gpu"] == 1).all() and (
        faulty["faults.replicas_lost"] == 1
    ).all()
    assert (faulty["faults.persistence"] == "none").all()
    assert (kept["faults.persistence"] == "remote_store").all()
    # the same runs as `agentsim run --faults` gives
    r = tmp_path / "r"
    argv = ["run", "--quiet", "--no-html", "--out", str(r), "--faults", str(f)]
    argv += ["--nodes", "1", "--model", "llama-3-8b", "--tp", "1", "--replicas", "2"]
    argv += ["--max-num-seqs", "4", "--policy", "round_robin"]
    assert main(argv) == 0
    single = json.loads((r / "summary.json").read_text())
    row = faulty[faulty.policy == "round_robin"].iloc[0]
    assert row["failed_requests"] == single["failed_requests"]
    assert row["ttft_s.p99"] == pytest.approx(single["ttft_s"]["p99"], rel=1e-12)


def test_sweep_slo_applies_at_report_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = tmp_path / "s.toml"
    s.write_text(SMALL.format(trace=DEFAULT_TRACE))
    out = tmp_path / "o"
    base = ["sweep", str(s), "--out", str(out), "--workers", "1", "--quiet"]
    assert main([*base, "--slo-ttft", "0.05", "--slo-tpot", "0.5"]) == 0
    t1 = _table(out)
    assert (t1["slo.ttft_s"] == 0.05).all() and (t1["slo.tpot_s"] == 0.5).all()
    perf = {p.parent.name: p.read_bytes() for p in (out / "runs").glob("*/perf.json")}
    # another SLO: the same runs (the SLO changes no simulated number), re-reported
    assert main([*base[:-1], "--slo-ttft", "100"]) == 0
    assert "2 already done, 0 ran, 0 failed, 2 re-reported for the SLO" in capsys.readouterr().err
    t2 = _table(out)
    assert t2.run_id.tolist() == t1.run_id.tolist()
    assert (t2["slo.ttft_s"] == 100.0).all() and (t2["slo.tpot_s"] == 0.1).all()
    assert (t2["ttft_slo_attainment"] >= t1["ttft_slo_attainment"]).all()
    assert (t2["ttft_slo_attainment"] > t1["ttft_slo_attainment"]).any()
    assert t2["ttft_s.p99"].tolist() == t1["ttft_s.p99"].tolist()
    # not simulated again: each run's perf.json (wall times) is the first run's
    assert {p.parent.name: p.read_bytes() for p in (out / "runs").glob("*/perf.json")} == perf
    # the run's report.md shows the new SLO; [base] slo_ttft does the same as the flag
    md = next((out / "runs").glob("*/report.md")).read_text()
    assert "TTFT <= 100" in md
    assert not hidden_leftovers(tmp_path)
    s2 = tmp_path / "s2.toml"
    s2.write_text(SMALL.format(trace=DEFAULT_TRACE).replace("[grid]", "slo_ttft = 100\n[grid]"))
    assert main(["sweep", str(s2), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    assert "re-reported" not in capsys.readouterr().err
    assert main(["sweep", str(s), "--out", str(out), "--slo-ttft", "-1", "--quiet"]) == 2
    assert "slo_ttft" in capsys.readouterr().err
