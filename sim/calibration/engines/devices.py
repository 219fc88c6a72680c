"""Device names in records: the agentsim GPU key a measured device is filed under.

A record header's ``gpu`` must name an entry of :data:`sim.specs.hardware.GPUS` for the fit
(whose roofline efficiencies are fractions of that entry's datasheet peaks) and the
simulator to use it.  :func:`gpu_key` maps CUDA device names to those keys; the raw
device name is kept in the header's ``device_name``.

CPU runs are filed under ``"cpu"``, a *nominal* device registered here (see
:data:`CPU_SPEC`): its peaks are round upper bounds, not a datasheet, so fitted
efficiencies stay in (0, 1); the fitted throughputs (peak x efficiency) are what the
cost model uses.  The numbers are constants, not the machine's, so a fit of CPU records
does not depend on the CPU that refits them (``replay --check``: calibration/README.md).
"""

from __future__ import annotations

from sim.specs.hardware import GB, GPUS, GiB, GPUSpec

#: Nominal spec of "the CPU" as a device: 2 TFLOP/s, 100 GB/s, 16 GiB, no NVLink, no price.
CPU_SPEC = GPUSpec(
    name="cpu",
    memory_bytes=16 * GiB,
    hbm_bandwidth=100 * GB,
    peak_flops=2e12,
    nvlink_bandwidth=0.0,
    pcie_bandwidth=16 * GB,
    price_per_hour=0.0,
    form_factor="cpu",
)

#: Substrings of CUDA device names (lower case) -> agentsim GPU key, most specific first.
_CUDA_NAMES = (
    ("h100", "h100-80gb"),
    ("a100-sxm4-40gb", "a100-40gb"),
    ("a100-pcie-40gb", "a100-40gb"),
    ("a100 80gb pcie", "a100-80gb-pcie"),
    ("a100-pcie-80gb", "a100-80gb-pcie"),
    ("a100", "a100-80gb"),
)


def register_cpu() -> None:
    """Make ``"cpu"`` a known device of :data:`sim.specs.hardware.GPUS` (idempotent)."""
    GPUS.setdefault("cpu", CPU_SPEC)


def gpu_key(device: str, cuda_name: str | None = None) -> str | None:
    """The agentsim GPU key of a device (``"cpu"`` for CPU runs), or ``None`` when the
    CUDA device has no entry in :data:`sim.specs.hardware.GPUS`."""
    if device == "cpu":
        register_cpu()
        return "cpu"
    name = (cuda_name or "").lower()
    if "h100" in name and "pcie" in name:
        return None  # H100 PCIe differs from the SXM datasheet entry
    for sub, key in _CUDA_NAMES:
        if sub in name and key in GPUS:
            return key
    return None


register_cpu()
