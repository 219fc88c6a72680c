"""Calibration reproduces across machines: the whole-iteration fit rounds to a stated
number of digits, and ``calibrate replay --check`` compares a refit with the committed
model value by value within stated tolerances (another CPU's BLAS kernels move the fit
by ~1e-5 relative, so byte equality cannot be the test).  The refit is checked in
subprocesses under two ``OPENBLAS_CORETYPE`` settings (and numpy's baseline SIMD)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sim.calibration.check import COEFFICIENT_RTOL, METRIC_ATOL, compare_costmodels
from sim.calibration.fit import ITERATION_FIT_DIGITS, fit_files
from tests.test_calibration_harness import cli

ROOT = Path(__file__).resolve().parents[1]
TORCH_MODELS = ("torch-tiny-llama-cpu", "torch-llama-3-8b-h100-80gb")


def _committed(name: str) -> tuple[Path, Path]:
    return ROOT / f"calibration/records/{name}.jsonl", ROOT / f"calibration/costmodels/{name}.toml"


def _floats(d: Any, key: str = "") -> list[tuple[str, float]]:
    if isinstance(d, dict):
        return [kv for k, v in d.items() for kv in _floats(v, f"{key}.{k}" if key else k)]
    if isinstance(d, list):
        return [kv for i, v in enumerate(d) for kv in _floats(v, f"{key}[{i}]")]
    return [(key, d)] if isinstance(d, float) else []


def _sig_digits(x: float) -> int:
    """Significant digits of ``repr(x)`` (the TOML's spelling)."""
    mantissa = repr(abs(x)).lower().split("e")[0].replace(".", "").lstrip("0").rstrip("0")
    return max(len(mantissa), 1)


# --- the comparison ------------------------------------------------------------------


def _with(text: str, key: str, value: str) -> str:
    """``text`` with the first ``key = ...`` line's value replaced."""
    out, n = re.subn(rf"(?m)^{re.escape(key)} = .*$", f"{key} = {value}", text, count=1)
    assert n == 1, key
    return out


TINY_TOML = _committed("torch-tiny-llama-cpu")[1].read_text()


def test_identical_texts_are_identical() -> None:
    rep = compare_costmodels(TINY_TOML, TINY_TOML)
    assert rep.identical and rep.ok and rep.differences == []
    assert rep.summary() == "identical bytes"


def test_coefficient_within_relative_tolerance_passes_and_is_reported() -> None:
    old = tomllib.loads(TINY_TOML)["gpu"]["cpu"]["per_seq_s"]
    new = old * (1 + COEFFICIENT_RTOL / 4)
    rep = compare_costmodels(TINY_TOML, _with(TINY_TOML, "per_seq_s", repr(new)))
    assert not rep.identical and rep.ok
    (d,) = rep.differences
    assert d.key == "gpu.cpu.per_seq_s" and d.committed == old and d.refit == new
    assert d.rel_diff == pytest.approx(COEFFICIENT_RTOL / 4 / (1 + COEFFICIENT_RTOL / 4))
    assert "gpu.cpu.per_seq_s" in rep.summary()


def test_coefficient_outside_tolerance_fails_naming_both_values() -> None:
    old = tomllib.loads(TINY_TOML)["gpu"]["cpu"]["per_seq_s"]
    new = old * 1.01
    rep = compare_costmodels(TINY_TOML, _with(TINY_TOML, "per_seq_s", repr(new)))
    assert not rep.ok
    (d,) = rep.failures
    line = d.describe()
    assert "gpu.cpu.per_seq_s" in line and f"{old:.7g}" in line and f"{new:.7g}" in line
    assert "relative difference 9.90e-03" in line and f"relative {COEFFICIENT_RTOL:g}" in line
    assert "OUTSIDE" in line


def test_validation_error_uses_the_absolute_tolerance() -> None:
    mape = tomllib.loads(TINY_TOML)["validation"]["random_split"]["mape"]
    near = compare_costmodels(TINY_TOML, _with(TINY_TOML, "mape", repr(mape + METRIC_ATOL / 2)))
    far = compare_costmodels(TINY_TOML, _with(TINY_TOML, "mape", repr(mape + 2 * METRIC_ATOL)))
    assert near.ok and not far.ok
    assert far.failures[0].key == "validation.random_split.mape"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sha256", '"' + "0" * 64 + '"'),  # other records
        ("samples", "30"),  # a count
        ("max_nfev", "100"),  # a fit option
        ("name", '"other"'),
        ("holdout_fraction", "0.2000001"),  # a float outside [gpu] / the errors: exact
    ],
)
def test_everything_else_must_be_equal(key: str, value: str) -> None:
    rep = compare_costmodels(TINY_TOML, _with(TINY_TOML, key, value))
    assert not rep.ok
    assert rep.failures[0].tolerance == "exact"


def test_missing_keys_and_list_lengths_fail() -> None:
    dropped = TINY_TOML.replace("per_seq_s = ", "per_seq_s_renamed = ", 1)
    rep = compare_costmodels(TINY_TOML, dropped)
    assert {d.key for d in rep.failures} == {"gpu.cpu.per_seq_s", "gpu.cpu.per_seq_s_renamed"}
    longer = TINY_TOML.replace("throughput = [1.0]", "throughput = [1.0, 1.0]", 1)
    assert any("(length)" in d.key for d in compare_costmodels(TINY_TOML, longer).failures)


def test_nan_errors_compare_equal() -> None:
    text = _with(TINY_TOML, "mape", "nan")
    assert compare_costmodels(text, text + "\n").ok


# --- the fit's rounding and the replay command ----------------------------------------


