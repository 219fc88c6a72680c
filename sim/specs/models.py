"""Model architectures: weight bytes, KV bytes per token and FLOPs from the config alone.

Preset numbers are copied from each model's published Hugging Face ``config.json``.
Any HF-style config dict loads through :func:`ModelSpec.from_hf_config` (flat configs
and multimodal ones that nest the language model under ``text_config``, e.g. Llama 4).

Precision: ``dtype_bytes`` is the model's compute (activation) dtype, 2 for bf16/fp16;
``weight_dtype_bytes`` and ``kv_dtype_bytes`` (0: same as ``dtype_bytes``) are the bytes
of one stored weight of the linear layers and of one KV-cache element.  An FP8
checkpoint (``weight_dtype_bytes = 1``) keeps embeddings, LM head and norms in the
compute dtype, as llm-compressor/vLLM FP8 schemes do, and multiplies its GEMMs on the
GPU's FP8 tensor cores; its KV cache stays in the compute dtype unless
``kv_dtype_bytes = 1`` (vLLM's ``--kv-cache-dtype fp8``).  :meth:`ModelSpec.with_dtype`
applies a deployment's ``dtype`` / ``kv_cache_dtype``.

MoE: a batch of ``n`` tokens, each routed to ``k`` of ``E`` experts, reads the weights
of the experts it touches; :func:`expected_experts_touched` is that count's
expectation under uniform routing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sim.common.errors import ConfigError

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "fp16": 2, "bf16": 2, "float32": 4, "fp8": 1, "int8": 1}
# what a deployment's ``dtype`` / ``--dtype`` may name ("" keeps the model's own)
DEPLOY_DTYPES = ("fp16", "bf16", "fp8")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only transformer.

    Attributes:
        name: preset or HF name.
        num_layers, hidden_size, num_heads, num_kv_heads, head_dim, intermediate_size,
        vocab_size: the architecture (as in HF configs).
        num_experts, experts_per_token: MoE shape (1/1 for dense models).
        dtype_bytes: bytes per activation element (the compute dtype: 2 for bf16/fp16),
            and per weight and per KV element unless the two fields below say otherwise.
        tied_embeddings: input embedding shared with the LM head.
        max_context: the model's maximum sequence length (tokens).
        shared_expert_intermediate: MLP width of an always-active shared expert in every
            MoE layer (Llama 4); 0: none.
        weight_dtype_bytes: bytes per weight of the linear layers (1: FP8); 0: dtype_bytes.
        kv_dtype_bytes: bytes per KV-cache element (1: FP8 KV cache); 0: dtype_bytes.
    """

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    num_experts: int = 1
    experts_per_token: int = 1
    dtype_bytes: int = 2
    tied_embeddings: bool = False
    max_context: int = 4096
    shared_expert_intermediate: int = 0
    weight_dtype_bytes: int = 0
    kv_dtype_bytes: int = 0

    # --- precision -----------------------------------------------------------------
    @property
    def weight_bytes_per_param(self) -> int:
        """Bytes of one stored weight of the linear layers."""
        return self.weight_dtype_bytes or self.dtype_bytes

    @property
    def kv_bytes_per_element(self) -> int:
        """Bytes of one KV-cache element."""
        return self.kv_dtype_bytes or self.dtype_bytes

    @property
    def fp8_weights(self) -> bool:
        """Linear-layer weights in FP8: GEMMs run on the GPU's FP8 tensor cores."""
        return self.weight_bytes_per_param == 1

    def with_dtype(self, dtype: str = "", kv_cache_dtype: str = "") -> ModelSpec:
        """This model served at ``dtype`` (``fp16``, ``bf16`` or ``fp8``; "" keeps its own)
        with its KV cache at ``kv_cache_dtype`` (same names; "" or ``auto``: ``dtype``
        when given, else the model's own KV precision).  ``fp8`` stores 1 byte per weight and
        per KV element; activations stay in the 2-byte compute dtype."""
        dtype = "" if dtype == "auto" else dtype
        kv_cache_dtype = "" if kv_cache_dtype == "auto" else kv_cache_dtype
        for what, v in (("dtype", dtype), ("kv_cache_dtype", kv_cache_dtype)):
            if v and v not in DEPLOY_DTYPES:
                raise ConfigError(
                    f"model {self.name}: {what} {v!r} is not one of {', '.join(DEPLOY_DTYPES)}"
                )
        if not dtype and not kv_cache_dtype:
            return self
        w = DTYPE_BYTES[dtype] if dtype else self.weight_bytes_per_param
        kv_name = kv_cache_dtype or dtype
        kv = DTYPE_BYTES[kv_name] if kv_name else self.kv_bytes_per_element
        compute = self.dtype_bytes if self.dtype_bytes == 2 else 2
        return replace(
            self,
            dtype_bytes=compute,
            weight_dtype_bytes=0 if w == compute else w,
            kv_dtype_bytes=0 if kv == compute else kv,
        )

    # --- derived sizes -------------------------------------------------------------
    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attn_params_per_layer(self) -> int:
        """QKV and output projection weights of one layer."""
        h = self.hidden_size
        return h * (self.q_size + 2 * self.kv_size) + self.q_size * h

    @property
    def mlp_params_per_expert(self) -> int:
        """Gated MLP (up, gate, down) weights of one expert."""
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def shared_expert_params_per_layer(self) -> int:
        """Gated MLP weights of the always-active shared expert of one layer (0: none)."""
        return 3 * self.hidden_size * self.shared_expert_intermediate

    @property
    def params_per_layer(self) -> int:
        router = self.hidden_size * self.num_experts if self.num_experts > 1 else 0
        norms = 2 * self.hidden_size
        return (
            self.attn_params_per_layer
            + self.num_experts * self.mlp_params_per_expert
            + self.shared_expert_params_per_layer
            + router
            + norms
        )

    @property
    def num_params(self) -> int:
        emb = self.vocab_size * self.hidden_size
        head = 0 if self.tied_embeddings else emb
        return self.num_layers * self.params_per_layer + emb + head + self.hidden_size

    @property
    def weight_bytes(self) -> int:
        """Bytes of all weights.  With a linear-layer dtype other than the compute dtype
        (FP8), embeddings, LM head, norms and routers stay in the compute dtype."""
        wb = self.weight_bytes_per_param
        if wb == self.dtype_bytes:
            return self.num_params * self.dtype_bytes
        emb = self.vocab_size * self.hidden_size
        router = self.hidden_size * self.num_experts if self.num_experts > 1 else 0
        kept = (
            emb
            + (0 if self.tied_embeddings else emb)
            + self.hidden_size
            + self.num_layers * (2 * self.hidden_size + router)
        )
        return (self.num_params - kept) * wb + kept * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token occupies over all layers: 2 x layers x kv_heads x head_dim x dtype."""
        return 2 * self.num_layers * self.kv_size * self.kv_bytes_per_element

    @property
    def active_params_per_token(self) -> int:
        """Weights one token multiplies (MoE: only its routed experts and the shared one)."""
        per_layer = (
            self.attn_params_per_layer
            + self.experts_per_token * self.mlp_params_per_expert
            + self.shared_expert_params_per_layer
        )
        return self.num_layers * per_layer + self.vocab_size * self.hidden_size

    def flops_per_token(self, context: int = 0) -> float:
        """Forward FLOPs for one token attending to ``context`` earlier tokens."""
        attn = 4 * self.num_layers * self.q_size * context
        return 2.0 * self.active_params_per_token + attn

    def check_tp(self, tp: int) -> None:
        """Raise ConfigError unless tensor parallelism ``tp`` divides the heads."""
        if tp < 1:
            raise ConfigError(f"model {self.name}: tensor-parallel degree must be >= 1, got {tp}")
        if self.num_heads % tp:
            raise ConfigError(
                f"model {self.name}: TP={tp} does not divide num_attention_heads={self.num_heads}"
            )
        if self.num_kv_heads % tp and tp % self.num_kv_heads:
            raise ConfigError(
                f"model {self.name}: TP={tp} neither divides nor is a multiple of num_key_value_heads={self.num_kv_heads}"
            )

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any], name: str | None = None) -> ModelSpec:
        """Build a spec from a Hugging Face ``config.json`` dict (Llama/Mistral/Mixtral/
        Cohere/Qwen style, flat or with the language model under ``text_config``).

        MoE fields: ``num_local_experts`` or ``num_experts``, ``num_experts_per_tok``,
        ``moe_intermediate_size`` (Qwen MoE: the expert width, ``intermediate_size``
        then being the dense width), ``shared_expert_intermediate_size`` (Qwen); Llama 4
        MoE layers always carry one shared expert of ``intermediate_size``.  MoE
        interleaved with dense layers (``interleave_moe_layer_step`` > 1, Llama 4
        Maverick; ``decoder_sparse_step`` > 1) is refused.  An FP8
        ``quantization_config`` (``quant_method`` fp8, or compressed-tensors with 8-bit
        float weights) gives 1-byte weights; a ``kv_cache_scheme`` gives an FP8 KV cache.
        """
        where = f"model config {name or ''}"
        if "num_hidden_layers" not in cfg and isinstance(cfg.get("text_config"), dict):
            top = cfg
            cfg = dict(cfg["text_config"])
            for k in ("torch_dtype", "dtype", "quantization_config", "_name_or_path"):
                if k not in cfg and k in top:
                    cfg[k] = top[k]
            if "tie_word_embeddings" not in cfg and "tie_word_embeddings" in top:
                cfg["tie_word_embeddings"] = top["tie_word_embeddings"]
        for step_key in ("interleave_moe_layer_step", "decoder_sparse_step"):
            step = cfg.get(step_key)
            if step is not None and int(step) > 1:
                raise ConfigError(
                    f"{where}: {step_key}={step}: MoE layers interleaved with dense layers "
                    "are not modelled (every layer must be MoE, or none)"
                )
        try:
            h = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 1)
            experts_inter = cfg.get("moe_intermediate_size") if experts > 1 else None
            shared = int(cfg.get("shared_expert_intermediate_size") or 0) if experts > 1 else 0
            if experts > 1 and str(cfg.get("model_type", "")).startswith("llama4"):
                shared = int(cfg["intermediate_size"])  # Llama4TextMoe.shared_expert
            w_bytes, kv_bytes = _quantized_bytes(cfg.get("quantization_config"))
            spec = cls(
                name=name or str(cfg.get("_name_or_path") or cfg.get("model_type") or "custom"),
                num_layers=int(cfg["num_hidden_layers"]),
                hidden_size=h,
                num_heads=heads,
                num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or h // heads),
                intermediate_size=int(experts_inter or cfg["intermediate_size"]),
                vocab_size=int(cfg["vocab_size"]),
                num_experts=experts,
                experts_per_token=int(cfg.get("num_experts_per_tok") or 1) if experts > 1 else 1,
                dtype_bytes=DTYPE_BYTES.get(
                    str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"), 2
                ),
                tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                max_context=int(cfg.get("max_position_embeddings") or 4096),
                shared_expert_intermediate=shared,
                weight_dtype_bytes=w_bytes,
                kv_dtype_bytes=kv_bytes,
            )
        except KeyError as e:
            raise ConfigError(f"{where}: missing field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {e}") from None
        return spec


def _quantized_bytes(q: Any) -> tuple[int, int]:
    """(weight bytes, KV bytes) a ``quantization_config`` implies (0: not quantized)."""
    if not isinstance(q, dict):
        return 0, 0
    method = str(q.get("quant_method", "")).lower()
    w = 0
    if method == "fp8":
        w = 1
    elif method == "compressed-tensors":
        for group in (q.get("config_groups") or {}).values():
            wt = group.get("weights") if isinstance(group, dict) else None
            if (
                isinstance(wt, dict)
                and int(wt.get("num_bits", 0)) == 8
                and wt.get("type") == "float"
            ):
                w = 1
    kv = 1 if q.get("kv_cache_scheme") else 0
    return w, kv


def expected_experts_touched(tokens: float, num_experts: int, k: int) -> float:
    """Expected number of distinct experts ``tokens`` tokens touch in one MoE layer when
    each token picks ``k`` of ``num_experts`` experts uniformly at random (without
    replacement within a token, independently across tokens).

    One expert is missed by one token with probability ``1 - k/E``, by all ``n`` tokens
    with ``(1 - k/E)^n``, so ``E[touched] = E * (1 - (1 - k/E)^n)``.  It is ``k`` for one
    token, grows monotonically with ``n`` and tends to ``E``; the worst case
    ``min(E, n*k)`` is an upper bound.  Real routers are not uniform (popular experts
    make the count lower), so this is the load-balanced expectation.  Dense models
    (``E <= 1``) touch their one MLP: 1.0 (0.0 for no tokens).
    """
    if tokens <= 0:
        return 0.0
    if num_experts <= 1:
        return 1.0
    kk = min(max(k, 1), num_experts)
    return num_experts * (1.0 - (1.0 - kk / num_experts) ** tokens)


PRESETS: dict[str, ModelSpec] = {
    # meta-llama/Llama-2-7b-hf config.json
    "llama-2-7b": ModelSpec("llama-2-7b", 32, 4096, 32, 32, 128, 11008, 32000, max_context=4096),
    # meta-llama/Llama-2-70b-hf config.json
    "llama-2-70b": ModelSpec("llama-2-70b", 80, 8192, 64, 8, 128, 28672, 32000, max_context=4096),
    # meta-llama/Meta-Llama-3-8B config.json
    "llama-3-8b": ModelSpec("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256, max_context=8192),
    # meta-llama/Meta-Llama-3-70B config.json
    "llama-3-70b": ModelSpec("llama-3-70b", 80, 8192, 64, 8, 128, 28672, 128256, max_context=8192),
    # mistralai/Mistral-7B-v0.1 config.json
    "mistral-7b": ModelSpec("mistral-7b", 32, 4096, 32, 8, 128, 14336, 32000, max_context=32768),
    # mistralai/Mixtral-8x7B-v0.1 config.json
    "mixtral-8x7b": ModelSpec(
        "mixtral-8x7b",
        32,
        4096,
        32,
        8,
        128,
        14336,
        32000,
        num_experts=8,
        experts_per_token=2,
        max_context=32768,
    ),
    # CohereForAI/c4ai-command-r-v01 config.json (Command R, 35B): 64 KV heads (no GQA),
    # tied embeddings, 128k context (Cohere model card)
    "command-r": ModelSpec(
        "command-r",
        40,
        8192,
        64,
        64,
        128,
        22528,
        256000,
        tied_embeddings=True,
        max_context=131072,
    ),
    # Qwen/Qwen2-7B-Instruct config.json (GQA 28/4 heads; QKV biases, 0.1% of the
    # weights, are not counted)
    "qwen2-7b": ModelSpec("qwen2-7b", 28, 3584, 28, 4, 128, 18944, 152064, max_context=32768),
    # meta-llama/Llama-3.1-8B(-Instruct) config.json (8.03B parameters)
    "llama-3.1-8b": ModelSpec(
        "llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256, max_context=131072
    ),
    # meta-llama/Llama-3.1-70B(-Instruct) config.json (70.6B)
    "llama-3.1-70b": ModelSpec(
        "llama-3.1-70b", 80, 8192, 64, 8, 128, 28672, 128256, max_context=131072
    ),
    # Qwen/Qwen3-14B config.json (14.8B): head_dim 128 explicit (40 x 128 = 5120 here);
    # q/k RMSNorms (2 x 128 weights per layer) are not counted
    "qwen3-14b": ModelSpec("qwen3-14b", 40, 5120, 40, 8, 128, 17408, 151936, max_context=40960),
    # Qwen/Qwen3-32B config.json (32.8B): 64 q heads x 128 = 8192 wide over hidden 5120;
    # q/k RMSNorms not counted
    "qwen3-32b": ModelSpec("qwen3-32b", 64, 5120, 64, 8, 128, 25600, 151936, max_context=40960),
    # Qwen/Qwen2.5-7B-Instruct config.json (7.6B; QKV biases not counted)
    "qwen2.5-7b": ModelSpec("qwen2.5-7b", 28, 3584, 28, 4, 128, 18944, 152064, max_context=32768),
    # mistralai/Mistral-Nemo-Instruct-2407 config.json (12.2B): head_dim 128 with
    # hidden 5120 and 32 heads (q width 4096 != hidden); max_position_embeddings 1024000
    # (the model card quotes a 128k context window)
    "mistral-nemo-12b": ModelSpec(
        "mistral-nemo-12b", 40, 5120, 32, 8, 128, 14336, 131072, max_context=1024000
    ),
    # 01-ai/Yi-34B config.json (34.4B)
    "yi-34b": ModelSpec("yi-34b", 60, 7168, 56, 8, 128, 20480, 64000, max_context=4096),
    # codellama/CodeLlama-34b-hf config.json (33.7B)
    "codellama-34b": ModelSpec(
        "codellama-34b", 48, 8192, 64, 8, 128, 22016, 32000, max_context=16384
    ),
    # mistralai/Mixtral-8x22B-Instruct-v0.1 config.json (141B total, 39B active); the
    # base mistralai/Mixtral-8x22B-v0.1 has vocab_size 32000 instead of 32768 (0.003% of
    # the weights), so both names share this preset
    "mixtral-8x22b": ModelSpec(
        "mixtral-8x22b",
        56,
        6144,
        48,
        8,
        128,
        16384,
        32768,
        num_experts=8,
        experts_per_token=2,
        max_context=65536,
    ),
    # meta-llama/Llama-4-Scout-17B-16E(-Instruct) config.json, text_config (109B total
    # with the vision encoder, 17B active): 48 layers, every one MoE
    # (interleave_moe_layer_step 1) with 16 routed experts of intermediate_size 8192,
    # 1 routed expert per token, plus a shared expert of 8192 (intermediate_size_mlp
    # 16384 is for dense layers, which Scout has none of); the ~0.9B-parameter vision
    # encoder is not counted
    "llama-4-scout-17b-16e": ModelSpec(
        "llama-4-scout-17b-16e",
        48,
        5120,
        40,
        8,
        128,
        8192,
        202048,
        num_experts=16,
        experts_per_token=1,
        max_context=10485760,
        shared_expert_intermediate=8192,
    ),
}
# RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic: FP8 weights in the linear layers
# (compressed-tensors, dynamic per-token activation scales), embeddings/LM head/router in
# bf16, no kv_cache_scheme, so vLLM keeps the KV cache in bf16 (unless it is started
# with --kv-cache-dtype fp8)
PRESETS["llama-4-scout-17b-16e-fp8"] = replace(
    PRESETS["llama-4-scout-17b-16e"], name="llama-4-scout-17b-16e-fp8", weight_dtype_bytes=1
)

HF_ALIASES = {
    "meta-llama/Llama-2-7b-hf": "llama-2-7b",
    "meta-llama/Llama-2-7b-chat-hf": "llama-2-7b",
    "meta-llama/Llama-2-70b-hf": "llama-2-70b",
    "meta-llama/Llama-2-70b-chat-hf": "llama-2-70b",
    "meta-llama/Meta-Llama-3-8B": "llama-3-8b",
    "meta-llama/Meta-Llama-3-8B-Instruct": "llama-3-8b",
    "meta-llama/Meta-Llama-3-70B": "llama-3-70b",
    "meta-llama/Meta-Llama-3-70B-Instruct": "llama-3-70b",
    "mistralai/Mistral-7B-v0.1": "mistral-7b",
    "mistralai/Mixtral-8x7B-v0.1": "mixtral-8x7b",
    "CohereForAI/c4ai-command-r-v01": "command-r",
    "CohereLabs/c4ai-command-r-v01": "command-r",
    "Qwen/Qwen2-7B": "qwen2-7b",
    "Qwen/Qwen2-7B-Instruct": "qwen2-7b",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "mixtral-8x7b",
    "meta-llama/Llama-3.1-8B": "llama-3.1-8b",
    "meta-llama/Llama-3.1-8B-Instruct": "llama-3.1-8b",
    "meta-llama/Meta-Llama-3.1-8B": "llama-3.1-8b",
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "llama-3.1-8b",
    "meta-llama/Llama-3.1-70B": "llama-3.1-70b",
    "meta-llama/Llama-3.1-70B-Instruct": "llama-3.1-70b",
    "meta-llama/Meta-Llama-3.1-70B": "llama-3.1-70b",
    "meta-llama/Meta-Llama-3.1-70B-Instruct": "llama-3.1-70b",
    "Qwen/Qwen3-14B": "qwen3-14b",
    "Qwen/Qwen3-14B-Base": "qwen3-14b",
    "Qwen/Qwen3-32B": "qwen3-32b",
    "Qwen/Qwen2.5-7B": "qwen2.5-7b",
    "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b",
    "mistralai/Mistral-Nemo-Instruct-2407": "mistral-nemo-12b",
    "mistralai/Mistral-Nemo-Base-2407": "mistral-nemo-12b",
    "01-ai/Yi-34B": "yi-34b",
    "01-ai/Yi-34B-Chat": "yi-34b",
    "codellama/CodeLlama-34b-hf": "codellama-34b",
    "codellama/CodeLlama-34b-Instruct-hf": "codellama-34b",
    "codellama/CodeLlama-34b-Python-hf": "codellama-34b",
    "meta-llama/CodeLlama-34b-hf": "codellama-34b",
    "meta-llama/CodeLlama-34b-Instruct-hf": "codellama-34b",
    "mistralai/Mixtral-8x22B-v0.1": "mixtral-8x22b",
    "mistralai/Mixtral-8x22B-Instruct-v0.1": "mixtral-8x22b",
    "mistral-community/Mixtral-8x22B-v0.1": "mixtral-8x22b",
    "meta-llama/Llama-4-Scout-17B-16E": "llama-4-scout-17b-16e",
    "meta-llama/Llama-4-Scout-17B-16E-Instruct": "llama-4-scout-17b-16e",
    "RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic": "llama-4-scout-17b-16e-fp8",
}


def get_model(name: str) -> ModelSpec:
    """A preset by name (or HF alias), or a spec loaded from a ``config.json`` path."""
    key = HF_ALIASES.get(name, name)
    if key in PRESETS:
        return PRESETS[key]
    lowered = {k.lower(): v for k, v in HF_ALIASES.items()}
    if name.lower() in lowered:
        return PRESETS[lowered[name.lower()]]
    p = Path(name)
    if p.suffix == ".json" and p.exists():
        return load_model_config(p)
    import difflib

    close = difflib.get_close_matches(name, list(PRESETS) + list(HF_ALIASES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown model {name!r}{hint}; presets: {', '.join(PRESETS)}")


#: Integer fields of a HF config checked on load: required?, largest value.
_HF_INTS = {
    "num_hidden_layers": (True, 10_000),
    "hidden_size": (True, 1 << 20),
    "num_attention_heads": (True, 1 << 16),
    "intermediate_size": (True, 1 << 24),
    "vocab_size": (True, 1 << 24),
    "num_key_value_heads": (False, 1 << 16),
    "head_dim": (False, 1 << 16),
    "num_local_experts": (False, 1 << 16),
    "num_experts": (False, 1 << 16),
    "num_experts_per_tok": (False, 1 << 16),
    "moe_intermediate_size": (False, 1 << 24),
    "max_position_embeddings": (False, 1 << 30),
}


def load_model_config(path: str | Path) -> ModelSpec:
    """Load a model from a Hugging Face ``config.json`` file; every problem raises
    :class:`~sim.common.errors.InputError` naming the file, the line and the field."""
    from sim.common.errors import InputError

    p = str(path)
    try:
        data = Path(p).read_bytes()
    except OSError as e:
        raise InputError(p, None, None, f"cannot read model config: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(
            p, line, "encoding", f"not UTF-8 text (byte {e.start}: {e.reason})"
        ) from None
    if not text.strip():
        raise InputError(p, 1, None, "empty file; expected a Hugging Face config.json object")
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(p, e.lineno, None, f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(cfg, dict):
        raise InputError(p, 1, None, "expected a JSON object (a Hugging Face config.json)")
    inner = cfg.get("text_config") if "num_hidden_layers" not in cfg else None
    table = inner if isinstance(inner, dict) else cfg
    for key, (required, top) in _HF_INTS.items():
        line = next((i for i, s in enumerate(text.splitlines(), 1) if f'"{key}"' in s), 1)
        v = table.get(key)
        if v is None:
            if required:
                raise InputError(p, 1, key, "required field is missing")
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
            raise InputError(p, line, key, f"expected an integer in [1, {top:,}], got {v!r}")
    try:
        return ModelSpec.from_hf_config(cfg, name=Path(p).parent.name or p)
    except ConfigError as e:
        raise InputError(p, None, None, str(e)) from None
