"""The fitted cost model: default loading, operator sums, monotonicity, vectorised
decode, errors for bad shapes, transfer constants, and the CLI commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cli.main import main
from sim.common.errors import ConfigError
from sim.costmodel.base import (
    BatchShape,
    ReplicaHardware,
    RooflineCostModel,
)
from sim.costmodel.fitted import (
    Curve,
    FittedIterationModel,
    Surface,
    default_costmodel_path,
    default_fitted_costmodel,
    predict_op,
)
from sim.specs.hardware import get_gpu
from sim.specs.models import get_model

ROOT = Path(__file__).resolve().parents[1]


def _hw(
    model: str = "llama-2-70b", gpu: str = "a100-80gb", tp: int = 4, link: str = "nvlink"
) -> ReplicaHardware:
    g = get_gpu(gpu)
    bw = g.nvlink_bandwidth if link == "nvlink" else g.pcie_bandwidth
    return ReplicaHardware(
        get_model(model), g, tp=tp, allreduce_bandwidth=bw, allreduce_latency=5e-6, link=link
    )


def _cfg(name: str) -> dict[str, object]:
    m = get_model(name)
    return {
        "hidden_size": m.hidden_size,
        "num_attention_heads": m.num_heads,
        "num_key_value_heads": m.num_kv_heads,
        "head_dim": m.head_dim,
        "intermediate_size": m.intermediate_size,
        "vocab_size": m.vocab_size,
    }


def test_default_is_the_committed_fitted_model_with_validation() -> None:
    # the operator-level fitted model (no longer the simulator's default: the per-GPU
    # defaults are the serving-calibrated step model, tests/test_serving.py)
    cm = default_fitted_costmodel()
    d = cm.describe()
    assert d["name"] == "vidur-a100" and "vidur-a100.jsonl.gz" in d["source"]
    assert d["validation"]["random_split"]["mape"] > 0
    assert {v["eval_model"] for v in d["validation"]["leave_one_model_out"]} == {
        "meta-llama/Llama-2-7b-hf",
        "meta-llama/Llama-2-70b-hf",
    }
    # the package-data copy is the committed model
    assert (
        default_costmodel_path().read_bytes()
        == (ROOT / "calibration/costmodels/vidur-a100.toml").read_bytes()
    )


@pytest.mark.parametrize("ctx", [1, 700, 4000])
def test_one_token_decode_is_the_sum_of_its_operators(ctx: int) -> None:
    hw = _hw()
    it = default_fitted_costmodel().for_replica(hw)
    p = default_fitted_costmodel().gpus["a100-80gb"]
    cfg, tp, m = _cfg("llama-2-70b"), 4, hw.model
    one = {"num_tokens": 1.0}
    per_layer = sum(
        predict_op(p, cfg, op, tp, one)
        for op in (
            "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
            "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj",
        )
    )  # fmt: skip
    per_layer += 2 * predict_op(p, cfg, "add", tp, one)
    per_layer += predict_op(
        p, cfg, "attn_decode", tp, {"batch_size": 1.0, "kv_cache_size": float(ctx)}
    )
    ar = {"size_bytes": float(m.hidden_size * 2), "num_workers": 4.0, "devices_per_node": 4.0}
    per_layer += 2 * predict_op(p, cfg, "all_reduce", tp, ar)
    head_cfg = {
        **cfg,
        "intermediate_size": m.vocab_size / 2,
    }  # gated up-proj: N = 2 I / tp = vocab / tp
    total = (
        m.num_layers * per_layer
        + predict_op(p, cfg, "emb", tp, one)
        + predict_op(p, cfg, "input_layernorm", tp, one)  # final norm
        + predict_op(p, head_cfg, "mlp_up_proj", tp, one)  # LM head
        + p.iteration_s
        + p.per_seq_s
    )
    assert it.iteration_time(BatchShape(num_decode=1, decode_context_sum=ctx)) == pytest.approx(
        total, rel=1e-9
    )


REPLICAS = [
    ("llama-2-70b", "a100-80gb", 8),
    ("llama-3-8b", "a100-80gb", 1),
    ("mixtral-8x7b", "h100-80gb", 2),
]


@settings(max_examples=60, deadline=None)
@given(
    rep=st.sampled_from(REPLICAS),
    prefill=st.lists(st.tuples(st.integers(1, 4096), st.integers(0, 8192)), max_size=3),
    num_decode=st.integers(0, 256),
    ctx=st.integers(0, 4096),
    extra_tokens=st.integers(1, 512),
    extra_ctx=st.integers(1, 100_000),
    joining_ctx=st.integers(0, 4096),
)
def test_more_tokens_or_context_never_predicts_less_time(
    rep: tuple[str, str, int],
    prefill: list[tuple[int, int]],
    num_decode: int,
    ctx: int,
    extra_tokens: int,
    extra_ctx: int,
    joining_ctx: int,
) -> None:
    it = default_fitted_costmodel().for_replica(_hw(rep[0], rep[1], rep[2]))
    new = tuple(p[0] for p in prefill)
    old = tuple(p[1] for p in prefill)
    base = BatchShape(new, old, num_decode, num_decode * ctx)
    t = it.iteration_time(base)
    assert t >= 0.0
    assert it.iteration_time(BatchShape(new, old, num_decode + 1, num_decode * ctx + ctx)) >= t
    # a joining sequence with any context, shorter than the batch's mean included
    assert (
        it.iteration_time(BatchShape(new, old, num_decode + 1, num_decode * ctx + joining_ctx)) >= t
    )
    if num_decode:
        assert (
            it.iteration_time(BatchShape(new, old, num_decode, num_decode * ctx + extra_ctx)) >= t
        )
    if prefill:
        longer = (new[0] + extra_tokens, *new[1:])
        assert it.iteration_time(BatchShape(longer, old, num_decode, num_decode * ctx)) >= t
        deeper = (old[0] + extra_ctx, *old[1:])
        assert it.iteration_time(BatchShape(new, deeper, num_decode, num_decode * ctx)) >= t
    assert (
        it.iteration_time(BatchShape((*new, extra_tokens), (*old, 0), num_decode, num_decode * ctx))
        >= t
    )


@pytest.mark.parametrize("rep", REPLICAS)
def test_decode_times_matches_iteration_time(rep: tuple[str, str, int]) -> None:
    it = default_fitted_costmodel().for_replica(_hw(*rep))
    for n in (1, 7, 64):
        sums = np.array([0, 1, 100, n * 1000, n * 4096, n * 30000], dtype=np.float64)
        vec = it.decode_times(n, sums)
        one = [it.iteration_time(BatchShape(num_decode=n, decode_context_sum=int(s))) for s in sums]
        np.testing.assert_allclose(vec, one, rtol=1e-12)
        # the engine prices short spans with decode_time (the step-by-step float
        # exactly) and long ones with decode_times (numpy's log/exp: within an ulp)
        assert [it.decode_time(n, int(s)) for s in sums] == one
        long = np.arange(1, 40, dtype=np.float64) * n * 997
        scalar = [it.decode_time(n, int(s)) for s in long]
        np.testing.assert_allclose(it.decode_times(n, long), scalar, rtol=1e-14)


@pytest.mark.parametrize("rep", REPLICAS)
def test_memoised_token_part_is_breakdowns_sum(rep: tuple[str, str, int]) -> None:
    """The per-token memo (_linear) adds breakdown()'s token-dependent terms exactly."""
    it = default_fitted_costmodel().for_replica(_hw(*rep))
    assert isinstance(it, FittedIterationModel)
    for tok in (1, 3, 128, 1000, 4097, 20000):
        b = it.breakdown(BatchShape(num_decode=tok))
        assert it._linear(tok) == (
            b["gemm"] + b["elementwise"] + b["all_reduce"] + b["emb"] + b["pp_transfer"]
        )


