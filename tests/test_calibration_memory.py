"""``calibrate record --engine torch`` refuses, in one line and before building
anything, a model and grid that would not fit in memory (Llama-3-8B in float32 on a
laptop CPU was killed at 10 GB), and says what would fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sim.calibration.engines import memory, resolve_model_config
from sim.calibration.grid import IterationShape, load_grid
from sim.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
TINY_GRID = str(ROOT / "examples/calibration/tiny-cpu.toml")


def test_llama3_8b_weights_are_its_8_03b_parameters() -> None:
    _, cfg = resolve_model_config("llama-3-8b")
    est = memory.estimate(cfg, [IterationShape(1, 16, 0, 0)], "float32")
    # embeddings + untied LM head 2 x 128256 x 4096; per layer Q,O 2 x 4096^2, K,V
    # 2 x 4096 x 1024, MLP 3 x 4096 x 14336, two norms; final norm 4096
    per_layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    params = 2 * 128256 * 4096 + 32 * per_layer + 4096
    assert params == 8_030_261_248
    assert est.weights == 4 * params and est.weights_per_layer == 4 * per_layer
    assert memory.estimate(cfg, [IterationShape(1, 16, 0, 0)], "bfloat16").weights == 2 * params
    assert memory.estimate(cfg, [IterationShape(1, 16, 0, 0)], "float32", 2).weights == 4 * (
        2 * 128256 * 4096 + 2 * per_layer + 4096
    )


def test_kv_cache_is_that_of_the_largest_shape() -> None:
    _, cfg = resolve_model_config("llama-3-8b")
    shapes = [IterationShape(0, 0, 32, 1024), IterationShape(4, 256, 0, 0)]
    est = memory.estimate(cfg, shapes, "float32")
    # decode pre-fills batch x (context + 1) slots of K and V, 8 KV heads x 128 each
    per_layer = 32 * 1025 * 2 * 8 * 128 * 4
    assert est.kv_per_layer == per_layer and est.kv_cache == 32 * per_layer
    mixed = memory.estimate(cfg, [IterationShape(1, 128, 8, 256)], "float32")
    assert mixed.kv_per_layer == (128 + 8 * 257) * 2 * 8 * 128 * 4


class _Built(Exception):
    """Raised by the stub engine: the model would have been built."""


@pytest.fixture
def stub_engine(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    from sim.calibration.engines import torch_engine

    built: list[Any] = []

    def fake(cfg: Any) -> None:
        built.append(cfg)
        raise _Built

    monkeypatch.setattr(torch_engine, "TorchEngine", fake)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10 * 10**9)
    return built


def _record(tmp_path: Path, *extra: str) -> int:
    return main(
        [
            "calibrate", "record", "--engine", "torch", "--model", "llama-3-8b",
            "--grid", TINY_GRID, "--device", "cpu", "-o", str(tmp_path / "my.jsonl"), *extra,
        ]
    )  # fmt: skip


def test_full_8b_in_fp32_on_a_10gb_machine_is_refused_before_building(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stub_engine: list[Any]
) -> None:
    assert _record(tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "llama-3-8b in float32 with 32 layers needs about 42" in err
    assert "but 10.0 GB is available" in err
    # what fits in 85% of 10 GB: (8.5 - 4.2 embeddings/head - 1.1 runtime - 0.3) / 1.14 per layer
    assert "--layers 2 (about" in err
    assert "--model examples/calibration/tiny-llama/config.json" in err
    assert stub_engine == []
    assert not (tmp_path / "my.jsonl").exists()


def test_what_the_error_suggests_gets_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stub_engine: list[Any]
) -> None:
    with pytest.raises(_Built):
        _record(tmp_path, "--layers", "2")
    assert stub_engine[-1].layers == 2
    with pytest.raises(_Built):
        _record(tmp_path, "--skip-memory-check")
    assert stub_engine[-1].layers is None
    tiny = str(ROOT / memory.TINY_MODEL)
    with pytest.raises(_Built):
        main(["calibrate", "record", "--engine", "torch", "--model", tiny, "--grid", TINY_GRID,
              "--device", "cpu", "-o", str(tmp_path / "t.jsonl")])  # fmt: skip


def test_unknown_free_memory_checks_nothing() -> None:
    _, cfg = resolve_model_config("llama-3-8b")
    shapes = load_grid(TINY_GRID).shapes
    est = memory.check_fits("llama-3-8b", cfg, shapes, "float32", None, "cpu", None)
    assert est.total > 40e9


def test_a_cgroup_limit_caps_the_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"/sys/fs/cgroup/memory.max": 2 * 10**9, "/sys/fs/cgroup/memory.current": 5 * 10**8}
    monkeypatch.setattr(memory, "_read_int", lambda path: files.get(path))
    avail = memory.available_cpu_bytes()
    assert avail is not None and avail <= 15 * 10**8
