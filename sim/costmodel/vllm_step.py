"""The vLLM engine-step cost model: one fused forward pass per engine step.

vLLM (v1) runs every scheduled token of a step -- prefill chunks and decodes together --
through one forward pass, so a linear layer reads its weights **once per step**, shared
by all the step's tokens.  A sum of separately profiled prefill and decode operators,
each with its own weight read and launch floor, double-counts that read (a 128-token
prefill plus 54 decodes costs about one read, not two).  Per step (seconds):

    step = sum over layers [ linear(T) + attention + 2 x all-reduce(T) ]
           + lm_head(S) + overhead(S, prefill?)

- ``linear(T)``: the layer's GEMMs for the step's ``T`` tokens, a smooth roofline
  ``(tw^p + tc^p)^(1/p)`` of the weight read ``tw = bytes / (HBM x bw_eff)`` and the
  compute ``tc = 2 T params / (peak x gemm_eff)``; FP8 weights read 1 byte and multiply
  at the GPU's FP8 peak (:func:`sim.costmodel.base.gemm_peak_flops`).  MoE layers read the
  experts the step's tokens touch (:func:`sim.specs.models.expected_experts_touched`) and
  multiply ``k`` (+ the shared expert) per token.
- attention: prefill chunks as causal FlashAttention FLOPs
  ``4 x q_width x new x (ctx + (new+1)/2)`` at ``peak x attn_eff``; decodes as the KV
  bytes they read at ``HBM x kv_eff``.
- all-reduce: two per layer over the TP group, ``ar_latency_s`` per call plus the ring
  bytes over the replica's interconnect (NVLink custom all-reduce inside an NVSwitch
  node, the PCIe path otherwise, as the topology prices it).
- lm_head: the vocabulary projection of the ``S`` sampled positions (one per sequence).
- overhead: ``step_s`` per step (scheduling, input preparation, sampling, CUDA-graph
  replay) + ``layer_s`` per layer (small kernels' floors) + ``per_seq_s`` per scheduled
  sequence, + ``prefill_layer_s`` per layer when
  the step has a prefill chunk (decode-only steps replay a full CUDA graph; mixed steps
  run piecewise graphs with attention launched per layer).

The client path is not a GPU step: ``client_latency_s`` (HTTP, detokenisation, SSE
streaming) + ``client_per_token_s`` x prompt tokens (tokenisation) + ``sched_lag_steps``
x the request's mean step (vLLM's async scheduling: step k+1 is planned while step k
runs, so a request that arrives during step k first runs in step k+2, and every token
reaches the client one step later than the step that computed it).  It is added to TTFT
and E2E by :func:`sim.serving.replay.client_latency_s`, the one place.

Every coefficient is global -- fractions of datasheet peaks and overheads in seconds,
never per model -- so a model or GPU not in the fitting data is priced from its
config and datasheet alone.  Stored as TOML (``kind = "vllm-step"``), fitted by
``agentsim calibrate fit-serving`` (:mod:`sim.serving.fit`).

Units: seconds, bytes, FLOPs.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from sim.common.errors import InputError
from sim.costmodel.base import BatchShape, IterationModel, ReplicaHardware, gemm_peak_flops
from sim.specs.models import expected_experts_touched

KIND = "vllm-step"
FORMAT = "agentsim-costmodel"
VERSION = 1

#: Significant digits of stored coefficients (the TOML is the same on any CPU).
SIG_DIGITS = 4


@dataclass(frozen=True, slots=True)
class StepParams:
    """The global coefficients of :class:`StepIterationModel` (module docstring).

    Attributes:
        bw_eff: achieved fraction of datasheet HBM bandwidth (weights and KV reads).
        gemm_eff: achieved fraction of the dense tensor peak in GEMMs.
        attn_eff: achieved fraction of the 16-bit tensor peak in prefill attention.
        kv_eff: achieved fraction of HBM bandwidth reading KV in decode attention: a
            datasheet prior, not fitted (split-KV FlashAttention decode over 16-token
            paged blocks streams the cache at 80-90% of the datasheet bandwidth, about
            what a streaming copy reaches; the serving runs cannot separate it from
            ``per_seq_s``).
        roofline_p: exponent of the smooth max of weight-read and compute time.
        ar_latency_s: fixed time of one TP all-reduce call (s).
        ar_eff: achieved fraction of the interconnect bandwidth in all-reduces.
        step_s: CPU + launch overhead of every engine step (s).
        layer_s: fixed time per layer per step (small kernels: norms, RoPE, residual
            adds, their launch floors) (s).
        per_seq_s: overhead per scheduled sequence (input prep, sampling) (s).
        prefill_layer_s: extra per layer in a step with a prefill chunk (s).
        client_latency_s: client path added to TTFT and E2E (s).
        client_per_token_s: client path per prompt token (tokenisation) (s).
        sched_lag_steps: engine steps between a token's step and its delivery to the
            client, in units of the request's own mean step (vLLM's async scheduling
            plans step k+1 while step k runs, so an arrival waits one step more).
    """

    bw_eff: float = 0.8
    gemm_eff: float = 0.7
    attn_eff: float = 0.5
    kv_eff: float = 0.85
    roofline_p: float = 3.0
    ar_latency_s: float = 8e-6
    ar_eff: float = 0.6
    step_s: float = 1.5e-3
    layer_s: float = 5e-6
    per_seq_s: float = 1.0e-5
    prefill_layer_s: float = 2.0e-5
    client_latency_s: float = 5e-3
    client_per_token_s: float = 1e-6
    sched_lag_steps: float = 1.0

    def rounded(self, digits: int = SIG_DIGITS) -> StepParams:
        """Every coefficient rounded to ``digits`` significant digits."""
        return StepParams(**{k: _sig(v, digits) for k, v in asdict(self).items()})


def _sig(x: float, digits: int = SIG_DIGITS) -> float:
    return float(f"{float(x):.{digits}g}")


class StepIterationModel:
    """Seconds per vLLM engine step for one replica (see the module docstring)."""

    def __init__(self, hw: ReplicaHardware, p: StepParams) -> None:
        m, g, tp = hw.model, hw.gpu, hw.tp
        m.check_tp(tp)
        self.hw = hw
        self.p = p
        self._layers = m.num_layers // max(1, hw.pp)
        wb = m.weight_bytes_per_param
        self._attn_w = m.attn_params_per_layer / tp  # elements per GPU per layer
        self._moe = m.num_experts > 1
        self._experts = m.num_experts
        self._k = m.experts_per_token
        self._expert_w = m.mlp_params_per_expert / tp
        self._shared_w = m.shared_expert_params_per_layer / tp
        self._router_w = m.hidden_size * m.num_experts if self._moe else 0
        self._wb = float(wb)
        self._dt = float(m.dtype_bytes)
        self._bw = g.hbm_bandwidth * p.bw_eff
        self._flops = gemm_peak_flops(m, g) * p.gemm_eff
        self._flops16 = g.peak_flops * p.gemm_eff
        self._attn_flops = g.peak_flops * p.attn_eff
        self._q = m.q_size / tp
        kv_heads = max(1, m.num_kv_heads // tp)
        self._kv_bytes_layer = 2.0 * kv_heads * m.head_dim * m.kv_bytes_per_element  # per token
        self._head_w = m.vocab_size * m.hidden_size / tp
        self._hidden_bytes = m.hidden_size * m.dtype_bytes
        self._tp = tp
        self._ar_bw = hw.allreduce_bandwidth * p.ar_eff
        self._ar_lat = p.ar_latency_s + (hw.allreduce_latency if hw.link != "nvlink" else 0.0)
        self._pp = hw.pp
        self._pp_bw = hw.pp_bandwidth
        self._pp_lat = hw.pp_latency
        self._memo: dict[tuple[int, int, bool], float] = {}
        self._per_ctx = self._layers * self._kv_bytes_layer / (g.hbm_bandwidth * p.kv_eff)

    # -- components (seconds) --
    def _roof(self, weight_bytes: float, flops: float, peak: float) -> float:
        tw = weight_bytes / self._bw
        tc = flops / peak
        pe = self.p.roofline_p
        return float((tw**pe + tc**pe) ** (1.0 / pe))

    def linear_layer(self, tokens: int) -> float:
        """One layer's GEMMs for ``tokens`` tokens (weights read once)."""
        t = float(tokens)
        w = self._attn_w + self._shared_w
        act = t * self._k
        if self._moe:
            touched = expected_experts_touched(t, self._experts, self._k)
            w_moe = touched * self._expert_w
            f_moe = 2.0 * act * self._expert_w
            router = self._roof(self._router_w * self._dt, 2.0 * t * self._router_w, self._flops16)
        else:
            w_moe = self._expert_w
            f_moe = 2.0 * t * self._expert_w
            router = 0.0
        return self._roof((w + w_moe) * self._wb, 2.0 * t * w + f_moe, self._flops) + router

    def allreduce(self, tokens: int) -> float:
        """One TP all-reduce of ``tokens`` hidden states (0 without TP)."""
        if self._tp <= 1:
            return 0.0
        nbytes = tokens * self._hidden_bytes
        w = self._tp
        return self._ar_lat + 2.0 * (w - 1) / w * nbytes / self._ar_bw

    def _base(self, tokens: int, seqs: int, prefill: bool) -> float:
        """Token- and sequence-dependent part of a step (memoised): layers' GEMMs and
        all-reduces, LM head, pipeline sends and overheads."""
        key = (tokens, seqs, prefill)
        v = self._memo.get(key)
        if v is None:
            p = self.p
            per_layer = self.linear_layer(tokens) + 2.0 * self.allreduce(tokens) + p.layer_s
            if prefill:
                per_layer += p.prefill_layer_s
            head = self._roof(self._head_w * self._dt, 2.0 * seqs * self._head_w, self._flops16)
            pp = (self._pp - 1) * (self._pp_lat + tokens * self._hidden_bytes / self._pp_bw)
            v = self._layers * per_layer + head + pp + p.step_s + p.per_seq_s * seqs
            if len(self._memo) > 1 << 16:
                self._memo.clear()
            self._memo[key] = v
        return v

    def prefill_attention(self, new: int, ctx: int) -> float:
        """All layers' attention for a prefill chunk of ``new`` tokens after ``ctx``."""
        flops = 4.0 * self._q * new * (ctx + (new + 1) / 2.0)
        kv = (ctx + new) * self._kv_bytes_layer
        return self._layers * max(flops / self._attn_flops, kv / self._bw)

    def breakdown(self, batch: BatchShape) -> dict[str, float]:
        """Seconds of one step by component; :meth:`iteration_time` is their sum."""
        tokens, seqs = batch.num_tokens, batch.num_seqs
        if tokens <= 0:
            return {
                "linear": 0.0,
                "all_reduce": 0.0,
                "attention": 0.0,
                "lm_head": 0.0,
                "overhead": 0.0,
            }
        p = self.p
        pre = bool(batch.prefill_tokens)
        L = self._layers
        attn = sum(
            self.prefill_attention(n, c)
            for n, c in zip(batch.prefill_tokens, batch.prefill_context, strict=True)
        )
        attn += self._per_ctx * batch.decode_context_sum
        head = self._roof(self._head_w * self._dt, 2.0 * seqs * self._head_w, self._flops16)
        return {
            "linear": L * self.linear_layer(tokens),
            "all_reduce": L * 2.0 * self.allreduce(tokens),
            "attention": attn,
            "lm_head": head,
            "overhead": p.step_s
            + p.per_seq_s * seqs
            + L * (p.layer_s + (p.prefill_layer_s if pre else 0.0)),
        }

    def iteration_time(self, batch: BatchShape) -> float:
        tokens = batch.num_tokens
        if tokens <= 0:
            return 0.0
        t = self._base(tokens, batch.num_seqs, bool(batch.prefill_tokens))
        if batch.prefill_tokens:
            for n, c in zip(batch.prefill_tokens, batch.prefill_context, strict=True):
                t += self.prefill_attention(n, c)
        return t + self._per_ctx * batch.decode_context_sum

    def decode_time(self, num_decode: int, context_sum: float) -> float:
        if num_decode <= 0:
            return 0.0
        return self._base(num_decode, num_decode, False) + self._per_ctx * float(context_sum)

    def decode_times(self, num_decode: int, context_sums: np.ndarray) -> np.ndarray:
        cs = np.asarray(context_sums, dtype=np.float64)
        if num_decode <= 0:
            return np.zeros_like(cs)
        return self._base(num_decode, num_decode, False) + self._per_ctx * cs


