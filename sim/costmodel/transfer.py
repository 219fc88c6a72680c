"""Achieved (not datasheet) data-movement rates for KV transfers and cold starts.

:mod:`sim.specs.topology` gives every link its datasheet bandwidth.  Real transfers reach a
fraction of it; :data:`ACHIEVED_FRACTION` holds that fraction per link type, each with
its source, and :func:`achieved_bandwidth` applies it.  Every KV move (host-tier swaps,
CPU-offload loads, migrations, fault reloads) and every cold start's weight load pays it:
``kv_transfer_time`` and ``load_time`` in :mod:`sim.costmodel.base` take the topology
``Path`` and derate by its bottleneck link type.

Sources (per link type; numbers are per direction):

- ``nvlink``: A100 NVLink3, 300 GB/s datasheet; nccl-tests on DGX A100 reach ~230-240 GB/s
  bus bandwidth for large messages (NVIDIA nccl-tests README / DGX A100 performance
  guide), and Vidur's measured ``a100_dgx`` send_recv table reaches ~0.8 of peak at
  64 MiB -> 0.8.
- ``pcie``: Gen4 x16, 32 GB/s raw; pinned ``cudaMemcpy`` host<->device measures
  ~25 GB/s (CUDA ``bandwidthTest`` sample on A100 hosts) -> 0.78.
- ``network``: HDR InfiniBand 200 Gb/s = 25 GB/s; ``ib_write_bw`` reaches ~23-24 GB/s
  (perftest on ConnectX-6), GPUDirect RDMA similar -> 0.92.
- ``host``: host DRAM reached over PCIe: the PCIe factor applies (the DRAM side, ~100 GB/s
  per socket, is never the bottleneck) -> 0.78.
- ``nvme``: the topology already uses a measured per-drive sequential read (6.8 GB/s,
  Gen4 U.2 datasheet sequential read is measured 4 MiB reads) -> 1.0.
- ``storage``/``local``: no derating -> 1.0.
"""

from __future__ import annotations

#: Achieved fraction of a link's datasheet bandwidth, by link type (see module docstring).
ACHIEVED_FRACTION: dict[str, float] = {
    "nvlink": 0.8,
    "pcie": 0.78,
    "network": 0.92,
    "host": 0.78,
    "nvme": 1.0,
    "storage": 1.0,
    "local": 1.0,
}

#: Engine initialisation on a cold start (s): vLLM 0.6 on A100 spends ~15-30 s on
#: process start, NCCL init, memory profiling and CUDA-graph capture (vLLM startup logs);
#: 20 s is the middle of that range.  Weight loading is priced separately.
ENGINE_INIT_S = 20.0


def achieved_bandwidth(link: str | None, bandwidth: float) -> float:
    """``bandwidth`` (bytes/s, datasheet) derated by the link type's achieved fraction;
    unknown or missing link types are not derated."""
    if link is None:
        return bandwidth
    return bandwidth * ACHIEVED_FRACTION.get(link, 1.0)
