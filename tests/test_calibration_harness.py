"""The calibration harness: grids, the torch engine on CPU end to end, resumable records.

The torch tests run a tiny Llama (2 layers, hidden 128) on CPU: record -> fit ->
validate -> replay (byte-identical on one machine), plus resume, truncated and corrupt record files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from sim.calibration import harness_cli
from sim.calibration.grid import IterationShape, load_grid, parse_grid
from sim.common.errors import AgentsimError, InputError

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "examples/calibration/tiny-llama/config.json")

#: A grid of a dozen shapes: seconds on one CPU thread.
SMALL_GRID = """
warmup = 1
repeats = 3
dtype = "float32"

[prefill]
counts = [1, 2]
lengths = [32, 128, 256]

[decode]
batch_sizes = [1, 8, 32]
context_lens = [64, 512]

[[mixed]]
num_prefill_seqs = 1
prefill_len = 64
num_decode_seqs = 8
decode_context_len = 128
"""


def cli(*argv: str) -> int:
    """Run one harness subcommand as ``agentsim calibrate`` would."""
    p = argparse.ArgumentParser()
    harness_cli.register(p.add_subparsers())
    args = p.parse_args(list(argv))
    return int(args.func(args))


def record_tiny(grid: Path, out: Path, *extra: str) -> int:
    """``calibrate record`` of the tiny Llama with the torch engine on CPU."""
    return cli(
        "record", "--engine", "torch", "--device", "cpu", "--model", TINY, "--grid", str(grid),
        *extra, "-o", str(out),
    )  # fmt: skip


# --- grids --------------------------------------------------------------------------


def test_grid_expands_pairs_and_caps() -> None:
    g = parse_grid(
        {
            "prefill": {"counts": [1, 4], "lengths": [128, 512], "max_tokens": 1024},
            "decode": {"batch_sizes": [2], "context_lens": [100, 200]},
            "mixed": [
                {
                    "num_prefill_seqs": 1,
                    "prefill_len": 8,
                    "num_decode_seqs": 2,
                    "decode_context_len": 9,
                }
            ],
        }
    )
    assert g.shapes == (
        IterationShape(1, 128, 0, 0),
        IterationShape(1, 512, 0, 0),
        IterationShape(4, 128, 0, 0),
        IterationShape(0, 0, 2, 100),
        IterationShape(0, 0, 2, 200),
        IterationShape(1, 8, 2, 9),
    )
    assert (g.warmup, g.repeats, g.dtype, g.tp, g.layers) == (2, 5, "auto", (1,), None)
    assert g.max_context == 512


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"prefill": {"counts": [1], "lengths": [0]}}, "prefill.lengths"),
        ({"prefill": {"counts": [1]}}, "prefill.lengths"),
        ({"decode": {"batch_sizes": [1], "context_lens": [8]}, "repeats": 0}, "repeats"),
        ({"decode": {"batch_sizes": [1], "context_lens": [8]}, "dtype": "int4"}, "dtype"),
        ({"decode": {"batch_sizes": [1], "context_lens": [8]}, "bogus": 1}, "bogus"),
        ({"mixed": [{"num_prefill_seqs": 1, "prefill_len": 8}]}, "mixed[0]"),
        ({}, "no shapes"),
    ],
)
def test_grid_errors_name_the_key(doc: dict, where: str) -> None:
    with pytest.raises(InputError, match=where.replace("[", r"\[").replace("]", r"\]")):
        parse_grid(doc, "g.toml")


def test_example_grids_load() -> None:
    for path in sorted((ROOT / "examples/calibration").glob("*.toml")):
        assert load_grid(path).shapes


def test_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.calibration.engines import require

    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(AgentsimError) as e:
        require("torch")
    assert "pip install 'agentsim[calibrate]'" in str(e.value)
    assert "\n" not in str(e.value)


# --- the torch engine on CPU, end to end --------------------------------------------


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("harness")
    grid = d / "grid.toml"
    grid.write_text(SMALL_GRID)
    out = d / "tiny.jsonl"
    assert record_tiny(grid, out) == 0
    return grid, out


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_record_header_and_samples(recorded: tuple[Path, Path]) -> None:
    grid, out = recorded
    lines = _lines(out)
    h = lines[0]
    assert h["type"] == "header" and h["engine"] == "torch" and h["device"] == "cpu"
    assert h["gpu"] == "cpu" and h["tp"] == 1 and h["layers_measured"] is None
    assert h["model"] == "tiny-llama" and h["model_config"]["hidden_size"] == 128
    assert (
        h["dtype"] == "float32"
        and h["torch_version"]
        and h["engine_version"].startswith("transformers")
    )
    assert h["cpu_threads"] == 1
    samples = lines[1:]
    shapes = {IterationShape.from_dict(s["shape"]) for s in samples}
    assert shapes == set(load_grid(grid).shapes)
    for s in samples:
        assert s["op"] == "iteration" and len(s["samples_s"]) == 3
        assert all(0 < t < 5 for t in s["samples_s"])
    # more work takes longer: 2x256 prefill vs 1x32, 32@512 decode vs one sequence.
    # Fastest sample of each shape, and the faster single-sequence decode: a loaded CI
    # machine can stall every repeat of one small shape (1@64 once took 6.5 ms, 5x its
    # usual time, while 1@512 took 1.2 ms)
    by = {IterationShape.from_dict(s["shape"]): min(s["samples_s"]) for s in samples}
    assert by[IterationShape(2, 256, 0, 0)] > by[IterationShape(1, 32, 0, 0)]
    single = min(by[IterationShape(0, 0, 1, 64)], by[IterationShape(0, 0, 1, 512)])
    assert by[IterationShape(0, 0, 32, 512)] > single


def test_record_resumes_without_remeasuring(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    grid, out = recorded
    copy = tmp_path / "r.jsonl"
    copy.write_bytes(out.read_bytes())
    assert record_tiny(grid, copy) == 0
    assert copy.read_bytes() == out.read_bytes()


def test_truncated_tail_loses_only_the_partial_line(
    recorded: tuple[Path, Path], tmp_path: Path
) -> None:
    grid, out = recorded
    text = out.read_text()
    lines = text.splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # crash mid-append
    assert record_tiny(grid, cut) == 0
    new = cut.read_text().splitlines(keepends=True)
    assert new[: len(lines) - 1] == lines[:-1]  # every complete line kept, in place
    assert len(new) == len(lines)  # the lost shape was measured again
    assert json.loads(new[-1])["shape"] == json.loads(lines[-1])["shape"]


def test_corrupt_line_is_a_clear_error_and_changes_nothing(
    recorded: tuple[Path, Path], tmp_path: Path
) -> None:
    grid, out = recorded
    lines = out.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    lines[3] = lines[3][:20] + "\n"
    bad.write_text("".join(lines))
    before = bad.read_bytes()
    with pytest.raises(InputError, match=r"bad\.jsonl:4: not valid JSON"):
        record_tiny(grid, bad)
    assert bad.read_bytes() == before


def test_layers_can_be_reduced_and_the_header_says_so(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    grid = tmp_path / "g.toml"
    grid.write_text("warmup = 0\nrepeats = 1\n[decode]\nbatch_sizes = [1]\ncontext_lens = [16]\n")
    out = tmp_path / "r.jsonl"
    assert record_tiny(grid, out, "--layers", "1") == 0
    h = _lines(out)[0]
    assert h["layers_measured"] == 1 and h["model_config"]["num_hidden_layers"] == 2


def test_torch_engine_rejects_tp(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    grid = tmp_path / "g.toml"
    grid.write_text("tp = [2]\n[decode]\nbatch_sizes = [1]\ncontext_lens = [16]\n")
    with pytest.raises(AgentsimError, match="tp=1 only"):
        record_tiny(grid, tmp_path / "r.jsonl")


def test_fit_validate_replay_byte_identical(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    from sim.calibration.fit import fit_files
    from sim.calibration.records import read_records
    from sim.calibration.validate import rows_of, validate_rows
    from sim.costmodel.fitted import load_costmodel

    _, out = recorded
    records = tmp_path / "tiny-cpu.jsonl"
    records.write_bytes(out.read_bytes())
    cm_path = tmp_path / "tiny-cpu.toml"
    cm_path.write_text(fit_files([records], "tiny-cpu"))
    cm = load_costmodel(cm_path)
    rep = validate_rows(rows_of(read_records(records)), cm.gpus, "a100_dgx")
    assert rep.overall.n == len(read_records(records)[0].samples)
    # ~7% on a quiet machine; a shared CI box adds noise, a broken fit is off by far more
    assert rep.overall.mape < 50.0
    assert cli("replay", str(records), "-o", str(cm_path), "--check") == 0
    before = cm_path.read_bytes()
    assert cli("replay", str(records), "-o", str(cm_path)) == 0
    assert cm_path.read_bytes() == before


# --- committed records and cost models pair by name and replay --------------------
# (the same model within the per-value tolerances of sim.calibration.check: another
# CPU's BLAS moves a fit by ~1e-5, so bytes can differ; see calibration/README.md)


def _operator_fitted(path: Path) -> bool:
    """Fitted from operator or iteration records (no ``kind``).  The serving-calibrated
    ``kind = "vllm-step"`` models are fitted from measured serving runs instead; their
    replay is tests/test_serving.py's check of the committed validation numbers."""
    import tomllib

    return "kind" not in tomllib.loads(path.read_text())


