"""GPU specifications.

Sources (per field):
- memory, HBM bandwidth, dense BF16 tensor FLOP/s, NVLink bandwidth: NVIDIA A100
  datasheet (2021, "NVIDIA A100 Tensor Core GPU", SXM4 and PCIe columns) and H100
  datasheet (2023, SXM5 column).  Dense (not sparse) numbers.
- price per GPU-hour: AWS on-demand list prices, us-east-1, divided by 8 GPUs:
  p4d.24xlarge $32.77/h (A100 40GB), p4de.24xlarge $40.97/h (A100 80GB),
  p5.48xlarge $98.32/h (H100).  The PCIe A100 price is a typical cloud list price for
  a single A100 80GB PCIe (e.g. Lambda/Azure NC A100 v4 at about $3.67/h).
- ``peak_flops_fp8``: dense FP8 tensor FLOP/s (0: no FP8 tensor cores, as on A100).
  H100 SXM5: 1,979 TFLOPS dense (3,958 with sparsity), H100 datasheet.

Later presets (``h200-141gb``, ``l40s-48gb``, ``b200-180gb``), per field:
- ``memory_bytes`` is the total the driver reports (``nvidia-smi`` memory.total, which
  is also what ``torch.cuda.mem_get_info`` returns and what vLLM's
  ``gpu_memory_utilization`` multiplies), not the marketing number: H200 143771 MiB
  (datasheet "141 GB"), L40S 46068 MiB with ECC on (datasheet "48 GB GDDR6 with
  ECC"), B200 183359 MiB (HGX B200 datasheet "180 GB").  The older presets keep their
  datasheet values (A100 80GB reports 81920 MiB = 80 GiB; H100 reports 81559 MiB).
- H200 SXM (NVIDIA H200 Tensor Core GPU datasheet, 2024, SXM column): HBM3e 4.8 TB/s;
  BF16/FP16 tensor 989 TFLOPS dense (1,979 with sparsity); FP8 1,979 dense (3,958
  sparse); NVLink 900 GB/s bidirectional = 450 GB/s per direction; PCIe Gen5
  128 GB/s bidirectional = 64 GB/s per direction.
- L40S (NVIDIA L40S datasheet, 2023; PCIe card, no NVLink): GDDR6 864 GB/s; BF16/FP16
  tensor 362.05 TFLOPS dense (733 with sparsity); FP8 733 dense (1,466 sparse); PCIe
  Gen4 x16 64 GB/s bidirectional = 32 GB/s per direction.
- B200 (NVIDIA HGX B200 datasheet, per GPU of the 8-GPU board at 1,000 W): HBM3e
  8 TB/s; BF16/FP16 tensor 2.25 PFLOPS dense (4.5 sparse); FP8 4.5 PFLOPS dense (9
  sparse); NVLink 5 1.8 TB/s bidirectional = 900 GB/s per direction; host link PCIe
  Gen5 x16 = 64 GB/s per direction.
- prices: L40S, AWS g6e.xlarge on-demand (1x L40S, us-east-1, $1.861/h, as listed by
  modal.com "How much does it cost to run NVIDIA L40S GPUs in 2025?", Aug 2025);
  H200 and B200, Spheron on-demand list prices of 17 March 2026 ($4.54/h per H200 SXM,
  $6.03/h per B200 SXM; spheron.network blog "NVIDIA H200 vs B200 vs GB200"), one
  provider for both so that the two compare.
Users override any field from a cluster TOML.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sim.common.errors import ConfigError

GiB = 1024**3
MiB = 1024**2
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
    form_factor: str = "sxm"  # "pcie": a PCIe card (nodes of such GPUs use pcie-server)
    peak_flops_fp8: float = 0.0  # dense FP8 tensor FLOP/s; 0: no FP8 tensor cores
    #: per-GPU compute NIC, per direction (bytes/s): DGX A100 ships 8 ConnectX-6 HDR
    #: InfiniBand at 200 Gb/s = 25 GB/s (DGX A100 user guide); DGX H100/H200 and DGX
    #: B200 ship 8 ConnectX-7 at 400 Gb/s = 50 GB/s (DGX H100 / DGX B200 user guides)
    nic_bandwidth: float = 25 * GB

    @property
    def has_nvlink(self) -> bool:
        return self.nvlink_bandwidth > 0

    @property
    def supports_fp8(self) -> bool:
        return self.peak_flops_fp8 > 0


GPUS: dict[str, GPUSpec] = {
    "a100-40gb": GPUSpec("a100-40gb", 40 * GiB, 1555 * GB, 312e12, 300 * GB, 32 * GB, 32.77 / 8),
    "a100-80gb": GPUSpec("a100-80gb", 80 * GiB, 2039 * GB, 312e12, 300 * GB, 32 * GB, 40.97 / 8),
    # PCIe card: NVLink bridge joins pairs of cards (600 GB/s both directions).
    "a100-80gb-pcie": GPUSpec(
        "a100-80gb-pcie", 80 * GiB, 1935 * GB, 312e12, 300 * GB, 32 * GB, 3.67, "pcie"
    ),
    "h100-80gb": GPUSpec(
        "h100-80gb",
        80 * GiB,
        3350 * GB,
        989e12,
        450 * GB,
        64 * GB,
        98.32 / 8,
        "sxm",
        1979e12,
        50 * GB,
    ),
    "h200-141gb": GPUSpec(
        "h200-141gb",
        143771 * MiB,
        4800 * GB,
        989e12,
        450 * GB,
        64 * GB,
        4.54,
        "sxm",
        1979e12,
        50 * GB,
    ),
    # PCIe card without NVLink: TP groups talk over PCIe (through the host's switches)
    "l40s-48gb": GPUSpec(
        "l40s-48gb", 46068 * MiB, 864 * GB, 362.05e12, 0.0, 32 * GB, 1.861, "pcie", 733e12
    ),
    "b200-180gb": GPUSpec(
        "b200-180gb",
        183359 * MiB,
        8000 * GB,
        2250e12,
        900 * GB,
        64 * GB,
        6.03,
        "sxm",
        4500e12,
        50 * GB,
    ),
}


def gpu_help() -> str:
    """One line listing the GPU presets (for ``--gpu`` help texts)."""
    return ", ".join(
        f"{n} ({g.memory_bytes / GiB:.0f} GiB{', PCIe' if g.form_factor == 'pcie' else ''}"
        f"{', no NVLink' if not g.has_nvlink else ''})"
        for n, g in GPUS.items()
    )


def get_gpu(name: str, **overrides: float) -> GPUSpec:
    """A GPU preset by name, with optional field overrides."""
    if name not in GPUS:
        import difflib

        close = difflib.get_close_matches(name, list(GPUS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown GPU {name!r}{hint}; known: {', '.join(GPUS)}")
    spec = GPUS[name]
    return replace(spec, **overrides) if overrides else spec  # type: ignore[arg-type]