@dataclass
class StepCostModel:
    """The vLLM step cost model with its coefficients (a :class:`~sim.costmodel.base.CostModel`).

    Attributes:
        params: the global coefficients.
        name: the model's name (the TOML's ``name``).
        meta: provenance (fitted from, options, validation errors).
        path: where it was loaded from.
    """

    params: StepParams = field(default_factory=StepParams)
    name: str = "vllm-step"
    meta: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    _models: dict[ReplicaHardware, StepIterationModel] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def client_latency_s(self) -> float:
        return self.params.client_latency_s

    def client_latency(
        self, prompt_tokens: np.ndarray | float, step_s: np.ndarray | float = 0.0
    ) -> np.ndarray | float:
        """Client-path seconds for requests of ``prompt_tokens`` prompt tokens whose mean
        engine step is ``step_s``: fixed + per prompt token + ``sched_lag_steps`` steps."""
        p = self.params
        return (
            p.client_latency_s + p.client_per_token_s * prompt_tokens + p.sched_lag_steps * step_s
        )

    def for_replica(self, hw: ReplicaHardware) -> IterationModel:
        m = self._models.get(hw)
        if m is None:
            m = self._models[hw] = StepIterationModel(hw, self.params)
        return m

    def with_params(self, params: StepParams) -> StepCostModel:
        return replace(self, params=params, _models={})

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "vLLM step model (fused step, global coefficients)",
            "source": self.path or "sim/costmodel/vllm_step.py StepParams",
            "params": asdict(self.params),
            "validation": self.validation_summary(),
        }

    def validation_summary(self) -> dict[str, Any] | None:
        """The stored validation as report-ready entries ``{name: {"mape": %, "n": rows}}``
        (serving MAPE per metric on the measured runs, and the hold-out's if any)."""
        val = self.meta.get("validation")
        if not isinstance(val, dict):
            return None
        n = val.get("stage_rows")
        out: dict[str, Any] = {}
        for prefix, label in (
            ("mape_", "serving"),
            ("holdout_mape_", "held-out model"),
            ("lomo_mape_", "leave-one-model-out"),
        ):
            for k, v in val.items():
                if k.startswith(prefix) and k.endswith("_pct") and isinstance(v, int | float):
                    metric = k[len(prefix) : -len("_pct")]
                    entry: dict[str, Any] = {"mape": float(v)}
                    if isinstance(n, int):
                        entry["n"] = n
                    out[f"{label} {metric}"] = entry
        return out or None

    def to_toml(self) -> str:
        """The model as TOML (coefficients at :data:`SIG_DIGITS` significant digits)."""
        lines = [
            f'format = "{FORMAT}"',
            f"version = {VERSION}",
            f'kind = "{KIND}"',
            f'name = "{self.name}"',
            "",
            "[params]",
        ]
        for k, v in asdict(self.params.rounded()).items():
            lines.append(f"{k} = {v!r}")
        for section, table in self.meta.items():
            lines.append("")
            lines.extend(_toml_table(section, table))
        return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        if isinstance(v, float) and not math.isfinite(v):
            return '"nan"'
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_table(name: str, table: Any) -> list[str]:
    if not isinstance(table, dict):
        return [f"{name} = {_toml_value(table)}"]
    out = [f"[{name}]"]
    subs = []
    for k, v in table.items():
        if isinstance(v, dict):
            subs.append((k, v))
        else:
            out.append(
                f'"{k}" = {_toml_value(v)}' if not k.isidentifier() else f"{k} = {_toml_value(v)}"
            )
    for k, v in subs:
        out.append("")
        out.extend(_toml_table(f'{name}."{k}"' if not k.isidentifier() else f"{name}.{k}", v))
    return out