COMMITTED = [
    p for p in sorted((ROOT / "calibration/costmodels").glob("*.toml")) if _operator_fitted(p)
]


@pytest.mark.parametrize("costmodel", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_costmodel_replays_within_tolerance(costmodel: Path, tmp_path: Path) -> None:
    records = sorted((ROOT / "calibration/records").glob(f"{costmodel.stem}.jsonl*"))
    assert records, (
        f"calibration/records/{costmodel.stem}.jsonl is missing (records and cost models pair by name)"
    )
    out = tmp_path / costmodel.name
    out.write_bytes(costmodel.read_bytes())
    assert cli("replay", *map(str, records), "-o", str(out), "--check") == 0
    assert out.read_bytes() == costmodel.read_bytes()


def test_static_decode_reads_kv_heads_without_a_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """The grid's decode skips the all-true mask so SDPA runs with ``enable_gqa``
    (reading the KV heads, as paged attention does, instead of K and V expanded to
    every query head), and gives the same logits as the masked call."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.integrations import sdpa_attention

    from sim.calibration.engines.torch_engine import TorchEngine, TorchEngineConfig, _rewind_one

    masks: list[bool] = []
    real = sdpa_attention.use_gqa_in_sdpa

    def spy(mask: object, key: object, value: object) -> bool:
        masks.append(mask is None)
        return bool(real(mask, key, value))  # type: ignore[arg-type]

    monkeypatch.setattr(sdpa_attention, "use_gqa_in_sdpa", spy)
    eng = TorchEngine(TorchEngineConfig(model=TINY, device="cpu"))
    cache = eng._filled_static_cache(3, 40)
    ids = eng.random_tokens(3, 1)
    pos = torch.full((3, 1), 40, dtype=torch.long)

    def logits() -> object:
        out = eng.model(input_ids=ids, position_ids=pos, use_cache=True, **{eng._cache_kw: cache})
        return out.logits

    with torch.inference_mode():
        fast = logits()
        assert masks and all(masks), "decode over the static cache passed SDPA a mask"
        _rewind_one(cache)
        for layer in cache.layers:
            layer.is_compileable = True  # transformers' default: mask built, K/V expanded
        masks.clear()
        slow = logits()
        assert masks and not any(masks)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)
