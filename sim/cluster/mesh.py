"""Service-mesh and gateway overhead: the per-hop latency (and CPU) every LLM call pays.

In a Kubernetes deployment behind a service mesh every call crosses proxies: the
client's sidecar, an ingress or inference gateway, the server pod's sidecar.  Each
proxy adds latency to the request and to the response, and burns CPU.  A deployment
sets ``mesh_hops`` (proxies per call; 0: no mesh, the default), and each hop's added
round-trip latency follows a log-normal distribution fitted to its published 90th and
99th percentiles (``mesh_hop_p90_s``, ``mesh_hop_p99_s``); ``mesh_hop_cpu_s`` is the
proxy CPU time per call per hop (vCPU-seconds).

How the simulator charges it: one call's overhead is the sum of ``mesh_hops``
independent samples; half of it delays the call's arrival at the router and replica
(so it counts in TTFT, end-to-end latency and session time) and half delays the
completion's return to the agent (end-to-end and session time, not TTFT: the
simulator's first-token time is when the replica produces it).  An agent's next call
is issued only after the completion returns, so an N-call chain pays it N times.

Default figures (Istio's own benchmarks: 1000 requests/s of 1 KB over HTTP/1.1 with
mutual TLS, through a client-side and a server-side sidecar, i.e. two hops):

- Latency: Istio 1.12.3 "the two proxies add about 1.7 ms and 2.7 ms to the 90th and
  99th percentile latency" (istio.io, Performance and Scalability; reproduced in the
  OpenShift Service Mesh 2.x docs, "Additional latency"), i.e. 0.85 ms (p90) and
  1.35 ms (p99) per hop.  Older releases measured more (Istio 1.9-1.11: 2.65 ms p90
  for the two proxies; Istio 1.3-1.4: 6-7 ms).
- CPU: "a single sidecar proxy with 2 worker threads consumes about 0.20 vCPU" per
  1000 requests/s (Istio 1.24, same page), i.e. 2e-4 vCPU-seconds per request per hop.
- CPU price: ``VCPU_HOUR_USD`` = $0.0425 per vCPU-hour (AWS EC2 c6i.xlarge on-demand,
  us-east-1: $0.17/h for 4 vCPUs).

Units: seconds, vCPU-seconds, US dollars.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from sim.common.errors import ConfigError

#: Istio 1.12.3 per-hop added latency (half of the two-proxy figures), seconds
ISTIO_HOP_P90_S = 0.85e-3
ISTIO_HOP_P99_S = 1.35e-3
#: Istio 1.24 sidecar CPU: 0.20 vCPU per 1000 requests/s, in vCPU-seconds per request
ISTIO_HOP_CPU_S = 0.20 / 1000.0
#: $ per vCPU-hour (AWS c6i.xlarge on-demand, us-east-1: $0.17/h for 4 vCPUs)
VCPU_HOUR_USD = 0.17 / 4

Z90 = 1.2815515655446004  # standard normal quantiles
Z99 = 2.3263478740408408


@dataclass(frozen=True, slots=True)
class HopModel:
    """Per-call overhead of one deployment: ``hops`` log-normal hops and their CPU."""

    hops: int
    mu: float  # log-normal location (ln seconds)
    sigma: float  # log-normal shape
    cpu_s: float  # vCPU-seconds per call per hop

    @classmethod
    def from_percentiles(cls, hops: int, p90_s: float, p99_s: float, cpu_s: float) -> HopModel:
        """Fit a log-normal per hop to its 90th and 99th percentiles (seconds)."""
        if hops < 0 or p90_s <= 0 or p99_s < p90_s or cpu_s < 0:
            raise ConfigError(
                f"mesh: need mesh_hops >= 0, 0 < mesh_hop_p90_s <= mesh_hop_p99_s and "
                f"mesh_hop_cpu_s >= 0 (got {hops}, {p90_s}, {p99_s}, {cpu_s})"
            )
        sigma = (math.log(p99_s) - math.log(p90_s)) / (Z99 - Z90)
        return cls(hops, math.log(p90_s) - Z90 * sigma, sigma, cpu_s)

    @property
    def median_s(self) -> float:
        """Median added latency of one hop (seconds)."""
        return math.exp(self.mu)

    @property
    def mean_s(self) -> float:
        """Mean added latency of one hop (seconds)."""
        return math.exp(self.mu + self.sigma**2 / 2)


class MeshOverhead:
    """Samples each call's mesh overhead (seeded) and totals latency and CPU.

    ``models``: the :class:`HopModel` per deployed model (models without a mesh are
    left out).
    """

    def __init__(self, models: Mapping[str, HopModel], seed: int = 0) -> None:
        self.models = {m: h for m, h in models.items() if h.hops > 0}
        self._rng = random.Random(f"mesh-{seed}")
        self.calls = 0
        self.overhead_s = 0.0
        self.cpu_s = 0.0

    def sample(self, model: str) -> float:
        """Total added round-trip latency (seconds) of one call of ``model``."""
        hop = self.models.get(model)
        if hop is None:
            return 0.0
        lv = self._rng.lognormvariate
        total = sum(lv(hop.mu, hop.sigma) for _ in range(hop.hops))
        self.calls += 1
        self.overhead_s += total
        self.cpu_s += hop.hops * hop.cpu_s
        return total

    def summary(self) -> dict[str, float]:
        """``mesh_calls``, ``mesh_overhead_s`` (summed over calls), ``mesh_cpu_hours``,
        ``mesh_cpu_usd``."""
        hours = self.cpu_s / 3600.0
        return {
            "mesh_calls": self.calls,
            "mesh_overhead_s": self.overhead_s,
            "mesh_cpu_hours": hours,
            "mesh_cpu_usd": hours * VCPU_HOUR_USD,
        }