def parse_step_costmodel(d: dict[str, Any], path: str) -> StepCostModel:
    """A :class:`StepCostModel` from a decoded TOML document (``kind = "vllm-step"``)."""
    if d.get("format") != FORMAT or d.get("version") != VERSION or d.get("kind") != KIND:
        raise InputError(
            path, None, "kind", f"expected format {FORMAT!r} version {VERSION} kind {KIND!r}"
        )
    raw = d.get("params")
    if not isinstance(raw, dict):
        raise InputError(path, None, "params", "missing [params] table")
    known = {f.name for f in fields(StepParams)}
    for k, v in raw.items():
        if k not in known:
            raise InputError(path, None, f"params.{k}", "unknown coefficient")
        top = 3600.0 if k.endswith("_s") else 1e6  # no step term takes an hour
        if (
            not isinstance(v, int | float)
            or isinstance(v, bool)
            or not math.isfinite(v)
            or not 0 <= v <= top
        ):
            raise InputError(
                path, None, f"params.{k}", f"expected a number in [0, {top:g}], got {v!r}"
            )
    params = StepParams(**{k: float(v) for k, v in raw.items()})
    for k in ("bw_eff", "gemm_eff", "attn_eff", "roofline_p", "ar_eff"):
        if getattr(params, k) <= 0:
            raise InputError(path, None, f"params.{k}", "must be > 0")
    meta = {k: v for k, v in d.items() if k not in ("format", "version", "kind", "name", "params")}
    return StepCostModel(params, name=str(d.get("name", Path(path).stem)), meta=meta, path=path)


def load_step_costmodel(path: str | Path) -> StepCostModel:
    p = Path(path)
    try:
        d = tomllib.loads(p.read_text())
    except OSError as e:
        raise InputError(str(p), None, None, f"cannot read cost model: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(str(p), None, None, f"not valid TOML: {e}") from None
    return parse_step_costmodel(d, str(p))
