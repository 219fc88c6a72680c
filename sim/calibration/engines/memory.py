"""Will the torch engine's model and a grid's KV caches fit?  Checked before building.

``calibrate record --engine torch --model llama-3-8b --device cpu`` builds all 32
layers of Llama-3-8B in float32 (32 GB of weights) before timing anything; on a laptop
the process is killed without a word.  :func:`estimate` adds up, from the model's
``config.json`` alone (no torch needed):

- weights: embeddings, LM head (unless tied), per decoder layer the Q/K/V/O projections,
  the MLP (x experts) and norms, at the dtype's bytes per value;
- KV cache of the grid's largest shape: a decode pre-fills a StaticCache of
  ``batch x (context + 1)`` slots per layer, a prefill a DynamicCache of its prompt
  tokens (a mixed shape holds both);
- activations of the largest shape: hidden states, the MLP's intermediate, one layer's
  attention scores, logits of the last position (float32);
- a fixed allowance for the runtime (:data:`RUNTIME_BYTES`).

:func:`check_fits` compares it with :data:`HEADROOM` of the memory available (CPU:
``MemAvailable`` and any cgroup limit; CUDA: the device's free memory) and raises a one-line
:class:`~sim.common.errors.AgentsimError` naming what would fit (fewer ``--layers``, a smaller
dtype, the tiny test model).  Units: bytes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sim.calibration.grid import IterationShape
from sim.common.errors import AgentsimError

#: Bytes per value of each grid dtype (``auto`` resolves per device first).
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
#: Memory of the Python process, torch and transformers themselves (bytes, CPU).
RUNTIME_BYTES = 1 << 30
#: Share of the available memory a recording may plan to use (the estimate is not exact,
#: and the machine keeps running other things).
HEADROOM = 0.85
#: The small model for CPU walkthroughs.
TINY_MODEL = "examples/calibration/tiny-llama/config.json"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a torch-engine recording needs.

    Attributes:
        weights: all parameters at the dtype.
        weights_per_layer: one decoder layer's parameters (the rest is embeddings, head).
        kv_cache: the largest shape's KV cache (all instantiated layers).
        kv_per_layer: the same for one layer.
        activations: the largest shape's transient tensors (one layer at a time).
        runtime: fixed allowance for the interpreter and libraries.
        layers: decoder layers instantiated.
        dtype: dtype name.
    """

    weights: int
    weights_per_layer: int
    kv_cache: int
    kv_per_layer: int
    activations: int
    runtime: int
    layers: int
    dtype: str

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations + self.runtime

    def with_layers(self, layers: int) -> int:
        """Total bytes with ``layers`` decoder layers instead."""
        fixed = self.weights - self.layers * self.weights_per_layer
        return (
            fixed
            + layers * (self.weights_per_layer + self.kv_per_layer)
            + self.activations
            + self.runtime
        )


def _i(cfg: Mapping[str, object], key: str, default: int = 0) -> int:
    v = cfg.get(key)
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else default


def resolve_dtype(dtype: str, device: str) -> str:
    """The torch engine's dtype for ``auto``: bfloat16 on CUDA, float32 on CPU."""
    if dtype == "auto":
        return "bfloat16" if device == "cuda" else "float32"
    return dtype


