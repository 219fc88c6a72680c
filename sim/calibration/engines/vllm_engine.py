"""The ``vllm`` engine: vLLM's offline ``LLM`` with random weights and real kernels.

The model is served from a local folder holding only its ``config.json`` (written from
the preset or the given config), loaded with ``load_format="dummy"`` (vLLM: "initialize
the weights with random values, which is mainly for profiling") and
``skip_tokenizer_init=True``; prompts are random token ids (``{"prompt_token_ids": [...]}``)
so no tokenizer or weights are downloaded.  Prefix caching is off so every prompt is
really computed.

Shapes are driven by batch composition, prompt lengths and ``max_tokens``, and timed from
vLLM's own per-request metrics (``RequestOutput.metrics``: the V1 ``RequestStateStats``
``scheduled_ts``/``first_token_ts``/``last_token_ts``, or the older ``RequestMetrics``
``first_scheduled_time``/``first_token_time``/``last_token_time``):

- prefill shape: ``num_prefill_seqs`` prompts of ``prefill_len`` tokens, ``max_tokens=1``,
  submitted together (the token budget admits them all in one step); one sample is the
  longest scheduled-to-first-token time of the batch;
- decode shape: ``num_decode_seqs`` prompts of ``decode_context_len`` tokens generating
  ``1 + DECODE_STEPS`` tokens; one sample is the median over requests of
  (last token - first token) / ``DECODE_STEPS``, i.e. the mean step time while the
  context grows from ``decode_context_len`` to ``decode_context_len + DECODE_STEPS``.

Mixed shapes cannot be forced through the offline API and are rejected.  Needs a CUDA GPU
and ``pip install 'agentsim[vllm]'``; written against vLLM's documented API and not
exercised where vLLM is not installed.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.calibration.engines import (
    ShapeUnsupported,
    agentsim_commit,
    nvidia_driver,
    require,
    resolve_model_config,
    utc_now,
)
from sim.calibration.engines.devices import gpu_key
from sim.calibration.grid import IterationShape
from sim.calibration.records import RecordHeader
from sim.common.errors import ConfigError

#: Decode steps averaged per decode sample.
DECODE_STEPS = 8

NOTES = (
    "vllm engine: load_format=dummy, prefix caching off; prefill sample = max over the batch "
    "of first_token - scheduled; decode sample = median over requests of "
    f"(last_token - first_token) / {DECODE_STEPS}, context growing from decode_context_len"
)


@dataclass(frozen=True, slots=True)
class VllmEngineConfig:
    """What the vllm engine runs (see :class:`~sim.calibration.engines.torch_engine.TorchEngineConfig`).

    Attributes:
        model: preset name, HF alias, or path to a ``config.json``.
        tp: tensor-parallel degree (``tensor_parallel_size``).
        dtype: ``"auto"`` (bfloat16), ``"float16"``, ``"bfloat16"``.
        layers: decoder layers to instantiate (``None``: all).
        max_num_seqs: most sequences per step (covers the grid's largest batch).
        max_num_batched_tokens: token budget per step (covers the grid's largest prefill).
        max_model_len: longest sequence (tokens).
        gpu_memory_utilization: fraction of GPU memory vLLM may take.
        seed: seed of the random prompts.
    """

    model: str
    tp: int = 1
    dtype: str = "auto"
    layers: int | None = None
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 16384
    max_model_len: int = 8192
    gpu_memory_utilization: float = 0.9
    seed: int = 0


def _stamp(metrics: Any, *names: str) -> float:
    """The first of the attributes ``names`` that ``metrics`` has and sets (seconds)."""
    for n in names:
        v = getattr(metrics, n, None)
        if v:
            return float(v)
    raise ConfigError(
        f"vLLM request metrics carry none of {', '.join(names)}; "
        "run with a vLLM version whose RequestOutput.metrics is set (disable_log_stats=False)"
    )


class VllmEngine:
    """vLLM offline engine timing iteration shapes from request metrics (see module doc)."""

    def __init__(self, cfg: VllmEngineConfig) -> None:
        vllm = require("vllm")
        torch = require("torch")
        self.cfg = cfg
        self.vllm = vllm
        self.torch: Any = torch
        self.model_name, self.model_config = resolve_model_config(cfg.model)
        full_layers = int(self.model_config["num_hidden_layers"])  # type: ignore[call-overload]
        layers = min(cfg.layers, full_layers) if cfg.layers else full_layers
        self.layers_measured = layers if layers < full_layers else None
        run_cfg = dict(self.model_config)
        run_cfg["num_hidden_layers"] = layers
        self._dir = tempfile.TemporaryDirectory(prefix="agentsim-vllm-")
        Path(self._dir.name, "config.json").write_text(json.dumps(run_cfg, indent=2))
        self.dtype_name = "bfloat16" if cfg.dtype == "auto" else cfg.dtype
        self.llm = vllm.LLM(
            model=self._dir.name,
            load_format="dummy",
            skip_tokenizer_init=True,
            tensor_parallel_size=cfg.tp,
            dtype=self.dtype_name,
            enable_prefix_caching=False,
            max_num_seqs=cfg.max_num_seqs,
            max_num_batched_tokens=cfg.max_num_batched_tokens,
            max_model_len=cfg.max_model_len,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            disable_log_stats=False,
            seed=cfg.seed,
        )
        self.vocab_size = int(run_cfg["vocab_size"])  # type: ignore[call-overload]
        self._rng = random.Random(cfg.seed)

    def header(self, tp: int) -> RecordHeader:
        """The record header describing vLLM, the GPUs and the model."""
        torch = self.torch
        if tp != self.cfg.tp:
            raise ConfigError(
                f"this vllm engine was started with tp={self.cfg.tp}, asked for tp={tp}"
            )
        return RecordHeader(
            engine="vllm",
            engine_version=f"vllm {self.vllm.__version__}",
            device="cuda",
            gpu=gpu_key("cuda", torch.cuda.get_device_name(0))
            or str(torch.cuda.get_device_name(0)),
            gpu_count=tp,
            driver=nvidia_driver(),
            torch_version=str(torch.__version__),
            vllm_version=str(self.vllm.__version__),
            model=self.model_name,
            model_config=dict(self.model_config),
            dtype=self.dtype_name,
            tp=tp,
            layers_measured=self.layers_measured,
            agentsim_commit=agentsim_commit(),
            created_utc=utc_now(),
            source="agentsim calibrate record --engine vllm",
            notes=NOTES,
            extra={
                "cuda_version": torch.version.cuda,
                "decode_steps": DECODE_STEPS,
                "device_name": str(torch.cuda.get_device_name(0)),
            },
        )

    def _prompts(self, n: int, length: int) -> list[dict[str, list[int]]]:
        r = self._rng
        return [
            {"prompt_token_ids": [r.randrange(self.vocab_size) for _ in range(length)]}
            for _ in range(n)
        ]

    def _run(self, n: int, length: int, max_tokens: int) -> list[Any]:
        params = self.vllm.SamplingParams(
            max_tokens=max_tokens, ignore_eos=True, detokenize=False, temperature=0.0
        )
        outs = self.llm.generate(self._prompts(n, length), params, use_tqdm=False)
        return [o.metrics for o in outs]

    def measure(self, shape: IterationShape, warmup: int, repeats: int) -> list[float]:
        """``repeats`` per-iteration times (seconds) of ``shape`` after ``warmup`` runs."""
        if shape.has_prefill and shape.has_decode:
            raise ShapeUnsupported("the vllm engine cannot force a mixed prefill+decode batch")
        if shape.num_tokens > self.cfg.max_num_batched_tokens and shape.has_prefill:
            raise ShapeUnsupported(f"{shape.num_tokens} tokens exceed max_num_batched_tokens")
        out: list[float] = []
        for i in range(warmup + repeats):
            if shape.has_prefill:
                ms = self._run(shape.num_prefill_seqs, shape.prefill_len, 1)
                t = max(
                    _stamp(m, "first_token_ts", "first_token_time")
                    - _stamp(m, "scheduled_ts", "first_scheduled_time")
                    for m in ms
                )
            else:
                ms = self._run(shape.num_decode_seqs, shape.decode_context_len, 1 + DECODE_STEPS)
                t = statistics.median(
                    (
                        _stamp(m, "last_token_ts", "last_token_time")
                        - _stamp(m, "first_token_ts", "first_token_time")
                    )
                    / DECODE_STEPS
                    for m in ms
                )
            if i >= warmup:
                out.append(t)
        return out