def test_roofline_decode_time_is_an_element_of_decode_times() -> None:
    it = RooflineCostModel().for_replica(_hw())
    sums = np.arange(0, 50, dtype=np.float64) * 4099
    assert [it.decode_time(8, int(s)) for s in sums] == it.decode_times(8, sums).tolist()


def test_bad_shapes_and_tp_give_clear_errors() -> None:
    cm = default_fitted_costmodel()
    with pytest.raises(ConfigError, match="TP=3 does not divide num_attention_heads=32"):
        cm.for_replica(_hw("llama-2-7b", tp=3))
    it = cm.for_replica(_hw())
    with pytest.raises(ConfigError, match="negative"):
        it.iteration_time(BatchShape(prefill_tokens=(-5,), prefill_context=(0,), num_decode=1))
    assert isinstance(it, FittedIterationModel)
    with pytest.raises(ConfigError, match="negative"):
        it.breakdown(BatchShape(num_decode=-1))


def test_unprofiled_gpu_and_link_are_priced_from_datasheets() -> None:
    cm = default_fitted_costmodel()
    b = BatchShape(prefill_tokens=(2048,), prefill_context=(0,))
    a100 = cm.for_replica(_hw("llama-3-70b", "a100-80gb", 8)).iteration_time(b)
    h100 = cm.for_replica(_hw("llama-3-70b", "h100-80gb", 8)).iteration_time(b)
    pcie = cm.for_replica(_hw("llama-3-70b", "a100-80gb", 8, link="pcie")).iteration_time(b)
    assert h100 < a100 < pcie


