"""Session arrival processes: when each session's root call is issued.

* ``poisson``: exponential inter-arrival times at ``rate_per_s``;
* ``bursty``: Gamma inter-arrival times with mean ``1 / rate_per_s`` and coefficient of
  variation ``cv`` (> 1 clusters arrivals into bursts; BurstGPT fits Gamma/Weibull
  inter-arrivals this way);
* ``diurnal``: a Poisson process whose rate swings sinusoidally,
  ``rate(t) = rate_per_s * (1 + amplitude * sin(2 pi t / period_s))``, by thinning;
* ``replay``: the session start times of a recorded trace (first ``n``), optionally
  scaled by ``time_scale``.

All return ``n`` non-decreasing times in seconds starting near 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PROCESSES = ("poisson", "bursty", "diurnal", "replay")


@dataclass(frozen=True)
class ArrivalConfig:
    """Parameters of a session arrival process (see the module docstring).

    Attributes:
        process: one of ``PROCESSES``.
        rate_per_s: mean session arrivals per second.
        cv: coefficient of variation of inter-arrival times (bursty).
        period_s: period of the rate swing, seconds (diurnal).
        amplitude: relative rate swing in [0, 1] (diurnal).
        trace: trace whose session start times are replayed (replay).
        time_scale: factor applied to replayed times (replay).
    """

    process: str = "poisson"
    rate_per_s: float = 0.1
    cv: float = 3.0
    period_s: float = 86400.0
    amplitude: float = 0.8
    trace: str = ""
    time_scale: float = 1.0


def session_starts(trace_path: str) -> list[float]:
    """Start time (first issue time) of every session of a trace, sorted, from 0."""
    from sim.workload.traces import load_trace

    first: dict[str, float] = {}
    for c in load_trace(trace_path).calls:
        t = first.get(c.session_id)
        if t is None or c.issue_time_s < t:
            first[c.session_id] = c.issue_time_s
    starts = sorted(first.values())
    return [t - starts[0] for t in starts]


def arrival_times(cfg: ArrivalConfig, n: int, rng: np.random.Generator) -> list[float]:
    """``n`` session arrival times in seconds under ``cfg``."""
    if cfg.process == "replay":
        starts = session_starts(cfg.trace)
        if len(starts) < n:
            raise ValueError(f"{cfg.trace} has {len(starts)} sessions, fewer than the {n} asked")
        return [t * cfg.time_scale for t in starts[:n]]
    mean = 1.0 / cfg.rate_per_s
    if cfg.process == "poisson":
        gaps = rng.exponential(mean, n)
    elif cfg.process == "bursty":
        shape = 1.0 / (cfg.cv * cfg.cv)
        gaps = rng.gamma(shape, mean / shape, n)
    elif cfg.process == "diurnal":
        peak = cfg.rate_per_s * (1.0 + cfg.amplitude)
        out: list[float] = []
        t = 0.0
        while len(out) < n:
            t += float(rng.exponential(1.0 / peak))
            rate = cfg.rate_per_s * (1.0 + cfg.amplitude * math.sin(2 * math.pi * t / cfg.period_s))
            if rng.random() * peak < rate:
                out.append(t)
        return [x - out[0] for x in out]
    else:
        raise ValueError(
            f"unknown arrival process {cfg.process!r}; use one of {', '.join(PROCESSES)}"
        )
    times = np.cumsum(gaps)
    return [float(x - times[0]) for x in times]
