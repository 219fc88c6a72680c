"""Serving-level fidelity: the measured-runs reader, the shared-prefix workload, the
vLLM step cost model and ``agentsim validate`` on committed measured rows."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sim.common.errors import InputError
from sim.costmodel.base import BatchShape, ReplicaHardware
from sim.costmodel.loader import resolve_cost_model
from sim.costmodel.vllm_step import (
    StepCostModel,
    StepIterationModel,
    StepParams,
    parse_step_costmodel,
)
from sim.serving.runs import read_runs
from sim.serving.workload import TEMPLATE_TOKENS, build_workload
from sim.specs.hardware import GPUSpec
from sim.specs.models import ModelSpec

DATA = Path(__file__).parent / "data"
ROWS3 = DATA / "serving-3rows.csv"
HEADER = ROWS3.read_text().splitlines()[0]


# --- the runs reader -------------------------------------------------------------


def _write(tmp_path: Path, *lines: str) -> str:
    p = tmp_path / "runs.csv"
    p.write_text("\n".join([HEADER, *lines]) + "\n")
    return str(p)


def _row(**changes: str) -> str:
    cols = HEADER.split(",")
    vals = dict(zip(cols, ROWS3.read_text().splitlines()[1].split(","), strict=True))
    vals.update(changes)
    return ",".join(vals[c] for c in cols)


def test_reader_parses_the_committed_rows() -> None:
    runs = read_runs(ROWS3)
    assert [r.run_id for r in runs] == ["19", "53", "55"]
    r19 = runs[0]
    assert r19.gpu == "h100-80gb" and r19.tp == 1 and r19.max_num_batched_tokens == 2048
    assert r19.stages[0].rate_rps == 6 and r19.stages[0].duration_s == 1200
    assert r19.measured[0].metrics["ttft_mean"] == pytest.approx(0.025999)
    assert runs[2].gpu == "l40s-48gb" and len(runs[2].stages) == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tp": "two"}, "tp"),
        ({"tp": "0"}, "tp"),
        ({"gpu": "TPUv5"}, "gpu"),
        ({"stages": "6-1200"}, "stages"),
        ({"ttft_mean_ms": ""}, "ttft_mean_ms"),
        ({"ttft_mean_ms": "-3"}, "ttft_mean_ms"),
        ({"stage": "3"}, "stage"),
        ({"rate_rps": "7"}, "rate_rps"),
        ({"cpu_kv_offload": "maybe"}, "cpu_kv_offload"),
        ({"gpu_memory_utilization": "1.5"}, "gpu_memory_utilization"),
    ],
)
def test_reader_errors_name_file_line_and_field(tmp_path: Path, change: dict, field: str) -> None:
    path = _write(tmp_path, _row(**change))
    with pytest.raises(InputError) as e:
        read_runs(path)
    assert str(e.value).startswith(f"{path}:2: {field}: ")


def test_reader_rejects_a_run_whose_rows_disagree(tmp_path: Path) -> None:
    path = _write(tmp_path, _row(), _row(stage="all", rate_rps="", tp="2"))
    with pytest.raises(InputError) as e:
        read_runs(path)
    assert str(e.value).startswith(f"{path}:3: tp: ")


def test_reader_missing_column(tmp_path: Path) -> None:
    p = tmp_path / "runs.csv"
    p.write_text("run_id,model\n1,x\n")
    with pytest.raises(InputError, match=r"runs.csv:1: gpu: missing column"):
        read_runs(p)


# --- the workload ----------------------------------------------------------------


def test_shared_prefix_workload_repeats_each_users_prompt() -> None:
    run = read_runs(ROWS3)[0]  # 10 groups x 5 users, 150 + 600 tokens, 6 rps x 1200 s
    sw = build_workload(run, seed=3)
    calls = sw.workload.calls
    assert len(calls) == 6 * 1200
    n_prompts = run.prefix_groups * run.users_per_group
    prompts = {c.prefix_hashes for c in calls}
    assert len(prompts) == n_prompts  # questions are fixed per user, not per request
    for i in range(n_prompts):  # request i and i + P send the same prompt
        assert calls[i].prefix_hashes == calls[i + n_prompts].prefix_hashes
    # the users of a group share the template + system prompt blocks, not the question
    full = (TEMPLATE_TOKENS + run.system_prompt_tokens) // 16
    heads = {p[:full] for p in prompts}
    assert len(heads) == run.prefix_groups
    assert {p[full] for p in prompts}.__len__() == n_prompts
    assert all(c.input_tokens == TEMPLATE_TOKENS + 150 + 600 for c in calls)
    assert all(c.output_tokens == 251 for c in calls)
    t = np.array([c.issue_time_s for c in calls])
    assert np.all(np.diff(t) >= 0) and t[0] >= 0 and t[-1] < 1200


def test_workload_stages_back_to_back_and_deterministic() -> None:
    run = read_runs(ROWS3)[2]  # 2.5 rps x 600 s then 6 rps x 600 s
    a = build_workload(run, seed=1)
    b = build_workload(run, seed=1)
    c = build_workload(run, seed=2)
    assert [x.issue_time_s for x in a.workload.calls] == [x.issue_time_s for x in b.workload.calls]
    assert [x.issue_time_s for x in a.workload.calls] != [x.issue_time_s for x in c.workload.calls]
    assert np.bincount(a.stage_of).tolist() == [1500, 3600]
    t = np.array([x.issue_time_s for x in a.workload.calls])
    assert t[a.stage_of == 0].max() < 600 <= t[a.stage_of == 1].min()
    per_request = build_workload(run, seed=1, questions="per-request")
    assert len({x.prefix_hashes for x in per_request.workload.calls}) == len(
        per_request.workload.calls
    )


# --- the step model: a hand-worked fused step ------------------------------------

GPU = GPUSpec("toy", 80 * 2**30, 1e12, 1e14, 0.0, 32e9, 1.0)
MODEL = ModelSpec("toy", 2, 1024, 8, 8, 128, 4096, 32000)
PARAMS = StepParams(
    bw_eff=1.0,
    gemm_eff=1.0,
    attn_eff=1.0,
    kv_eff=1.0,
    roofline_p=3.0,
    step_s=1e-3,
    layer_s=0.0,
    per_seq_s=1e-5,
    prefill_layer_s=2e-5,
)


def _model() -> StepIterationModel:
    return StepIterationModel(ReplicaHardware(MODEL, GPU), PARAMS)


def _hand_step(tokens: int, seqs: int, prefill: list[tuple[int, int]], ctx_sum: int) -> float:
    """The module docstring's formula, by hand for the toy model (2 layers, fp16)."""
    w = 1024 * (1024 + 2 * 1024) + 1024 * 1024 + 3 * 1024 * 4096  # attn + MLP weights
    tw = 2 * w / 1e12  # weight bytes at 1 TB/s
    tc = 2 * tokens * w / 1e14  # GEMM FLOPs at 100 TFLOP/s
    linear = (tw**3 + tc**3) ** (1 / 3)
    head_w = 32000 * 1024
    head = ((2 * head_w / 1e12) ** 3 + (2 * seqs * head_w / 1e14) ** 3) ** (1 / 3)
    attn = 0.0
    for new, ctx in prefill:
        flops = 4 * 1024 * new * (ctx + (new + 1) / 2)
        kv = (ctx + new) * 2 * 8 * 128 * 2
        attn += 2 * max(flops / 1e14, kv / 1e12)
    attn += 2 * (2 * 8 * 128 * 2) * ctx_sum / 1e12
    over = 1e-3 + 1e-5 * seqs + (2 * 2e-5 if prefill else 0.0)
    return 2 * linear + attn + head + over