def test_curve_envelope_keeps_time_monotone() -> None:
    c = Curve.from_table([1.0, 2.0, 4.0], [1.0, 8.0, 8.0])  # slope 3 clipped to 1
    assert c.time(2.0) >= c.time(1.0) and c.time(4.0) >= c.time(2.0)
    assert c.time(0.5) == pytest.approx(c.time(1.0))  # latency floor below the first knot


def test_surface_envelope_keeps_time_monotone() -> None:
    # a dip in the table is lifted by the cumulative maximum along both axes
    s = Surface.from_table([1.0, 4.0], [1.0, 2.0, 4.0], [[2.0, 1.0, 3.0], [1.5, 5.0, 6.0]])
    assert s.time(1.0, 2.0) == pytest.approx(2.0)
    assert s.time(4.0, 1.0) == pytest.approx(2.0)
    for x in (0.5, 1.0, 2.0, 4.0, 8.0):
        ts = [s.time(x, z) for z in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0)]
        assert ts == sorted(ts)
    for z in (0.5, 1.0, 3.0, 8.0):
        ts = [s.time(x, z) for x in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)]
        assert ts == sorted(ts)
    assert s.time(8.0, 4.0) == pytest.approx(2.0 * s.time(4.0, 4.0))  # linear above sizes
    xs, zs = np.array([0.7, 1.3, 3.0, 9.0]), np.array([0.9, 1.7, 3.9, 5.0])
    np.testing.assert_allclose(
        s.times(xs, zs), [s.time(x, z) for x, z in zip(xs, zs, strict=True)], rtol=1e-12
    )


def test_committed_model_prices_kernels_by_shape() -> None:
    p = default_fitted_costmodel().gpus["a100-80gb"]
    # GEMM, element-wise and prefill kernels have (size, width) surfaces; decode keeps
    # the roofline curve (see FitOptions.decode_surface)
    assert all(m.surface is not None for m in p.gemm.values())
    assert all(m.surface is not None for m in p.elementwise.values())
    assert p.attn_prefill.surface is not None and p.attn_decode.surface is None
    # a shape outside the measured widths is still priced (roofline curve caps it)
    cfg = {**_cfg("llama-2-7b"), "hidden_size": 1024, "intermediate_size": 2048}
    one, big = {"num_tokens": 1.0}, {"num_tokens": 512.0}
    small = predict_op(p, cfg, "mlp_up_proj", 8, one)
    assert 0 < small <= predict_op(p, _cfg("llama-2-7b"), "mlp_up_proj", 8, one)
    assert predict_op(p, cfg, "mlp_up_proj", 8, big) >= small


