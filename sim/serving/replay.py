"""Simulate one measured serving run and compute its per-stage metrics.

The run's server becomes a one-replica cluster (one node of the run's GPU; SXM GPUs on
an NVSwitch node, PCIe cards such as the L40S on a PCIe server) with the run's vLLM
settings: TP, ``max_num_batched_tokens``, ``max_num_seqs``, block size 16,
``max_model_len`` 4096, ``gpu_memory_utilization`` and, when the server reported it,
its KV block count.  Its workload comes from :mod:`sim.serving.workload`.

Metrics per stage are computed like the load generator's: over the requests that
*arrived* in that stage (a request that arrived in stage 0 and finished in stage 1
counts in stage 0), plus ``all`` over every request.  ``itl_mean`` is defined as in the
measurements: (mean E2E - mean TTFT) / (output tokens - 1).  The cost model's client
path latency (:func:`client_latency_s`) is added to every TTFT and E2E here: the engine
simulates the GPU server, this is the HTTP/streaming path around it.

Units: seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.cluster.config import ClusterConfig, Deployment, NodeGroup, validate
from sim.common.errors import ConfigError
from sim.costmodel.base import CostModel
from sim.serving.runs import RunSpec
from sim.serving.workload import QuestionMode, ServingWorkload, build_workload
from sim.simulation import simulate
from sim.specs.hardware import get_gpu
from sim.specs.models import get_model

#: vLLM's max_model_len in the measured runs.
MAX_MODEL_LEN = 4096

#: A simulated stage whose mean TTFT exceeds this is flagged overloaded (its queue
#: grows); the same threshold the measurements call "served" below (seconds).
OVERLOAD_TTFT_S = 1.0

METRICS = ("ttft_mean", "ttft_p90", "ttft_p99", "e2e_mean", "e2e_p90", "e2e_p99", "itl_mean")


@dataclass(frozen=True, slots=True)
class StageResult:
    """Simulated metrics of one stage (``stage`` None: the whole run), seconds."""

    stage: int | None
    requests: int
    metrics: dict[str, float]
    overloaded: bool


@dataclass(frozen=True, slots=True)
class RunResult:
    """A simulated run: its stages and what the simulation needed."""

    run: RunSpec
    stages: tuple[StageResult, ...]
    kv_blocks: int
    prefix_hit_rate: float
    preemptions: int
    wall_s: float

    def stage(self, stage: int | None) -> StageResult:
        for s in self.stages:
            if s.stage == stage:
                return s
        raise KeyError(stage)


def client_latency_s(
    cost_model: CostModel, prompt_tokens: np.ndarray, step_s: np.ndarray
) -> np.ndarray:
    """Seconds the client-side path (HTTP, tokenisation, scheduling lag, detokenisation,
    streaming) adds to each request's TTFT and E2E: the cost model's
    ``client_latency(prompt_tokens, step_s)`` when it has one
    (:class:`sim.costmodel.vllm_step.StepCostModel`), else 0; ``step_s`` is each request's
    mean simulated step (its TPOT).  The one place where client-side latency enters
    simulated serving metrics."""
    fn = getattr(cost_model, "client_latency", None)
    if fn is None:
        return np.zeros(prompt_tokens.shape, dtype=np.float64)
    out = fn(prompt_tokens.astype(np.float64), np.nan_to_num(step_s))
    return np.asarray(out, dtype=np.float64) + np.zeros(prompt_tokens.shape)


def cluster_for(run: RunSpec, costmodel: str | None = None) -> ClusterConfig:
    """The one-replica cluster of a measured run (see the module docstring)."""
    gpu = get_gpu(run.gpu)
    spec = get_model(run.model)
    builder = (
        "pcie-server" if gpu.form_factor == "pcie" or gpu.nvlink_bandwidth <= 0 else "dgx-a100"
    )
    dep: dict[str, Any] = {
        "model": run.model,
        "tp": run.tp,
        "pp": 1,
        "replicas": 1,
        "max_num_seqs": run.max_num_seqs,
        "max_num_batched_tokens": run.max_num_batched_tokens,
        "block_size": 16,
        "gpu_memory_utilization": run.gpu_memory_utilization or 0.9,
        "max_model_len": MAX_MODEL_LEN,
    }
    if run.gpu_kv_blocks:  # vLLM's measured count replaces the memory plan's
        dep["num_gpu_blocks_override"] = run.gpu_kv_blocks
    if run.precision == "FP8" and not spec.fp8_weights:
        dep["dtype"] = "fp8"
    if run.cpu_kv_offload:  # the runs' OffloadingConnector tier: 8 GiB (README of runs.csv)
        dep["cpu_offload_gib"] = 8.0
    try:
        cfg = ClusterConfig(
            name=f"measured run {run.run_id}",
            gpu=run.gpu,
            nodes=(NodeGroup(builder, 1, 8),),
            deployments=(Deployment(**dep),),
            costmodel=costmodel,
            source=f"{run.path}:{run.line}",
        )
        return validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{run.path}:{run.line}: run {run.run_id}: {e}") from None


def stage_metrics(ttft: np.ndarray, e2e: np.ndarray, output_tokens: int) -> dict[str, float]:
    """Mean/p90/p99 of TTFT and E2E and the mean ITL of one stage's requests."""
    if ttft.size == 0:
        return dict.fromkeys(METRICS, float("nan"))
    p = np.percentile
    tm, em = float(ttft.mean()), float(e2e.mean())
    return {
        "ttft_mean": tm,
        "ttft_p90": float(p(ttft, 90)),
        "ttft_p99": float(p(ttft, 99)),
        "e2e_mean": em,
        "e2e_p90": float(p(e2e, 90)),
        "e2e_p99": float(p(e2e, 99)),
        "itl_mean": (em - tm) / max(1, output_tokens - 1),
    }


