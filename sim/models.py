"""Model architectures: weight bytes, KV bytes per token and FLOPs from the config alone.

Preset numbers are copied from each model's published Hugging Face ``config.json``.
Any HF-style config dict loads through :func:`ModelSpec.from_hf_config`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.errors import ConfigError

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "fp16": 2, "bf16": 2, "float32": 4, "fp8": 1, "int8": 1}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only transformer.

    Attributes:
        name: preset or HF name.
        num_layers, hidden_size, num_heads, num_kv_heads, head_dim, intermediate_size,
        vocab_size: the architecture (as in HF configs).
        num_experts, experts_per_token: MoE shape (1/1 for dense models).
        dtype_bytes: bytes per weight and per KV element (2 for bf16/fp16).
        tied_embeddings: input embedding shared with the LM head.
        max_context: the model's maximum sequence length (tokens).
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
    def params_per_layer(self) -> int:
        router = self.hidden_size * self.num_experts if self.num_experts > 1 else 0
        norms = 2 * self.hidden_size
        return (
            self.attn_params_per_layer
            + self.num_experts * self.mlp_params_per_expert
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
        """Bytes of all weights."""
        return self.num_params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token occupies over all layers: 2 x layers x kv_heads x head_dim x dtype."""
        return 2 * self.num_layers * self.kv_size * self.dtype_bytes

    @property
    def active_params_per_token(self) -> int:
        """Weights one token multiplies (MoE: only its routed experts)."""
        per_layer = self.attn_params_per_layer + self.experts_per_token * self.mlp_params_per_expert
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
        """Build a spec from a Hugging Face ``config.json`` dict (Llama/Mistral/Mixtral/Cohere/Qwen style)."""
        try:
            h = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            spec = cls(
                name=name or str(cfg.get("_name_or_path") or cfg.get("model_type") or "custom"),
                num_layers=int(cfg["num_hidden_layers"]),
                hidden_size=h,
                num_heads=heads,
                num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or h // heads),
                intermediate_size=int(cfg["intermediate_size"]),
                vocab_size=int(cfg["vocab_size"]),
                num_experts=int(cfg.get("num_local_experts") or cfg.get("num_experts") or 1),
                experts_per_token=int(cfg.get("num_experts_per_tok") or 1),
                dtype_bytes=DTYPE_BYTES.get(
                    str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"), 2
                ),
                tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                max_context=int(cfg.get("max_position_embeddings") or 4096),
            )
        except KeyError as e:
            raise ConfigError(f"model config {name or ''}: missing field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model config {name or ''}: {e}") from None
        return spec


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
}

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


def load_model_config(path: str | Path) -> ModelSpec:
    """Load a model from a Hugging Face ``config.json`` file."""
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read model config: {e}") from None
    return ModelSpec.from_hf_config(cfg, name=Path(path).parent.name or str(path))
