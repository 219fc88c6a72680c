"""Configs that cannot work fail before simulating, with one line and no traceback;
an interrupted run leaves no partial result files."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sim.cli.main import main
from sim.common.io import atomic_write, atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
TRACE = str(ROOT / "traces" / "default.jsonl")

CROSS_NODE = """
gpu = "a100-80gb"
[[nodes]]
builder = "dgx-a100"
count = 2
gpus = 8
[[deployments]]
model = "llama-3-70b"
tp = 16
replicas = 1
"""

CASES = [
    # (name, extra args, files {name: text}, expected fragment)
    ("unknown router", ["--router", "round_robn"], {}, "did you mean 'round_robin'"),
    ("unknown persistence", ["--persistence", "remote_stor"], {}, "did you mean 'remote_store'"),
    ("unknown policy parameter", ["--router", "session_affinity:vnode=3"], {}, "did you mean 'vnodes'"),
    ("model larger than its GPUs", ["--model", "llama-3-70b", "--tp", "1", "--gpu", "a100-40gb"], {}, "does not fit on 1 GPU"),
    ("tp across nodes", ["--cluster", "{c.toml}"], {"c.toml": CROSS_NODE}, "deployments[0].tp: TP=16 is larger than a node (8 GPUs)"),
    ("unknown cluster field", ["--cluster", "{c.toml}"], {"c.toml": "[[deployments]]\nmodel = 'llama-2-7b'\ntp = 1\nreplica = 2\n"}, "deployments[0].replica: unknown field (did you mean 'replicas'?)"),
    ("negative link bandwidth", ["--faults", "{f.toml}"], {"f.toml": "[[faults]]\nat_s = 1\nkind = 'link'\nedge = ['n0/nic0', 'net/leaf']\nbandwidth_factor = -0.5\n"}, "f.toml:5: faults[0].bandwidth_factor: must be > 0"),
    ("unknown fault kind", ["--faults", "{f.toml}"], {"f.toml": "[[faults]]\nat_s = 1\nkind = 'nodes'\nnode = 0\n"}, "f.toml:3: faults[0].kind: unknown fault kind 'nodes' (did you mean 'node'?)"),
    ("fault target missing", ["--faults", "{f.toml}"], {"f.toml": "[[faults]]\nat_s = 1\nkind = 'gpu'\ngpu = 64\n"}, "f.toml:1: faults[0].gpu: GPU 64 does not exist"),
    ("faults file missing", ["--faults", "{nope.toml}"], {}, "nope.toml: file not found"),
    ("negative load scale", ["--load-scale", "-2"], {}, "--load-scale must be a positive number"),
]  # fmt: skip


@pytest.mark.parametrize("name,extra,files,expect", CASES, ids=[c[0] for c in CASES])
def test_impossible_configs_fail_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    extra: list[str],
    files: dict[str, str],
    expect: str,
) -> None:
    for fname, text in files.items():
        (tmp_path / fname).write_text(text)
    args = [str(tmp_path / a[1:-1]) if a.startswith("{") else a for a in extra]
    out = tmp_path / "out"
    rc = main(["run", "--trace", TRACE, "--out", str(out), "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expect in err, err
    assert not out.exists()  # failed before simulating: nothing written


def test_cross_node_tp_loads_when_allowed(tmp_path: Path) -> None:
    from sim.cluster.config import load_cluster_config

    p = tmp_path / "c.toml"
    p.write_text(CROSS_NODE + "allow_cross_node_tp = true\n")
    assert load_cluster_config(p).deployments[0].tp == 16


def test_atomic_write_interrupted_leaves_neither_target_nor_temp(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"

    def write(tmp: str) -> None:
        Path(tmp).write_text('{"half": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write)
    assert list(tmp_path.iterdir()) == []
    atomic_write_json(target, {"a": 1})
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write)
    assert json.loads(target.read_text()) == {"a": 1}  # the old result survives whole
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


@pytest.mark.parametrize("delay_s", [0.3, 1.5, 3.0])
def test_sigint_during_run_leaves_no_partial_outputs(tmp_path: Path, delay_s: float) -> None:
    out = tmp_path / "out"
    trace = ROOT / "traces" / "samples" / "mooncake_conversation_400s.jsonl.gz"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "run", "--trace", str(trace), "--out", str(out),
         "--quiet", "--faults", str(ROOT / "examples" / "faults" / "node_failure.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    time.sleep(delay_s)  # interrupt at some point of the run (start, simulation, writing)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    # 130: main() caught the interrupt; -SIGINT: it came before main() (during imports)
    assert proc.returncode in (0, 130, -signal.SIGINT), err.decode()
    if proc.returncode == 130:
        assert b"interrupted" in err and b"Traceback" not in err
    files = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert not [f for f in files if f.endswith(".tmp")], files
    # The run directory is renamed into place whole: absent, or every file complete.
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    if proc.returncode != 0:
        assert files == [], files
    else:
        assert {"summary.json", "calls.parquet", "report.md", "report.html"} <= set(files)
    if "summary.json" in files:
        json.loads((out / "summary.json").read_text())
    if "calls.parquet" in files:
        pd.read_parquet(out / "calls.parquet")


def test_an_interrupt_after_the_command_finished_leaves_its_exit_status(tmp_path: Path) -> None:
    """Ctrl-C after ``main()`` of a program returned (its outputs complete), while the
    interpreter exits, neither kills the process (-SIGINT) nor reports it interrupted:
    the finished run's status stands (the timing test above hit this window once the
    compiled engine made the run finish within its 1.5 s)."""
    out = tmp_path / "out"
    code = (
        "import os, signal, sys, time\n"
        "from sim.cli.main import main\n"
        "rc = main()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(0.2)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "run", "--quiet", "--no-html", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "interrupted" not in proc.stderr
    json.loads((out / "summary.json").read_text())


def test_an_interrupt_that_c_code_turns_into_another_error_still_ends_as_interrupted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # matplotlib's renderer, interrupted mid-draw, raises "Invalid bounding box"
    import sim.cli.main as cli

    def draw(_args: argparse.Namespace) -> int:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)  # the handler runs here
        except KeyboardInterrupt:
            raise ValueError("Invalid bounding box") from None
        return 0

    def parser(_cmd: str | None) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser()
        p.set_defaults(func=draw)
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    assert cli.main([]) == 130
    assert capsys.readouterr().err == "agentsim: interrupted\n"
    # an error with no interrupt behind it is still an error
    monkeypatch.setattr(cli, "build_parser", lambda _c: _failing_parser())
    with pytest.raises(ValueError, match="not an interrupt"):
        cli.main([])


def _failing_parser() -> argparse.ArgumentParser:
    def fail(_args: argparse.Namespace) -> int:
        raise ValueError("not an interrupt")

    p = argparse.ArgumentParser()
    p.set_defaults(func=fail)
    return p