@dataclass(frozen=True, slots=True)
class RawRun:
    """A simulated run's completed requests before the client path is added.

    Attributes:
        ttft, e2e: engine-side seconds per request (arrival at the server to first /
            last token).
        tpot: each request's mean step after its first token (seconds).
        prompt: prompt tokens per request.
        stage: the load stage each request arrived in.
        kv_blocks, prefix_hit_rate, preemptions: what the replica saw.
    """

    ttft: np.ndarray
    e2e: np.ndarray
    tpot: np.ndarray
    prompt: np.ndarray
    stage: np.ndarray
    kv_blocks: int
    prefix_hit_rate: float
    preemptions: int


def simulate_raw(
    run: RunSpec,
    cost_model: CostModel,
    seed: int = 0,
    questions: QuestionMode = "per-user",
    max_stage_s: float | None = None,
    workload: ServingWorkload | None = None,
) -> RawRun:
    """Simulate ``run`` and return its completed requests' engine-side latencies.

    With ``max_stage_s`` (stages shortened to that many seconds, for fast searches) the
    first round of prompts -- the requests that find the prefix cache cold -- is left
    out, since its share of a shortened stage is far above its share of the measured
    one."""
    cfg = cluster_for(run)
    sw = workload or build_workload(run, seed=seed, questions=questions, max_stage_s=max_stage_s)
    res = simulate(sw.workload, cfg, seed=seed, cost_model=cost_model)
    calls = res.calls
    idx = calls["call_id"].str.slice(1).astype(np.int64).to_numpy()
    ok = (calls["status"] == "completed").to_numpy()
    if max_stage_s is not None:
        ok = ok & (idx >= run.prefix_groups * run.users_per_group)
    return RawRun(
        ttft=calls["ttft_s"].to_numpy(dtype=np.float64)[ok],
        e2e=calls["e2e_s"].to_numpy(dtype=np.float64)[ok],
        tpot=np.nan_to_num(calls["tpot_s"].to_numpy(dtype=np.float64)[ok]),
        prompt=calls["input_tokens"].to_numpy()[ok],
        stage=sw.stage_of[idx][ok],
        kv_blocks=int(res.replicas["kv_capacity_blocks"].iloc[0]),
        prefix_hit_rate=float(res.summary["prefix_hit_rate"]),
        preemptions=int(res.summary["preemptions"]),
    )


def stages_of(raw: RawRun, run: RunSpec, cost_model: CostModel) -> tuple[StageResult, ...]:
    """Per-stage client-side metrics of a simulated run (client path added here)."""
    extra = client_latency_s(cost_model, raw.prompt, raw.tpot)
    ttft = raw.ttft + extra
    e2e = raw.e2e + extra
    out = []
    for s in [*range(len(run.stages)), None]:
        m = np.ones(ttft.shape, dtype=bool) if s is None else raw.stage == s
        met = stage_metrics(ttft[m], e2e[m], run.output_tokens)
        out.append(StageResult(s, int(m.sum()), met, bool(met["ttft_mean"] > OVERLOAD_TTFT_S)))
    return tuple(out)


def simulate_run(
    run: RunSpec,
    cost_model: CostModel,
    seed: int = 0,
    questions: QuestionMode = "per-user",
    max_stage_s: float | None = None,
    workload: ServingWorkload | None = None,
) -> RunResult:
    """Simulate ``run`` with ``cost_model`` and compute per-stage metrics
    (:func:`simulate_raw`, then :func:`stages_of`)."""
    import time

    t0 = time.perf_counter()
    raw = simulate_raw(run, cost_model, seed, questions, max_stage_s, workload)
    return RunResult(
        run=run,
        stages=stages_of(raw, run, cost_model),
        kv_blocks=raw.kv_blocks,
        prefix_hit_rate=raw.prefix_hit_rate,
        preemptions=raw.preemptions,
        wall_s=time.perf_counter() - t0,
    )
