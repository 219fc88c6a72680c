"""A built wheel runs ``agentsim run`` on the embedded default trace (issue 16).

Builds the wheel offline (``pip wheel --no-deps --no-build-isolation``), installs it
with ``--no-deps --no-index`` into a fresh ``venv --system-site-packages`` and runs
the installed ``agentsim`` from a directory outside the checkout, so the default trace
can only come from the wheel's package data.  The new venv sees this interpreter's
installed dependencies through a ``.pth`` line (the test may run inside a venv, whose
packages ``--system-site-packages`` alone does not reach); a ``.pth`` line does not
process that directory's own ``.pth`` files, so an editable install of the checkout
there stays invisible.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from sim.common.paths import REPO_ROOT

pytest.importorskip("setuptools")
pytest.importorskip("wheel")

TRACE_IN_WHEEL = "sim/data/default.jsonl"


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r


def test_wheel_runs_default_trace(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_NO_INDEX"] = "1"
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    _run(
        [
            *pip,
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(REPO_ROOT),
        ],
        tmp_path,
        env,
    )
    (whl,) = wheels.glob("agentsim-*.whl")
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        assert TRACE_IN_WHEEL in names
        assert z.read(TRACE_IN_WHEEL) == (REPO_ROOT / "traces" / "default.jsonl").read_bytes()

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / ("python.exe" if os.name == "nt" else "python")
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "agentsim_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [*pip, "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(whl)],
        tmp_path,
        env,
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([str(py), "-c", "import sim; print(sim.__file__)"], elsewhere, env).stdout
    assert Path(where.strip()).resolve().is_relative_to(env_dir.resolve()), where
    out = elsewhere / "out"
    agentsim = bindir / ("agentsim.exe" if os.name == "nt" else "agentsim")
    _run([str(agentsim), "run", "--quiet", "--no-html", "--out", str(out)], elsewhere, env)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == 260