def test_whole_iteration_fit_rounds_to_the_stated_digits(tmp_path: Path) -> None:
    records, _ = _committed("torch-tiny-llama-cpu")
    gpu = tomllib.loads(fit_files([records], "t"))["gpu"]
    floats = _floats(gpu)
    assert len(floats) > 20
    too_long = [(k, v) for k, v in floats if _sig_digits(v) > ITERATION_FIT_DIGITS]
    assert not too_long, too_long[:3]


def test_replay_check_reports_each_differing_coefficient(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records, committed = _committed("torch-tiny-llama-cpu")
    old = tomllib.loads(committed.read_text())["gpu"]["cpu"]["iteration_s"]
    out = tmp_path / committed.name
    # one coefficient nudged by a tenth of the tolerance: the same model
    nudged = old * (1 + COEFFICIENT_RTOL / 10)
    out.write_text(_with(committed.read_text(), "iteration_s", repr(nudged)))
    assert cli("replay", str(records), "-o", str(out), "--check") == 0
    text = capsys.readouterr().out
    assert "same within tolerance" in text and "gpu.cpu.iteration_s" in text
    assert f"relative {COEFFICIENT_RTOL:g}" in text
    # by 1%: a different model, reported with both values and the tolerance
    moved = old * 1.01
    out.write_text(_with(committed.read_text(), "iteration_s", repr(moved)))
    assert cli("replay", str(records), "-o", str(out), "--check") == 1
    err = capsys.readouterr().err
    assert "1 of 1 differing values outside tolerance" in err
    assert f"gpu.cpu.iteration_s: committed {moved:.7g}, refit {old:.7g}" in err
    assert "relative difference 9.90e-03" in err
    assert out.read_text() == _with(committed.read_text(), "iteration_s", repr(moved))


def test_replay_check_of_a_missing_file_fails(tmp_path: Path) -> None:
    records, _ = _committed("torch-tiny-llama-cpu")
    assert cli("replay", str(records), "-o", str(tmp_path / "none.toml"), "--check") == 1
    assert not (tmp_path / "none.toml").exists()


# --- other BLAS kernels and SIMD paths ------------------------------------------------

#: Runs ``replay --check`` of each committed whole-iteration model in one process and
#: prints the OpenBLAS core numpy loaded (when its bundled OpenBLAS says).
_CHECK_SCRIPT = r"""
import ctypes, glob, os, sys
import numpy
from sim.calibration.harness_cli import main

core = "unknown"
libs = os.path.join(os.path.dirname(os.path.dirname(numpy.__file__)), "numpy.libs")
for lib in glob.glob(os.path.join(libs, "*openblas*")):
    for fn in ("scipy_openblas_get_corename64_", "openblas_get_corename64_",
               "scipy_openblas_get_corename", "openblas_get_corename"):
        try:
            f = getattr(ctypes.CDLL(lib), fn)
        except (AttributeError, OSError):
            continue
        f.restype = ctypes.c_char_p
        core = f().decode()
        break
print("CORE", core)
rc = 0
for records, toml in zip(sys.argv[1::2], sys.argv[2::2]):
    rc |= main(["replay", records, "-o", toml, "--check"])
sys.exit(rc)
"""


def _other_settings() -> dict[str, str]:
    """An ``OPENBLAS_CORETYPE`` every CPU of this architecture runs, other than the one
    OpenBLAS picks by itself, and numpy's dispatched SIMD turned off."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        env = {"OPENBLAS_CORETYPE": "Prescott"}  # SSE3 kernels
        try:
            from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
        except ImportError:
            return env
        off = [f for f in ("X86_V4", "X86_V3") if f in __cpu_dispatch__ and __cpu_features__.get(f)]
        if off:
            env["NPY_DISABLE_CPU_FEATURES"] = " ".join(off)
        return env
    if machine in ("aarch64", "arm64"):
        return {"OPENBLAS_CORETYPE": "ARMV8"}
    pytest.skip(f"no known alternative OPENBLAS_CORETYPE for {machine}")


def test_committed_whole_iteration_fits_replay_under_two_openblas_coretypes(
    tmp_path: Path,
) -> None:
    argv: list[str] = []
    for name in TORCH_MODELS:
        records, committed = _committed(name)
        copy = tmp_path / committed.name
        copy.write_bytes(committed.read_bytes())
        argv += [str(records), str(copy)]
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")
    }
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), base.get("PYTHONPATH", "")])
    cores = []
    for extra in ({}, _other_settings()):
        proc = subprocess.run(
            [sys.executable, "-c", _CHECK_SCRIPT, *argv],
            env={**base, **extra},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"{extra}: {proc.stdout}\n{proc.stderr}"
        assert proc.stdout.count(": the rebuild from ") == len(TORCH_MODELS), proc.stdout
        cores.append(proc.stdout.split("CORE ", 1)[1].split()[0])
    if "unknown" not in cores:
        # the second run really used other kernels (else the test proves nothing)
        assert cores[0] != cores[1], cores
    # and the check is not vacuous: both files are unchanged, and nothing was written
    for name in TORCH_MODELS:
        assert (tmp_path / f"{name}.toml").read_bytes() == _committed(name)[1].read_bytes()


def test_a_cpu_fit_does_not_depend_on_what_was_imported_first() -> None:
    """``cpu`` records are fitted against the nominal CPU spec even in a process that
    never imported the harness (which registers ``cpu`` as a device)."""
    records, committed = _committed("torch-tiny-llama-cpu")
    script = (
        "import sys\n"
        "from sim.calibration.fit import fit_files\n"
        "from sim.specs.hardware import GPUS\n"
        "assert 'cpu' not in GPUS\n"
        "sys.stdout.write(fit_files([sys.argv[1]], 'torch-tiny-llama-cpu'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(records)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rep = compare_costmodels(committed.read_text(), proc.stdout)
    assert rep.ok, rep.lines()
