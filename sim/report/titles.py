"""How reports name a simulated cluster (shared by the Markdown report and the plots)."""

from __future__ import annotations

from typing import Any


def _gpu_label(gpu: str) -> str:
    """``a100-80gb`` -> ``A100 80GB``, ``a100-80gb-pcie`` -> ``A100 80GB PCIe``."""
    return " ".join("PCIe" if w == "pcie" else w.upper() for w in str(gpu).split("-"))


def cluster_title(cl: dict[str, Any]) -> str:
    """How reports title a cluster (``config.json``'s ``cluster``): by the hardware
    simulated, its node builder and GPU type (``2x DGX H100 80GB``, ``2x PCIe server
    (8x L40S 48GB)``), so that ``--gpu`` / ``--nodes`` overrides show.  A config's own
    ``name`` is kept when nothing overrode the config; after command-line or sweep
    overrides it is named as the origin.  An unnamed config (the ``ClusterConfig``
    default name) is titled by its hardware alone."""
    from sim.cluster.config import ClusterConfig

    gpu = _gpu_label(cl["gpu"])
    parts = []
    for n in cl["nodes"]:
        if n["builder"] == "dgx-a100":  # the NVSwitch node builder, whatever the GPU
            each = "" if int(n["gpus"]) == 8 else f" ({n['gpus']} GPUs each)"
            parts.append(f"{n['count']}x DGX {gpu}{each}")
        elif n["builder"] == "pcie-server":
            parts.append(f"{n['count']}x PCIe server ({n['gpus']}x {gpu})")
        else:
            parts.append(f"{n['count']}x {n['builder']} ({n['gpus']}x {gpu})")
    hardware = " + ".join(parts)
    name = str(cl.get("name") or "")
    source = str(cl.get("source") or "")
    if not name or name in (hardware, ClusterConfig.name):
        return hardware
    if "command-line overrides" in source or " (with " in source:
        return f'{hardware} (config "{name}" with overrides)'
    return name