def estimate(
    cfg: Mapping[str, object],
    shapes: Sequence[IterationShape],
    dtype: str,
    layers: int | None = None,
) -> MemoryEstimate:
    """Bytes to build the model of ``cfg`` (a HF ``config.json`` dict) with ``layers``
    decoder layers (default: all) in ``dtype`` and run the largest of ``shapes``."""
    nbytes = DTYPE_BYTES.get(dtype, 4)
    h = _i(cfg, "hidden_size")
    heads = _i(cfg, "num_attention_heads", 1)
    kv_heads = _i(cfg, "num_key_value_heads", heads) or heads
    hd = _i(cfg, "head_dim") or h // max(heads, 1)
    inter = _i(cfg, "intermediate_size", 4 * h)
    vocab = _i(cfg, "vocab_size")
    experts = max(_i(cfg, "num_local_experts", 1), 1)
    full = _i(cfg, "num_hidden_layers", 1)
    n_layers = min(layers, full) if layers is not None else full
    attn = h * heads * hd * 2 + h * kv_heads * hd * 2
    mlp = experts * 3 * h * inter + (h * experts if experts > 1 else 0)
    per_layer = (attn + mlp + 2 * h) * nbytes
    head = 0 if cfg.get("tie_word_embeddings") else vocab * h
    fixed = (vocab * h + head + h) * nbytes
    kv_token = 2 * kv_heads * hd * nbytes  # K and V of one token in one layer
    kv_slots = 0
    act = 0
    for s in shapes:
        prefill_tokens = s.num_prefill_seqs * s.prefill_len
        decode_slots = s.num_decode_seqs * (s.decode_context_len + 1)
        kv_slots = max(kv_slots, prefill_tokens + decode_slots)
        tokens = max(prefill_tokens, s.num_decode_seqs)
        scores = max(
            s.num_prefill_seqs * heads * s.prefill_len * s.prefill_len,
            s.num_decode_seqs * heads * (s.decode_context_len + 1),
        )
        seqs = s.num_prefill_seqs + s.num_decode_seqs
        act = max(
            act,
            (tokens * (4 * h + 3 * inter * min(experts, 2)) + scores) * nbytes + seqs * vocab * 4,
        )
    kv_layer = kv_slots * kv_token
    return MemoryEstimate(
        weights=fixed + n_layers * per_layer,
        weights_per_layer=per_layer,
        kv_cache=n_layers * kv_layer,
        kv_per_layer=kv_layer,
        activations=act,
        runtime=RUNTIME_BYTES,
        layers=n_layers,
        dtype=dtype,
    )


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_cpu_bytes() -> int | None:
    """Memory this process can still allocate: ``MemAvailable``, capped by a cgroup
    (v2 or v1) limit minus its usage; ``None`` when the system does not say."""
    avail: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        avail = None
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    for limit_path, usage_path in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and limit < 1 << 60:  # v1 writes a huge number for "no limit"
            room = max(limit - (usage or 0), 0)
            avail = room if avail is None else min(avail, room)
            break
    return avail


def available_cuda_bytes() -> int | None:
    """Free memory of the current CUDA device (``None`` without torch or CUDA)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.mem_get_info()[0])
    except Exception:  # noqa: BLE001 - any failure: no estimate, the engine reports it
        return None


def available_bytes(device: str) -> int | None:
    return available_cuda_bytes() if device == "cuda" else available_cpu_bytes()


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_fits(
    model: str,
    cfg: Mapping[str, object],
    shapes: Sequence[IterationShape],
    dtype: str,
    layers: int | None,
    device: str,
    available: int | None,
) -> MemoryEstimate:
    """The :func:`estimate`; raises a one-line :class:`AgentsimError` when it exceeds
    :data:`HEADROOM` of ``available`` bytes (nothing is checked when ``available`` is
    ``None``), saying which fewer layers or smaller dtype would fit."""
    est = estimate(cfg, shapes, dtype, layers)
    if available is None or est.total <= HEADROOM * available:
        return est
    budget = HEADROOM * available
    hints = []
    fit_layers = next((n for n in range(est.layers - 1, 0, -1) if est.with_layers(n) <= budget), 0)
    if fit_layers:
        hints.append(f"--layers {fit_layers} (about {_gb(est.with_layers(fit_layers))})")
    if dtype == "float32":
        half = estimate(cfg, shapes, "bfloat16", layers)
        if half.total <= budget:
            hints.append(f"--dtype bfloat16 (about {_gb(half.total)})")
    hints.append(f"the tiny test model --model {TINY_MODEL}")
    hints.append("a grid with smaller shapes")
    raise AgentsimError(
        f"{model} in {est.dtype} with {est.layers} layers needs about {_gb(est.total)} on "
        f"{device} for this grid (weights {_gb(est.weights)}, KV cache of the largest shape "
        f"{_gb(est.kv_cache)}, activations {_gb(est.activations)}, runtime {_gb(est.runtime)}) "
        f"but {_gb(available)} is available (a recording may plan {HEADROOM:.0%} of it); use "
        + ", or ".join(hints)
        + " (or --skip-memory-check)"
    )