def test_cli_costmodel_predict(tmp_path: Path) -> None:
    shapes = tmp_path / "in.csv"
    shapes.write_text(
        "num_prefill_seqs,prefill_len,num_decode_seqs,decode_context_len\n0,0,32,1024\n1,512,0,0\n"
    )
    out = tmp_path / "out.csv"
    assert (
        main(
            [
                "costmodel",
                "predict",
                "--model",
                "meta-llama/Llama-2-70b-hf",
                "--gpu",
                "a100-80gb",
                "--tp",
                "4",
                "--shapes",
                str(shapes),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    # predict prices with the GPU's default, the model `agentsim run` uses
    from sim.costmodel.loader import resolve_cost_model

    it = resolve_cost_model(None, "a100-80gb").for_replica(_hw())
    assert float(rows[0]["iteration_s"]) == it.iteration_time(
        BatchShape(num_decode=32, decode_context_sum=32 * 1024)
    )
    assert float(rows[1]["iteration_s"]) > 0
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({**_cfg("mistral-7b"), "num_hidden_layers": 32}))
    assert (
        main(
            [
                "costmodel",
                "predict",
                "--model-config",
                str(cfg),
                "--tp",
                "2",
                "--shapes",
                str(shapes),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    shapes.write_text(
        "num_prefill_seqs,prefill_len,num_decode_seqs,decode_context_len\n0,0,-3,10\n"
    )
    assert (
        main(
            [
                "costmodel",
                "predict",
                "--model",
                "llama-2-7b",
                "--shapes",
                str(shapes),
                "-o",
                str(out),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "costmodel",
                "predict",
                "--model",
                "llama-2-7b",
                "--tp",
                "3",
                "--shapes",
                str(shapes),
                "-o",
                str(out),
            ]
        )
        == 2
    )


def test_cli_import_fit_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = ROOT.parent / "shared/data/vidur-a100"
    records = ROOT / "calibration/records/vidur-a100.jsonl.gz"
    if not records.exists():
        pytest.skip("committed records missing")
    # validate the committed default on its own records (JSON keys of the contract)
    assert main(["calibrate", "validate", str(records), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert {"mape", "p90_ape", "n", "by_operator"} <= set(rep)
    assert rep["by_operator"]["mlp_up_proj"]["n"] == 2 * 1044
    if src.is_dir():
        out = tmp_path / "v.jsonl.gz"
        assert main(["calibrate", "import", "--from", "vidur", str(src), "-o", str(out)]) == 0
        assert out.read_bytes() == records.read_bytes()


def test_surface_point_lookup_equals_row_interpolation() -> None:
    """Surface.time interpolates only the two width columns it needs; it must equal
    interpolating the whole row first, bit for bit (spans and steps must agree)."""
    import math
    import random

    from sim.costmodel.fitted import Surface

    sf = Surface.from_table(
        [16.0, 64.0, 256.0, 1024.0],
        [1.0, 10.0, 100.0],
        [[1e-5, 2e-5, 5e-5], [2e-5, 3e-5, 9e-5], [4e-5, 8e-5, 2e-4], [9e-5, 2e-4, 6e-4]],
    )
    rng = random.Random(0)
    for _ in range(5000):
        x = math.exp(rng.uniform(1.0, 8.0))
        w = math.exp(rng.uniform(-1.0, 6.0))
        assert sf.time(x, w) == sf.time_on_row(sf.row(x), w)
