"""Processor-sharing links: KV transfers as flows that share the topology's links.

A flow moves ``nbytes`` over a route of directed topology links
(:meth:`sim.specs.topology.Topology.route`).  Concurrent flows share each link's
bandwidth max-min fairly (progressive filling: the most contended link splits its
capacity evenly among its flows, those flows are fixed, and the rest share what is
left), so two flows on one link each get half.  A flow may also carry a rate cap of its
own (a producer slower than the network).  Rates are recomputed only when a flow starts,
ends or changes its cap, never per token or per byte: between those events every flow
runs at a constant rate, and one SimPy timeout marks the earliest end.  A flow's data is
delivered ``latency`` seconds (its route's summed link latency) after its last byte
leaves, so on an idle route a flow takes exactly ``nbytes / bandwidth + latency``.

Link capacity is the datasheet bandwidth of the topology edge (read when rates are
recomputed, so a degraded link slows flows from the next event on) at the link type's
achieved fraction (:func:`sim.costmodel.transfer.achieved_bandwidth`).  A link of zero
bandwidth on a route is an error naming the link.  Units: bytes, bytes/s, seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import simpy

from sim.common.errors import ConfigError
from sim.costmodel.transfer import achieved_bandwidth
from sim.specs.topology import Link, Topology

#: A flow whose bytes left are at most this fraction of its size has finished
#: (rounding of rate x time products).
_DONE_FRACTION = 1e-9


@dataclass(eq=False)
class Flow:
    """One transfer over a route: ``nbytes`` in total, ``remaining`` still to send."""

    links: tuple[Link, ...]
    nbytes: float
    latency: float
    on_done: Callable[[float], object]
    cap: float = math.inf  # the flow's own rate limit (bytes/s)
    remaining: float = 0.0
    rate: float = 0.0
    start_s: float = 0.0

    def __post_init__(self) -> None:
        self.remaining = self.nbytes


@dataclass
class LinkStats:
    """What crossed one directed link: bytes and flows, and the link type."""

    link_type: str
    nbytes: float = 0.0
    flows: int = 0


@dataclass
class LinkNetwork:
    """Flows over a topology's links, sharing them max-min fairly."""

    env: simpy.Environment
    topology: Topology
    active: list[Flow] = field(default_factory=list)
    stats: dict[Link, LinkStats] = field(default_factory=dict)
    _t: float = 0.0  # when the rates were last applied
    _gen: int = 0  # a timer with an older generation is stale

    def capacity(self, link: Link) -> float:
        """Achieved bandwidth (bytes/s) of a directed link now."""
        e = self.topology.graph.edges[link]
        return achieved_bandwidth(e["link"], e["bandwidth"])

    def route_latency(self, links: Sequence[Link]) -> float:
        """Summed latency (s) of a route's links."""
        edges = self.topology.graph.edges
        return float(sum(edges[lk]["latency"] for lk in links))

    def start(
        self,
        links: tuple[Link, ...],
        nbytes: float,
        on_done: Callable[[float], object],
        cap: float = math.inf,
        sent: float = 0.0,
    ) -> Flow:
        """Start a flow of ``nbytes`` over ``links`` now; ``on_done(now)`` is called when
        its last byte has arrived.  ``sent``: bytes of the same transfer already carried
        (counted in the link statistics only).  Raises ConfigError naming a
        zero-bandwidth link."""
        for lk in links:
            if self.capacity(lk) <= 0:
                raise ConfigError(
                    f"KV transfer over link {lk[0]} - {lk[1]}: the link has zero bandwidth"
                )
        flow = Flow(links, float(nbytes), self.route_latency(links), on_done, cap)
        flow.start_s = self.env.now
        for lk in links:
            st = self.stats.get(lk)
            if st is None:
                st = self.stats[lk] = LinkStats(self.topology.graph.edges[lk]["link"])
            st.flows += 1
            st.nbytes += flow.nbytes + sent
        if flow.nbytes <= 0 or not links:
            self._deliver(flow)
            return flow
        self._advance()
        self.active.append(flow)
        self._reschedule()
        return flow

    def set_cap(self, flow: Flow, cap: float) -> None:
        """Change a running flow's own rate limit (rates are recomputed now)."""
        if flow not in self.active:
            return
        self._advance()
        flow.cap = cap
        self._reschedule()

    # ---- the sharing ---------------------------------------------------------------
    def _advance(self) -> None:
        """Move every flow on by its rate since the last event."""
        now = self.env.now
        dt = now - self._t
        if dt > 0:
            for f in self.active:
                f.remaining -= f.rate * dt
        self._t = now

    def _allocate(self) -> None:
        """Max-min fair rates by progressive filling (flow caps count as private links)."""
        on: dict[Link, list[Flow]] = {}
        for f in self.active:
            f.rate = -1.0
            for lk in f.links:
                on.setdefault(lk, []).append(f)
        left = {lk: self.capacity(lk) for lk in on}
        count = {lk: len(fs) for lk, fs in on.items()}
        unfixed = len(self.active)
        while unfixed:
            share, bottleneck = math.inf, None
            for lk, n in count.items():
                if n and left[lk] / n < share:
                    share, bottleneck = left[lk] / n, lk
            capped = [f for f in self.active if f.rate < 0 and f.cap < share]
            if capped:
                fixed = [min(capped, key=lambda f: f.cap)]
                rate = fixed[0].cap
            else:
                assert bottleneck is not None
                fixed = [f for f in on[bottleneck] if f.rate < 0]
                rate = share
            for f in fixed:
                f.rate = rate
                unfixed -= 1
                for lk in f.links:
                    left[lk] = max(0.0, left[lk] - rate)
                    count[lk] -= 1

    def _reschedule(self) -> None:
        self._allocate()
        self._gen += 1
        if not self.active:
            return
        dt = min(f.remaining / f.rate for f in self.active)
        gen = self._gen
        ev = self.env.timeout(max(0.0, dt))
        ev.callbacks.append(lambda _e: self._on_timer(gen))

    def _on_timer(self, gen: int) -> None:
        if gen != self._gen:
            return
        self._advance()
        soonest = min(self.active, key=lambda f: f.remaining / f.rate)
        done = [f for f in self.active if f is soonest or f.remaining <= _DONE_FRACTION * f.nbytes]
        self.active = [f for f in self.active if f not in done]
        self._reschedule()
        for f in done:
            f.remaining = 0.0
            self._deliver(f)

    def _deliver(self, flow: Flow) -> None:
        """Call the flow's ``on_done`` once its data has crossed the route's latency."""
        if flow.latency > 0:
            ev = self.env.timeout(flow.latency)
            ev.callbacks.append(lambda _e: _call(flow.on_done, self.env.now))
        else:
            flow.on_done(self.env.now)


def _call(fn: Callable[[float], object], now: float) -> None:
    fn(now)