def test_fused_step_matches_the_hand_worked_formula() -> None:
    it = _model()
    pre = BatchShape((128,), (0,), 0, 0)
    dec = BatchShape((), (), 54, 54 * 600)
    both = BatchShape((128,), (0,), 54, 54 * 600)
    assert it.iteration_time(pre) == pytest.approx(_hand_step(128, 1, [(128, 0)], 0), rel=1e-12)
    assert it.iteration_time(dec) == pytest.approx(_hand_step(54, 54, [], 54 * 600), rel=1e-12)
    assert it.iteration_time(both) == pytest.approx(
        _hand_step(182, 55, [(128, 0)], 54 * 600), rel=1e-12
    )


def test_fused_step_reads_the_weights_once() -> None:
    it = _model()
    pre = it.iteration_time(BatchShape((128,), (0,), 0, 0))
    dec = it.iteration_time(BatchShape((), (), 54, 54 * 600))
    both = it.iteration_time(BatchShape((128,), (0,), 54, 54 * 600))
    assert max(pre, dec) <= both < pre + dec
    # the shared weight read is what the fused step saves: at least one layer-stack read
    w_read = 2 * 2 * (1024 * 3072 + 1024 * 1024 + 3 * 1024 * 4096) / 1e12
    assert pre + dec - both > 0.5 * w_read


