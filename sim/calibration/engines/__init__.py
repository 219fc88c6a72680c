"""Engines that time real LLM inference for the calibration harness.

- :mod:`~sim.calibration.engines.torch_engine`: a Hugging Face transformers model of the
  real architecture with random weights, timed iteration by iteration (CUDA or CPU).
- :mod:`~sim.calibration.engines.vllm_engine`: vLLM's offline ``LLM`` with
  ``load_format="dummy"``, timed from vLLM's own request metrics.
- :mod:`~sim.calibration.engines.http_engine`: any OpenAI-compatible streaming endpoint,
  replaying a trace with its real arrival times.

This package module holds what they share: the one-line error for a missing optional
extra, and the provenance fields every record header carries.  Heavy imports (torch,
transformers, vLLM) happen inside functions so ``import sim`` stays light.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import subprocess
from pathlib import Path
from types import ModuleType

from sim.common.errors import AgentsimError

#: Which optional extra provides each heavy module.
EXTRA_FOR = {"torch": "calibrate", "transformers": "calibrate", "vllm": "vllm"}


class ShapeUnsupported(AgentsimError):
    """An engine cannot measure one grid shape (out of memory, unsupported batch kind);
    the recorder reports it and goes on with the next shape."""


def require(module: str) -> ModuleType:
    """Import ``module`` or raise a one-line :class:`AgentsimError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = EXTRA_FOR.get(module.split(".")[0], "calibrate")
        raise AgentsimError(
            f"{module} is not installed ({e}); install it with: pip install 'agentsim[{extra}]'"
        ) from None


def agentsim_commit() -> str | None:
    """The git commit of the agentsim checkout this code runs from (``None`` outside git)."""
    root = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def utc_now() -> str:
    """The current UTC time, ISO 8601 with a ``Z`` suffix, to the second."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def cpu_name() -> str:
    """A human-readable name of this machine's CPU (``model name`` of /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def nvidia_driver() -> str | None:
    """The NVIDIA driver version from ``nvidia-smi`` (``None`` when there is none)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def resolve_model_config(name: str) -> tuple[str, dict[str, object]]:
    """The display name and Hugging Face ``config.json`` dict of the model called ``name``.

    ``name`` is a preset or HF alias known to :func:`sim.specs.models.get_model` (its config is
    rebuilt from the preset's architecture numbers), or a path to a ``config.json`` (used
    as is; the display name is the file's folder name, as :func:`sim.specs.models.load_model_config`
    names it).  Raises :class:`~sim.common.errors.ConfigError` for an unknown model.
    """
    import json

    from sim.common.errors import ConfigError
    from sim.specs.models import get_model

    spec = get_model(name)
    p = Path(name)
    if p.suffix == ".json" and p.exists():
        try:
            loaded = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{name}: cannot read model config: {e}") from None
        return spec.name, dict(loaded)
    moe = spec.num_experts > 1
    cfg: dict[str, object] = {
        "architectures": ["MixtralForCausalLM" if moe else "LlamaForCausalLM"],
        "model_type": "mixtral" if moe else "llama",
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "vocab_size": spec.vocab_size,
        "max_position_embeddings": spec.max_context,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0 if spec.name.startswith("llama-3") else 10000.0,
        "tie_word_embeddings": spec.tied_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
    }
    if moe:
        cfg["num_local_experts"] = spec.num_experts
        cfg["num_experts_per_tok"] = spec.experts_per_token
    return spec.name, cfg
