"""Using a fitted cost model: one fitted on the CPU says, in one line, what it was
fitted for and how it can be used, instead of "no parameters for GPU 'a100-80gb'", and
is never scaled to a GPU by datasheet ratios."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.calibration.engines.devices import register_cpu
from sim.cli.main import main
from sim.common.errors import ConfigError
from sim.costmodel.fitted import load_costmodel
from sim.specs.hardware import GPUS

ROOT = Path(__file__).resolve().parents[1]
CPU_MODEL = ROOT / "calibration/costmodels/torch-tiny-llama-cpu.toml"
H100_MODEL = ROOT / "calibration/costmodels/torch-llama-3-8b-h100-80gb.toml"


def test_run_with_a_cpu_fit_says_what_it_was_fitted_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        ["run", "--costmodel", str(CPU_MODEL), "--quiet", "--no-html", "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "has parameters only for cpu, fitted from torch-tiny-llama-cpu.jsonl" in err
    assert "not for GPU 'a100-80gb'" in err
    assert "agentsim calibrate validate --costmodel" in err and "calibration/README.md" in err
    assert not (tmp_path / "r").exists()


def test_a_cpu_fit_is_never_scaled_to_a_gpu() -> None:
    register_cpu()  # as every calibrate command does: "cpu" is then a known device
    model = load_costmodel(CPU_MODEL)
    with pytest.raises(ConfigError, match="a CPU fit is not scaled to a GPU"):
        model.params_for(GPUS["a100-80gb"])
    assert model.params_for(GPUS["cpu"]) is model.gpus["cpu"]


def test_a_gpu_fit_still_scales_to_another_gpu() -> None:
    model = load_costmodel(H100_MODEL)
    a100 = model.params_for(GPUS["a100-80gb"])
    h100 = model.gpus["h100-80gb"]
    ratio = GPUS["a100-80gb"].peak_flops / GPUS["h100-80gb"].peak_flops
    assert a100.gemm["mlp_up_proj"].peak_flops == pytest.approx(
        h100.gemm["mlp_up_proj"].peak_flops * ratio
    )
    assert "scaled from h100-80gb" in a100.origin


def test_unknown_gpu_keys_are_named(tmp_path: Path) -> None:
    text = CPU_MODEL.read_text().replace("[gpu.cpu", "[gpu.tpu-v9")
    path = tmp_path / "tpu.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"tpu-v9: not in agentsim's GPU list"):
        load_costmodel(path).params_for(GPUS["a100-80gb"])


def test_record_creates_the_output_directory_first(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from tests.test_calibration_harness import record_tiny

    grid = tmp_path / "g.toml"
    grid.write_text("warmup = 0\nrepeats = 1\n[decode]\nbatch_sizes = [1]\ncontext_lens = [16]\n")
    out = tmp_path / "results" / "calib" / "r.jsonl"
    assert record_tiny(grid, out) == 0
    from sim.calibration.records import read_records

    assert len(read_records(out)[0].samples) == 1


def test_record_into_an_impossible_directory_fails_before_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    rc = main(
        ["calibrate", "record", "--engine", "torch", "--model", "llama-3-8b", "--grid",
         str(ROOT / "examples/calibration/tiny-cpu.toml"), "-o", str(tmp_path / "file" / "r.jsonl")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "cannot create it" in err and "not a directory" in err
    assert "Traceback" not in err
