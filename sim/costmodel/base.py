"""How long things take on a GPU: iterations, KV transfers, cold starts.

The engine asks an :class:`IterationModel` (one per replica, built by a
:class:`CostModel` for that replica's hardware) for the seconds one batching iteration
takes.  :class:`RooflineCostModel` is the analytic baseline: every operator costs the
larger of its compute time (FLOPs / achieved FLOP/s) and its memory time (bytes /
achieved bytes/s); TP all-reduces are priced from the replica's interconnect.  Fitted
models (:mod:`sim.costmodel.fitted`, :mod:`sim.costmodel.vllm_step`) implement the same
two protocols; :mod:`sim.costmodel.loader` picks and loads one.

Units: seconds, bytes, tokens, FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from sim.costmodel.transfer import achieved_bandwidth
from sim.specs.hardware import GPUSpec
from sim.specs.models import ModelSpec, expected_experts_touched
from sim.specs.topology import Path


@dataclass(frozen=True, slots=True)
class BatchShape:
    """What one iteration computes.

    Attributes:
        prefill_tokens: new prompt tokens of each prefill chunk in the batch.
        prefill_context: tokens already in the KV cache before each chunk (same order).
        num_decode: sequences generating one token each.
        decode_context_sum: sum over decoding sequences of the tokens they attend to.
    """

    prefill_tokens: tuple[int, ...] = ()
    prefill_context: tuple[int, ...] = ()
    num_decode: int = 0
    decode_context_sum: int = 0

    @property
    def num_tokens(self) -> int:
        return sum(self.prefill_tokens) + self.num_decode

    @property
    def num_seqs(self) -> int:
        return len(self.prefill_tokens) + self.num_decode


@dataclass(frozen=True, slots=True)
class ReplicaHardware:
    """The hardware one replica runs on, as the cost model needs it.

    Attributes:
        model: the served model.
        gpu: GPU type of every GPU in the replica.
        tp: tensor-parallel degree; pp: pipeline-parallel degree.
        allreduce_bandwidth: bottleneck bandwidth (bytes/s, per direction) of the TP group.
        allreduce_latency: bottleneck per-message latency (s) of the TP group.
        link: name of the slowest link type in the TP group (``nvlink``, ``pcie``, ``network``).
        pp_bandwidth, pp_latency: the slowest link between consecutive pipeline stages.
    """

    model: ModelSpec
    gpu: GPUSpec
    tp: int = 1
    pp: int = 1
    allreduce_bandwidth: float = float("inf")
    allreduce_latency: float = 0.0
    link: str = "local"
    pp_bandwidth: float = float("inf")
    pp_latency: float = 0.0


class IterationModel(Protocol):
    """Seconds per iteration for one replica."""

    def iteration_time(self, batch: BatchShape) -> float:
        """Wall time of one iteration computing ``batch`` (seconds)."""
        ...

    def decode_time(self, num_decode: int, context_sum: float) -> float:
        """Time of one pure-decode iteration: one element of :meth:`decode_times`
        (the same float, so that scalar and vectorised spans agree exactly)."""
        ...

    def decode_times(self, num_decode: int, context_sums: np.ndarray) -> np.ndarray:
        """Times of pure-decode iterations with ``num_decode`` sequences whose context
        sums are ``context_sums`` (one entry per iteration).  Must equal
        ``iteration_time(BatchShape(num_decode=n, decode_context_sum=s))`` element-wise."""
        ...


class CostModel(Protocol):
    """Builds the iteration model of a replica and describes itself for reports."""

    name: str

    def for_replica(self, hw: ReplicaHardware) -> IterationModel: ...

    def describe(self) -> dict[str, Any]:
        """Name, source and validation error, for reports."""
        ...


def allreduce_time(nbytes: float, world: int, bandwidth: float, latency: float) -> float:
    """Ring all-reduce of ``nbytes`` over ``world`` ranks: 2(w-1) steps of nbytes/w each."""
    if world <= 1 or nbytes <= 0:
        return 0.0
    return 2 * (world - 1) * latency + 2 * (world - 1) / world * nbytes / bandwidth


@dataclass(frozen=True, slots=True)
class RooflineParams:
    """Achieved fractions of peak, and fixed overheads (seconds).

    Defaults are typical of vLLM on A100: dense GEMMs reach ~70% of peak tensor FLOP/s,
    streaming kernels ~80% of HBM bandwidth, FlashAttention prefill ~50% of peak.
    Models with FP8 weights on a GPU with FP8 tensor cores run their linear-layer GEMMs
    at ``gemm_efficiency`` x the FP8 peak (:func:`gemm_peak_flops`).
    """

    gemm_efficiency: float = 0.7
    memory_efficiency: float = 0.8
    attention_efficiency: float = 0.5
    iteration_overhead_s: float = 2.0e-3
    per_seq_overhead_s: float = 2.0e-5
    per_layer_overhead_s: float = 1.0e-5


def gemm_peak_flops(model: ModelSpec, gpu: GPUSpec) -> float:
    """Peak FLOP/s of the model's linear-layer GEMMs on ``gpu``: the FP8 tensor peak
    for FP8 weights on a GPU that has FP8 tensor cores (vLLM's W8A8 FP8 GEMMs with
    dynamic activation scales), else the dense BF16/FP16 peak (a GPU without FP8 runs
    an FP8 checkpoint as weight-only FP8, e.g. vLLM's Marlin kernels on Ampere: 1-byte
    weight reads at 16-bit math).  Attention and the LM head stay at 16-bit rates."""
    if model.fp8_weights and gpu.supports_fp8:
        return gpu.peak_flops_fp8
    return gpu.peak_flops


class RooflineIterationModel:
    """Analytic iteration time of one replica (see module docstring).

    Bytes: linear-layer weights at ``weight_bytes_per_param``, the LM head and the
    activations at ``dtype_bytes``, KV reads at ``kv_bytes_per_element``."""

    def __init__(self, hw: ReplicaHardware, params: RooflineParams) -> None:
        m, g, tp = hw.model, hw.gpu, hw.tp
        self.hw = hw
        self.p = params
        self._flops = gemm_peak_flops(m, g) * params.gemm_efficiency
        self._head_flops = g.peak_flops * params.gemm_efficiency
        self._attn_flops = g.peak_flops * params.attention_efficiency
        self._bw = g.hbm_bandwidth * params.memory_efficiency
        self._layers = m.num_layers
        # weights per GPU per layer (elements) every token multiplies: attention and
        # the shared expert (Llama 4; 0 elsewhere)
        self._dense_w = (m.attn_params_per_layer + m.shared_expert_params_per_layer) / tp
        self._expert_w = m.mlp_params_per_expert / tp
        self._experts = m.num_experts
        self._k = m.experts_per_token
        self._head_w = m.vocab_size * m.hidden_size / tp
        self._dt = m.weight_bytes_per_param  # linear-layer weights
        self._head_dt = m.dtype_bytes  # LM head (kept in the compute dtype under FP8)
        self._q = m.q_size / tp
        self._kv_layer_bytes = 2 * m.kv_size * m.kv_bytes_per_element / tp  # per token per layer
        self._hidden_bytes = m.hidden_size * m.dtype_bytes
        self._tp = tp
        self._ar_bw = hw.allreduce_bandwidth
        self._ar_lat = hw.allreduce_latency

    def _linear_time(self, tokens: int, seqs: int) -> float:
        """GEMMs, all-reduces, LM head and overheads for ``tokens`` new tokens."""
        if tokens <= 0:
            return 0.0
        # distinct experts the batch's tokens touch (uniform routing): their weights
        # are read once per iteration; 1 for dense models
        experts_hit = expected_experts_touched(tokens, self._experts, self._k)
        w = self._dense_w + experts_hit * self._expert_w
        flops = 2.0 * tokens * (self._dense_w + self._k * self._expert_w)
        per_layer = max(flops / self._flops, w * self._dt / self._bw)
        per_layer += 2 * allreduce_time(
            tokens * self._hidden_bytes, self._tp, self._ar_bw, self._ar_lat
        )
        per_layer += self.p.per_layer_overhead_s
        head = max(
            2.0 * seqs * self._head_w / self._head_flops, self._head_w * self._head_dt / self._bw
        )
        return (
            self._layers * per_layer
            + head
            + self.p.iteration_overhead_s
            + self.p.per_seq_overhead_s * seqs
        )

    def iteration_time(self, batch: BatchShape) -> float:
        tokens = batch.num_tokens
        t = self._linear_time(tokens, batch.num_seqs)
        if batch.prefill_tokens:
            work = 0.0
            for new, ctx in zip(batch.prefill_tokens, batch.prefill_context, strict=True):
                work += new * (ctx + (new + 1) / 2.0)
            t += self._layers * 4.0 * self._q * work / self._attn_flops
        if batch.num_decode:
            t += self._layers * self._kv_layer_bytes * batch.decode_context_sum / self._bw
        return t

    def decode_time(self, num_decode: int, context_sum: float) -> float:
        base = self._linear_time(num_decode, num_decode)
        return base + self._layers * self._kv_layer_bytes / self._bw * float(context_sum)

    def decode_times(self, num_decode: int, context_sums: np.ndarray) -> np.ndarray:
        base = self._linear_time(num_decode, num_decode)
        per_ctx = self._layers * self._kv_layer_bytes / self._bw
        return base + per_ctx * np.asarray(context_sums, dtype=np.float64)


@dataclass
class RooflineCostModel:
    """The analytic baseline cost model (no fitted coefficients)."""

    params: RooflineParams = field(default_factory=RooflineParams)
    name: str = "roofline"

    def for_replica(self, hw: ReplicaHardware) -> IterationModel:
        return RooflineIterationModel(hw, self.params)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "analytic roofline",
            "source": "datasheet peaks x typical efficiencies (sim/costmodel/base.py RooflineParams)",
            "validation": None,
        }


def kv_transfer_time(nbytes: float, path: Path) -> float:
    """Seconds to move ``nbytes`` of KV cache over ``path``: its latency (s) plus the bytes
    at the achieved rate of its bottleneck link (the datasheet bandwidth, bytes/s, derated
    by :data:`sim.costmodel.transfer.ACHIEVED_FRACTION` for the link type; sources there)."""
    if nbytes <= 0:
        return 0.0
    return path.latency + nbytes / achieved_bandwidth(path.link, path.bandwidth)


def load_time(weight_bytes_per_gpu: float, path: Path, init_s: float) -> float:
    """Cold start (s): weights streamed over the slowest link of the load ``path`` at its
    achieved rate (:mod:`sim.costmodel.transfer`), plus engine init ``init_s`` (the
    deployment's, by default :data:`sim.costmodel.transfer.ENGINE_INIT_S`)."""
    return weight_bytes_per_gpu / achieved_bandwidth(path.link, path.bandwidth) + init_s
