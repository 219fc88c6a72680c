"""Sampling whole sessions out of a workload, and re-timing session starts."""

from __future__ import annotations

import numpy as np

from sim.workload.calls import Call, Workload, topo_order


def sample_sessions(
    w: Workload, n: int, seed: int | None = None, max_calls: int | None = None
) -> list[Call]:
    """The calls of ``n`` whole sessions of ``w``, in workload order.

    Only sessions of at most ``max_calls`` calls are eligible (all when None).  Without
    a seed the first ``n`` eligible sessions by start time are kept; with one, ``n``
    drawn uniformly without replacement.
    """
    sessions = w.sessions()
    order = sorted(
        (s for s, cs in sessions.items() if max_calls is None or len(cs) <= max_calls),
        key=lambda s: min(c.issue_time_s for c in sessions[s]),
    )
    if seed is None:
        keep = set(order[:n])
    else:
        rng = np.random.default_rng(seed)
        keep = {order[i] for i in rng.choice(len(order), size=min(n, len(order)), replace=False)}
    return [c for c in w.calls if c.session_id in keep]


def retime_sessions(calls: list[Call], rate_per_s: float, seed: int = 0) -> list[Call]:
    """Shift each session in time so that session starts form a Poisson process of
    ``rate_per_s`` sessions per second (first session at 0); relative timing inside a
    session is kept.  Modifies and returns ``calls``, re-sorted by issue time."""
    starts: dict[str, float] = {}
    for c in calls:
        starts[c.session_id] = min(starts.get(c.session_id, c.issue_time_s), c.issue_time_s)
    order = sorted(starts, key=lambda s: starts[s])
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate_per_s, len(order))
    gaps[0] = 0.0
    new = dict(zip(order, np.cumsum(gaps).tolist(), strict=True))
    for c in calls:
        c.issue_time_s = max(0.0, c.issue_time_s - starts[c.session_id] + new[c.session_id])
    return topo_order(calls)