def test_decode_times_equal_iteration_time_elementwise() -> None:
    cm = StepCostModel(PARAMS)
    moe = ModelSpec("toy-moe", 2, 1024, 8, 2, 128, 2048, 32000, num_experts=8, experts_per_token=2)
    for spec in (MODEL, moe):
        it = cm.for_replica(
            ReplicaHardware(spec, GPU, tp=2, allreduce_bandwidth=1e11, link="nvlink")
        )
        for n in (1, 7, 54, 128):
            sums = np.array([0, n * 10, n * 600, n * 4000], dtype=np.float64)
            vec = it.decode_times(n, sums)
            for s, v in zip(sums, vec, strict=True):
                assert v == it.iteration_time(BatchShape((), (), n, int(s)))
                assert v == it.decode_time(n, s)


def test_moe_step_reads_only_touched_experts() -> None:
    moe = ModelSpec("toy-moe", 2, 1024, 8, 8, 128, 2048, 32000, num_experts=8, experts_per_token=2)
    it = StepIterationModel(ReplicaHardware(moe, GPU), PARAMS)
    one, many = it.linear_layer(1), it.linear_layer(64)
    dense_all = StepIterationModel(
        ReplicaHardware(
            replace(moe, num_experts=1, experts_per_token=1, intermediate_size=8 * 2048), GPU
        ),
        PARAMS,
    ).linear_layer(1)
    assert one < many <= dense_all * 1.01  # 1 token touches 2 of 8 experts; 64 touch ~all


def test_step_costmodel_toml_round_trip(tmp_path: Path) -> None:
    cm = StepCostModel(StepParams(bw_eff=0.812345678, step_s=1.23456789e-3), name="t")
    text = cm.to_toml()
    p = tmp_path / "t.toml"
    p.write_text(text)
    back = resolve_cost_model(str(p))
    assert isinstance(back, StepCostModel)
    assert back.params.bw_eff == 0.8123 and back.params.step_s == 0.001235
    assert back.to_toml() == text
    import tomllib

    d = tomllib.loads(text)
    d["params"]["warp_speed"] = 1.0
    with pytest.raises(InputError, match=r"params.warp_speed: unknown coefficient"):
        parse_step_costmodel(d, "t.toml")


# --- validate on committed rows ---------------------------------------------------

#: Simulated metrics must match the committed table to this relative tolerance (the
#: simulation is deterministic; the tolerance absorbs float differences across CPUs).
REL_TOL = 5e-3


def test_validate_three_rows_matches_the_committed_table() -> None:
    from sim.serving.validate import validate_runs

    expected = json.loads((DATA / "serving-3rows.expected.json").read_text())
    v = validate_runs(read_runs(ROWS3), workers=1)
    got = v.to_dict()
    assert [r["run_id"] for r in got["runs"]] == [r["run_id"] for r in expected["runs"]]
    for g, e in zip(got["runs"], expected["runs"], strict=True):
        for gs, es in zip(g["stages"], e["stages"], strict=True):
            assert gs["stage"] == es["stage"]
            assert gs["measured_ms"] == es["measured_ms"]
            for k, val in es["simulated_ms"].items():
                assert gs["simulated_ms"][k] == pytest.approx(val, rel=REL_TOL), (g["run_id"], k)
    for k, val in expected["mape"].items():
        assert got["mape"][k] == pytest.approx(val, abs=0.5)


