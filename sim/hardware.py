"""GPU specifications.

Sources (per field):
- memory, HBM bandwidth, dense BF16 tensor FLOP/s, NVLink bandwidth: NVIDIA A100
  datasheet (2021, "NVIDIA A100 Tensor Core GPU", SXM4 and PCIe columns) and H100
  datasheet (2023, SXM5 column).  Dense (not sparse) numbers.
- price per GPU-hour: AWS on-demand list prices, us-east-1, divided by 8 GPUs:
  p4d.24xlarge $32.77/h (A100 40GB), p4de.24xlarge $40.97/h (A100 80GB),
  p5.48xlarge $98.32/h (H100).  The PCIe A100 price is a typical cloud list price for
  a single A100 80GB PCIe (e.g. Lambda/Azure NC A100 v4 at about $3.67/h).
Users override any field from a cluster TOML.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sim.errors import ConfigError

GiB = 1024**3
GB = 1e9


@dataclass(frozen=True, slots=True)
class GPUSpec:
    """One GPU type.  Units: bytes, bytes/s, FLOP/s, USD per GPU-hour."""

    name: str
    memory_bytes: int
    hbm_bandwidth: float
    peak_flops: float
    nvlink_bandwidth: float  # per direction, bytes/s; 0 when the GPU has no NVLink
    pcie_bandwidth: float  # per direction, bytes/s
    price_per_hour: float
    form_factor: str = "sxm"


GPUS: dict[str, GPUSpec] = {
    "a100-40gb": GPUSpec("a100-40gb", 40 * GiB, 1555 * GB, 312e12, 300 * GB, 32 * GB, 32.77 / 8),
    "a100-80gb": GPUSpec("a100-80gb", 80 * GiB, 2039 * GB, 312e12, 300 * GB, 32 * GB, 40.97 / 8),
    # PCIe card: NVLink bridge joins pairs of cards (600 GB/s both directions).
    "a100-80gb-pcie": GPUSpec(
        "a100-80gb-pcie", 80 * GiB, 1935 * GB, 312e12, 300 * GB, 32 * GB, 3.67, "pcie"
    ),
    "h100-80gb": GPUSpec("h100-80gb", 80 * GiB, 3350 * GB, 989e12, 450 * GB, 64 * GB, 98.32 / 8),
}


def get_gpu(name: str, **overrides: float) -> GPUSpec:
    """A GPU preset by name, with optional field overrides."""
    if name not in GPUS:
        import difflib

        close = difflib.get_close_matches(name, list(GPUS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown GPU {name!r}{hint}; known: {', '.join(GPUS)}")
    spec = GPUS[name]
    return replace(spec, **overrides) if overrides else spec  # type: ignore[arg-type]
