"""The layer check of ``make lint`` (scripts/check_layers.py): layer order read from
docs/ARCHITECTURE.md's module map, upward imports, import cycles, long functions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from sim.common.paths import REPO_ROOT
from tests.helpers import load_file

SCRIPT = REPO_ROOT / "scripts" / "check_layers.py"
check_layers = load_file("check_layers", SCRIPT)


def test_layer_order_is_the_documented_one() -> None:
    assert check_layers.read_layers(REPO_ROOT) == [
        "common", "specs", "workload", "costmodel", "policies", "engine", "cluster",
        "metrics", "simulation", "report", "experiments", "calibration", "serving",
        "api", "cli",
    ]  # fmt: skip


def test_real_tree_passes() -> None:
    assert check_layers.check(REPO_ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO_ROOT / "docs" / "ARCHITECTURE.md", tmp_path / "docs" / "ARCHITECTURE.md")
    for rel, text in {"sim/__init__.py": "", **files}.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.parent / "__init__.py").touch()
        p.write_text(text)
    return tmp_path


def test_planted_upward_import_fails(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "sim/common/helpers.py": "import os\n\n\ndef f():\n    from sim.cli.main import main\n",
            "sim/cli/main.py": "def main():\n    pass\n",
            "sim/report/plots.py": (
                "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                "    from sim.experiments import sweep\n"
            ),
            "sim/experiments/sweep.py": "import sim\nimport policies.base\n",
            "policies/base.py": "from sim.engine.replica import Replica\n",
            "sim/engine/replica.py": "from ..common import helpers\n",
        },
    )
    assert check_layers.check(root) == [
        "sim/common/helpers.py:5: common imports sim.cli.main (cli)",
        "sim/report/plots.py:4: report imports sim.experiments.sweep (experiments)",
        "policies/base.py:1: policies imports sim.engine.replica (engine)",
    ]
    r = subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "sim/common/helpers.py:5: common imports sim.cli.main (cli)\n" in r.stdout


def test_planted_cycle_fails(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "sim/report/html.py": "def f():\n    from sim.report import plots\n",
            "sim/report/plots.py": "from sim.report.results import x\n",
            "sim/report/results.py": "x = 1\n\n\ndef g():\n    from . import html\n",
        },
    )
    assert check_layers.check(root) == [
        "sim/report/html.py:2: import cycle: "
        "sim.report.html -> sim.report.plots -> sim.report.results -> sim.report.html"
    ]


def test_long_function_needs_a_reason(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(80))
    root = _tree(
        tmp_path,
        {
            "sim/common/a.py": f"def bare():\n{body}\n\n# long: a table\ndef why():\n{body}",
            "sim/common/b.py": f"def short():\n{body[: -len('    x79 = 79')]}",
        },
    )
    assert check_layers.check(root) == [
        "sim/common/a.py:1: bare is 81 lines (over 80) with no '# long: <reason>' comment"
    ]


def test_module_outside_every_layer_fails(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"sim/keynote.py": "x = 1\n"})
    assert check_layers.check(root) == [
        "sim/keynote.py: in no layer of docs/ARCHITECTURE.md's module map"
    ]
