"""Per-seed arrival variations of a workload, so that seeds vary the arrivals too.

Used by the runner (a run spec with ``jitter``), ``agentsim compare`` (``--jitter``,
``--retime``) and sweeps (``[base] jitter``).  Times are seconds.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sim.common.errors import ConfigError
from sim.workload.calls import Workload


def session_starts(wl: Workload) -> dict[str, float]:
    """Each session's first issue time (seconds), by session id."""
    starts: dict[str, float] = {}
    for c in wl.calls:
        starts[c.session_id] = min(starts.get(c.session_id, c.issue_time_s), c.issue_time_s)
    return starts


def mean_session_gap(wl: Workload) -> float:
    """Mean seconds between consecutive session starts ((last - first) / (sessions - 1));
    0 with fewer than two sessions or when they all start at once."""
    starts = session_starts(wl)
    if len(starts) < 2:
        return 0.0
    return (max(starts.values()) - min(starts.values())) / (len(starts) - 1)


def jittered(wl: Workload, seed: int) -> Workload:
    """A copy of ``wl`` with each session moved in time by its own offset drawn
    uniformly from [-g/2, g/2), g = :func:`mean_session_gap` (seconds; the draw is
    seeded by ``seed``, in order of session start).  Calls inside a session keep their
    relative timing; times are clipped at 0.  Unlike :func:`retimed` the trace's arrival
    pattern (bursts, diurnal shape) is kept, only each arrival's exact instant varies.
    A workload whose sessions all start at one instant is returned unchanged."""
    from sim.workload.calls import topo_order

    gap = mean_session_gap(wl)
    if gap <= 0:
        return wl
    starts = session_starts(wl)
    order = sorted(starts, key=lambda sid: (starts[sid], sid))
    rng = np.random.default_rng(seed)
    offsets = dict(zip(order, rng.uniform(-gap / 2, gap / 2, len(order)).tolist(), strict=True))
    calls = [
        replace(c, issue_time_s=max(0.0, c.issue_time_s + offsets[c.session_id])) for c in wl.calls
    ]
    return Workload(topo_order(calls), name=wl.name, source=wl.source, meta=dict(wl.meta))


def retimed(wl: Workload, seed: int) -> Workload:
    """A copy of ``wl`` whose session starts form a Poisson process (``seed``) at the
    trace's mean session rate (sessions / seconds between first and last start)."""
    from sim.workload.traces.sample import retime_sessions

    starts = session_starts(wl)
    span = max(starts.values()) - min(starts.values()) if starts else 0.0
    if len(starts) < 2 or span <= 0:
        raise ConfigError(
            f"{wl.source or wl.name}: --retime needs sessions starting at different times"
        )
    calls = retime_sessions([replace(c) for c in wl.calls], (len(starts) - 1) / span, seed)
    return Workload(calls, name=wl.name, source=wl.source, meta=dict(wl.meta))
