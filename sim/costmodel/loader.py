"""Which cost model a run uses, and loading one from a TOML of any kind.

The one place that maps GPUs to default cost models and ``kind`` keys to loaders; it
imports the model modules (:mod:`sim.costmodel.base`, :mod:`~sim.costmodel.fitted`,
:mod:`~sim.costmodel.vllm_step`), none of which imports it; the fitted operator model
only when a run names one (a default run does not load its module).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from sim.common.errors import InputError
from sim.common.io import read_toml
from sim.costmodel.base import CostModel
from sim.costmodel.vllm_step import load_step_costmodel

#: The default cost model of each GPU when none is named: the serving-calibrated vLLM
#: step model (``calibration/costmodels/vllm-serving.toml``, package copy in
#: ``sim/data/costmodels``; validated against measured vLLM runs on H100, A100 and
#: L40S, see docs/fidelity.md) for every GPU preset; its coefficients are fractions of
#: datasheet peaks, so GPUs it was not fitted on (H200, B200) are priced from their
#: datasheets.  The one place that maps GPUs to default cost models.
DEFAULT_COSTMODEL_BY_GPU: dict[str, str] = {
    "a100-40gb": "vllm-serving",
    "a100-80gb": "vllm-serving",
    "a100-80gb-pcie": "vllm-serving",
    "h100-80gb": "vllm-serving",
    "h200-141gb": "vllm-serving",
    "l40s-48gb": "vllm-serving",
    "b200-180gb": "vllm-serving",
}

#: The default for a GPU missing from :data:`DEFAULT_COSTMODEL_BY_GPU`.
FALLBACK_COSTMODEL = "vllm-serving"


def default_costmodel_name(gpu: str | None = None) -> str:
    """Name of the committed default cost model of ``gpu`` (None: of any GPU)."""
    if gpu is None:
        return FALLBACK_COSTMODEL
    return DEFAULT_COSTMODEL_BY_GPU.get(gpu, FALLBACK_COSTMODEL)


def default_cost_model(gpu: str | None = None) -> CostModel:
    """The cost model the simulator uses for ``gpu`` when none is named
    (:data:`DEFAULT_COSTMODEL_BY_GPU`), loaded from the package data once."""
    return _packaged_cost_model(default_costmodel_name(gpu))


@cache
def _packaged_cost_model(name: str) -> CostModel:
    path = Path(__file__).resolve().parent.parent / "data" / "costmodels" / f"{name}.toml"
    return load_any_costmodel(path)


def load_any_costmodel(path: Any) -> CostModel:
    """A cost model TOML of any kind: ``kind = "vllm-step"`` (the vLLM step model,
    :mod:`sim.costmodel.vllm_step`) or the fitted operator model (no ``kind``)."""
    p = Path(path)
    # read_toml: missing, unreadable, non-UTF-8 and invalid TOML raise InputError
    # naming the file (and the line where known)
    kind = read_toml(p)[0].get("kind")
    if kind == "vllm-step":
        return load_step_costmodel(p)
    if kind is not None:
        raise InputError(
            str(p), None, "kind", f"unknown cost model kind {kind!r} (known: vllm-step)"
        )
    from sim.costmodel.fitted import load_costmodel

    return load_costmodel(p)


def resolve_cost_model(path: str | None, gpu: str | None = None) -> CostModel:
    """The cost model stored at ``path`` (a TOML of any kind), or the default of
    ``gpu`` when None."""
    if path is None:
        return default_cost_model(gpu)
    return load_any_costmodel(path)
