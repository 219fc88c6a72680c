"""The ``torch`` engine: a transformers model of the real architecture, random weights.

Timing does not depend on weight values, so the model is built from its ``config.json``
with random initialisation (nothing is downloaded).  Each measured *iteration* is what
a serving engine runs for one batch:

- prefill part: ``num_prefill_seqs`` prompts of ``prefill_len`` tokens in one forward
  pass with a fresh KV cache, logits of the last position only, greedy next token;
- decode part: ``num_decode_seqs`` sequences, one new token each, attending to a
  pre-filled static KV cache of exactly ``decode_context_len`` tokens (the cache holds
  random values; the new token's slot is rewound after every run so every repeat sees
  the same context length), greedy next token.

A mixed shape runs both parts back to back inside one timed iteration (two forward
passes: transformers has no ragged prefill+decode batch); pure shapes run one.  On CUDA
each run is bracketed by CUDA events after a device synchronise; on CPU by
``time.perf_counter``.  Times are seconds.  ``layers`` instantiates only that many
decoder layers (for CPU runs of big architectures); the record header says so in
``layers_measured``.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sim.calibration.engines import (
    ShapeUnsupported,
    agentsim_commit,
    cpu_name,
    nvidia_driver,
    require,
    resolve_model_config,
    utc_now,
)
from sim.calibration.engines.devices import gpu_key
from sim.calibration.grid import IterationShape
from sim.calibration.records import RecordHeader
from sim.common.errors import AgentsimError, ConfigError

#: How the engine builds mixed iterations; stored in every header's ``notes``.
NOTES = (
    "torch engine: random weights; prefill = one forward of the prompts with a fresh "
    "DynamicCache (logits of the last position); decode = one forward over a pre-filled "
    "StaticCache of exactly decode_context_len tokens; a mixed shape is both passes in one "
    "timed iteration"
)


@dataclass(frozen=True, slots=True)
class TorchEngineConfig:
    """What the torch engine runs.

    Attributes:
        model: preset name, HF alias, or path to a ``config.json``.
        device: ``"cpu"`` or ``"cuda"``.
        dtype: ``"auto"`` (bfloat16 on CUDA, float32 on CPU), ``"float32"``, ``"float16"``,
            ``"bfloat16"``.
        layers: decoder layers to instantiate (``None``: the model's own number).
        attn_implementation: transformers attention backend (``"sdpa"``, ``"eager"``, ...).
        min_context: the instantiated model supports at least this many positions (tokens).
        seed: seed of the random weights and inputs.
        threads: intra-op CPU threads (CPU runs; default 1, which keeps timings stable on
            a shared machine; the header records it as ``cpu_threads``).
    """

    model: str
    device: str = "cpu"
    dtype: str = "auto"
    layers: int | None = None
    attn_implementation: str = "sdpa"
    min_context: int = 0
    seed: int = 0
    threads: int = 1


class TorchEngine:
    """A randomly initialised transformers model that times iterations (see module doc)."""

    def __init__(self, cfg: TorchEngineConfig) -> None:
        self.torch: Any = require("torch")
        transformers = require("transformers")
        torch = self.torch
        if cfg.device not in ("cpu", "cuda"):
            raise ConfigError(f"--device must be cpu or cuda, got {cfg.device!r}")
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise AgentsimError("--device cuda: torch sees no CUDA GPU (use --device cpu)")
        self.cfg = cfg
        if cfg.device == "cpu":
            if cfg.threads < 1:
                raise ConfigError(f"threads must be >= 1, got {cfg.threads}")
            torch.set_num_threads(cfg.threads)
        self.model_name, self.model_config = resolve_model_config(cfg.model)
        dtype_name = (
            cfg.dtype
            if cfg.dtype != "auto"
            else ("bfloat16" if cfg.device == "cuda" else "float32")
        )
        self.dtype_name: str = dtype_name
        self.dtype = getattr(torch, dtype_name)
        self.device = torch.device(cfg.device)
        full_layers = int(self.model_config["num_hidden_layers"])  # type: ignore[call-overload]
        if cfg.layers is not None and cfg.layers < 1:
            raise ConfigError(f"layers must be >= 1, got {cfg.layers}")
        self.layers = min(cfg.layers, full_layers) if cfg.layers is not None else full_layers
        self.layers_measured: int | None = self.layers if self.layers < full_layers else None
        run_cfg = dict(self.model_config)
        run_cfg["num_hidden_layers"] = self.layers
        run_cfg["max_position_embeddings"] = max(
            int(run_cfg.get("max_position_embeddings") or 0),  # type: ignore[call-overload]
            cfg.min_context,
        )
        run_cfg.pop("torch_dtype", None)
        run_cfg.pop("dtype", None)
        model_type = str(run_cfg.get("model_type", "llama"))
        try:
            hf_config = transformers.AutoConfig.for_model(
                model_type, **{k: v for k, v in run_cfg.items() if k != "model_type"}
            )
        except (KeyError, ValueError) as e:
            raise ConfigError(
                f"model {self.model_name}: transformers cannot build config: {e}"
            ) from None
        torch.manual_seed(cfg.seed)
        with torch.device(self.device):
            self.model = transformers.AutoModelForCausalLM.from_config(
                hf_config, dtype=self.dtype, attn_implementation=cfg.attn_implementation
            ).eval()
        self.vocab_size = int(hf_config.vocab_size)
        # transformers 5.x renamed ``past_key_values=`` to ``cache=`` (the old name warns)
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.transformers_version: str = transformers.__version__

    # --- provenance ------------------------------------------------------------------
    def header(self, tp: int = 1) -> RecordHeader:
        """The record header describing this engine, device and model."""
        torch = self.torch
        if tp != 1:
            raise ConfigError(
                f"the torch engine runs one process on one device and measures tp=1 only (asked tp={tp}); "
                "use --engine vllm to measure tensor parallelism"
            )
        extra: dict[str, Any] = {"attn_implementation": self.cfg.attn_implementation}
        if self.device.type == "cuda":
            device_name = str(torch.cuda.get_device_name(self.device))
            driver = nvidia_driver()
            extra["cuda_version"] = torch.version.cuda
        else:
            device_name = cpu_name()
            driver = None
            extra["cpu_threads"] = int(torch.get_num_threads())
        extra["device_name"] = device_name
        gpu = gpu_key(self.device.type, device_name) or device_name
        return RecordHeader(
            engine="torch",
            engine_version=f"transformers {self.transformers_version}",
            device=self.device.type,
            gpu=gpu,
            gpu_count=1,
            driver=driver,
            torch_version=str(torch.__version__),
            vllm_version=None,
            model=self.model_name,
            model_config=dict(self.model_config),
            dtype=self.dtype_name,
            tp=1,
            layers_measured=self.layers_measured,
            agentsim_commit=agentsim_commit(),
            created_utc=utc_now(),
            source="agentsim calibrate record --engine torch",
            notes=NOTES,
            extra=extra,
        )

    # --- building blocks (also used by the HTTP server) -------------------------------
    def random_tokens(self, batch: int, length: int) -> Any:
        """A ``[batch, length]`` tensor of random token ids on the engine's device."""
        return self.torch.randint(
            0, self.vocab_size, (batch, length), generator=self._gen, device=self.device
        )

    def new_dynamic_cache(self) -> Any:
        return require("transformers").DynamicCache(config=self.model.config)

    def prefill(self, input_ids: Any, cache: Any) -> Any:
        """Forward prompts ``input_ids [batch, len]`` into ``cache``; returns the greedy
        next token of each sequence, ``[batch, 1]``."""
        out = self.model(
            input_ids=input_ids, use_cache=True, logits_to_keep=1, **{self._cache_kw: cache}
        )
        return out.logits[:, -1].argmax(-1, keepdim=True)

    def decode(
        self, input_ids: Any, cache: Any, position_ids: Any, attention_mask: Any = None
    ) -> Any:
        """One decode step: ``input_ids [batch, 1]`` at ``position_ids [batch, 1]``;
        returns the greedy next tokens ``[batch, 1]``."""
        out = self.model(
            input_ids=input_ids,
            use_cache=True,
            position_ids=position_ids,
            attention_mask=attention_mask,
            logits_to_keep=1,
            **{self._cache_kw: cache},
        )
        return out.logits[:, -1].argmax(-1, keepdim=True)

    def _filled_static_cache(self, batch: int, context: int) -> Any:
        """A StaticCache of ``context + 1`` slots whose first ``context`` hold random KV."""
        torch = self.torch
        transformers = require("transformers")
        cache = transformers.StaticCache(config=self.model.config, max_cache_len=context + 1)
        mc = self.model.config
        kv_heads = int(getattr(mc, "num_key_value_heads", None) or mc.num_attention_heads)
        head_dim = int(getattr(mc, "head_dim", None) or mc.hidden_size // mc.num_attention_heads)
        kv = torch.randn(
            (batch, kv_heads, context, head_dim),
            generator=self._gen,
            device=self.device,
            dtype=self.dtype,
        )
        for layer in range(self.layers):
            cache.update(kv, kv, layer)
        del kv
        # Decode as a paged-attention engine does, reading only the KV heads.  For a
        # one-token query over a compileable (static) cache, transformers builds an
        # explicit mask, and an SDPA call with a mask expands K and V to every query
        # head (``repeat_kv``): GQA decode would then cost as if it had no GQA.  Every
        # slot is filled when the decode runs, so the mask is all-true: marking the
        # cache not compileable lets transformers skip it and call SDPA with
        # ``enable_gqa``.
        for cache_layer in cache.layers:
            cache_layer.is_compileable = False
        return cache

    def warm_up(self, runs: int = 8) -> None:
        """Run a few small prefill and decode iterations untimed: the first forward
        passes of a fresh process (allocator, kernel selection) are many times slower
        than the rest and belong to no shape."""
        for i in range(runs):
            self._measure(IterationShape(1 + i % 2, 32 << (i % 3), 0, 0), 0, 1)
            self._measure(IterationShape(0, 0, 1 + i % 4, 64 << (i % 2)), 0, 1)

    # --- timing ----------------------------------------------------------------------
    def _timer(self) -> Callable[[Callable[[], object]], float]:
        torch = self.torch
        if self.device.type == "cuda":

            def timed_cuda(fn: Callable[[], object]) -> float:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize(self.device)
                start.record()
                fn()
                end.record()
                end.synchronize()
                return float(start.elapsed_time(end)) / 1e3

            return timed_cuda

        def timed_cpu(fn: Callable[[], object]) -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        return timed_cpu

    def measure(self, shape: IterationShape, warmup: int, repeats: int) -> list[float]:
        """Time ``warmup + repeats`` runs of the iteration ``shape``; returns the
        ``repeats`` timed durations in seconds, in run order.  Raises
        :class:`ShapeUnsupported` when the shape does not fit in device memory."""
        torch = self.torch
        try:
            return self._measure(shape, warmup, repeats)
        except torch.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise ShapeUnsupported(
                f"{shape.describe()}: out of {self.device.type} memory"
            ) from None

    def _measure(self, shape: IterationShape, warmup: int, repeats: int) -> list[float]:
        torch = self.torch
        timed = self._timer()
        static = None
        dec_ids = dec_pos = None
        if shape.has_decode:
            static = self._filled_static_cache(shape.num_decode_seqs, shape.decode_context_len)
            dec_ids = self.random_tokens(shape.num_decode_seqs, 1)
            dec_pos = torch.full(
                (shape.num_decode_seqs, 1),
                shape.decode_context_len,
                dtype=torch.long,
                device=self.device,
            )
        out: list[float] = []
        with torch.inference_mode():
            for i in range(warmup + repeats):
                pre_ids = (
                    self.random_tokens(shape.num_prefill_seqs, shape.prefill_len)
                    if shape.has_prefill
                    else None
                )
                pre_cache = self.new_dynamic_cache() if shape.has_prefill else None

                def run(pre_ids: Any = pre_ids, pre_cache: Any = pre_cache) -> None:
                    if pre_ids is not None:
                        self.prefill(pre_ids, pre_cache)
                    if static is not None:
                        self.decode(dec_ids, static, dec_pos)

                t = timed(run)
                if static is not None:
                    _rewind_one(static)  # the decoded token's slot: same context next run
                if i >= warmup:
                    out.append(t)
        return out


def _rewind_one(cache: Any) -> None:
    """Forget the last token written to every layer of a StaticCache, so the next
    update overwrites its slot.  ``StaticCache.crop`` does this from transformers 5.2x;
    earlier 5.x static layers have no ``crop`` but keep the same ``cumulative_length``
    write pointer, which is moved back directly."""
    layers = cache.layers
    if all(hasattr(layer, "crop") for layer in layers):
        cache.crop(-1)
        return
    for layer in layers:
        if layer.is_initialized:
            layer.cumulative_length.sub_(1)
