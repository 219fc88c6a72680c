"""What a plain ``agentsim run`` loads, and the CLI's handling of the garbage collector.

A small run's wall time is mostly start-up (benchmarks/run.py times it): a run that
writes no HTML must not import the plotting stack, SciPy or the fitted operator cost
model it does not use.  Checked in a fresh
interpreter, since this test process has imported everything.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

from sim.cli.main import main

ROOT = Path(__file__).resolve().parents[1]

#: Modules a ``run --no-html`` of the default trace and cluster must not load.
NOT_LOADED = (
    "matplotlib",
    "scipy",
    "hypothesis",
    "sim.report.plots",
    "sim.report.html",
    "sim.costmodel.fitted",
)

_PROBE = """
import json, sys
from sim.cli.main import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "modules": sorted(sys.modules)}))
"""


def test_run_without_html_does_not_import_what_it_does_not_use(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, "run", "--quiet", "--no-html", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["rc"] == 0 and (out / "report.md").exists()
    assert not (out / "report.html").exists()
    loaded = set(got["modules"])
    assert "pandas" in loaded and "sim.simulation" in loaded  # the probe saw a real run
    bad = sorted(n for n in NOT_LOADED if any(m == n or m.startswith(n + ".") for m in loaded))
    assert not bad, f"run --no-html imported {bad}"


def test_main_called_in_process_leaves_the_garbage_collector_alone(tmp_path: Path) -> None:
    """Only the process's own command line (argv None) freezes objects for a fast exit;
    a caller that goes on (tests, scripts) keeps collecting its garbage."""
    frozen, enabled = gc.get_freeze_count(), gc.isenabled()
    rc = main(["run", "--quiet", "--no-html", "--out", str(tmp_path / "run")])
    assert rc == 0
    assert gc.get_freeze_count() == frozen
    assert gc.isenabled() == enabled