RUNS = Path(__file__).resolve().parents[2] / "shared/data/vllm-serving-measurements/runs.csv"


@pytest.mark.skipif(not RUNS.exists(), reason="../shared/data not present")
def test_committed_serving_model_reproduces_its_validation_numbers() -> None:
    """The [validation] table stored in the committed vllm-serving.toml (what every
    report quotes) is what `agentsim validate` gives on all 32 measured runs."""
    import tomllib

    from sim.serving.validate import validate_runs

    root = Path(__file__).resolve().parents[1]
    path = root / "calibration/costmodels/vllm-serving.toml"
    stored = tomllib.loads(path.read_text())["validation"]
    v = validate_runs(read_runs(RUNS), str(path), workers=2)
    got = v.to_dict()
    assert len(got["runs"]) == stored["runs"]
    for k in ("ttft_mean", "ttft_p90", "e2e_mean", "e2e_p90", "itl_mean"):
        assert got["mape"][k] == pytest.approx(stored[f"mape_{k}_pct"], abs=0.5), k
    assert len(v.served_but_overloaded()) == stored["served_but_overloaded"]


def test_calibrated_h100_default_predicts_llama8b_roleplay_within_10pct() -> None:
    from sim.serving.replay import simulate_run

    run = read_runs(ROWS3)[0]  # run 19: Llama-3.1-8B-Instruct, H100, roleplay 6 rps
    res = simulate_run(run, resolve_cost_model(None, gpu="h100-80gb"))
    meas = run.measured[0].metrics
    sim = res.stage(0).metrics
    assert abs(sim["e2e_mean"] / meas["e2e_mean"] - 1) < 0.10
    assert not res.stage(0).overloaded
    assert math.isfinite(sim["ttft_mean"])


def test_every_gpu_defaults_to_the_serving_calibrated_model() -> None:
    from sim.costmodel.loader import DEFAULT_COSTMODEL_BY_GPU, default_cost_model
    from sim.specs.hardware import GPUS

    root = Path(__file__).resolve().parents[1]
    for gpu in GPUS:
        cm = default_cost_model(gpu)
        assert isinstance(cm, StepCostModel), gpu
        d = cm.describe()
        assert d["name"] == DEFAULT_COSTMODEL_BY_GPU.get(gpu, "vllm-serving")
        # every report names the model and its validation error
        assert d["validation"]["serving e2e_mean"]["mape"] > 0
    pkg = root / "sim" / "data" / "costmodels" / "vllm-serving.toml"
    assert (
        pkg.read_bytes() == (root / "calibration" / "costmodels" / "vllm-serving.toml").read_bytes()
    )


def test_fit_prior_residual_is_a_log_gaussian_in_sigmas() -> None:
    """A coefficient at its prior adds a zero residual; one sigma away (log space) adds
    one data residual's scale (F_SCALE); coefficients without a prior add none."""
    from sim.serving.fit import F_SCALE, PRIORS, _prior_residuals

    prior, sigma = PRIORS["per_seq_s"]
    at = StepParams(per_seq_s=prior)
    assert _prior_residuals(at, ["per_seq_s", "bw_eff"]).tolist() == [0.0]
    off = StepParams(per_seq_s=prior * math.exp(-sigma))
    assert _prior_residuals(off, ["per_seq_s"])[0] == pytest.approx(-F_SCALE)
    assert _prior_residuals(off, ["bw_eff"]).size == 0


def test_kv_read_efficiency_is_a_prior_not_fitted() -> None:
    """kv_eff is priced from the datasheet (the runs cannot tell it from per_seq_s)."""
    from sim.serving.fit import FITTED, SIM_DYNAMIC

    assert "kv_eff" not in FITTED and "kv_eff" not in SIM_DYNAMIC
    assert 0.8 <= StepParams().kv_eff <= 0.9
