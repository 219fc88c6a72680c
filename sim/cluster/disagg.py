"""Prefill/decode disaggregation: instance pools, pair routing and KV transfers.

A cluster with ``[[pools]]`` (``sim/cluster/config.py``) runs each call in up to two
legs.  The router (a :class:`policies.base.PairRouter`, or any router applied to each
side, which is the naive pairing) picks a prefill instance P and a decode instance D
among the ready instances of the call's model (P from prefill and mixed pools, D from
decode and mixed pools).

- ``P == D``: D prefills and decodes the call itself, as a colocated replica.
- otherwise the prefill leg runs on P as a one-output-token call: its first token is
  the call's first token (TTFT is P's).  When it ends, the prompt's KV is sent to D
  (:class:`~sim.cluster.links.LinkNetwork` flows, one per pair of GPUs whose KV heads
  overlap: each of D's GPUs receives the heads it serves from the first of P's GPUs
  that holds them, so the bytes follow from the model, the KV precision and both TPs).
  A transfer starts only when D has room for the call's KV: D's blocks not held by
  running calls, less those promised to transfers under way and to delivered calls not
  yet admitted, must cover the prompt plus the first output token; otherwise it waits
  (in order, per D) until calls finish on D.  When the KV has arrived, the decode leg
  enters D's queue with the prompt as external computed tokens and one output token
  already generated; its first step computes the first token's KV and samples the
  second, so the transfer delays the second token, not the first.
- ``layerwise`` (``[kv_transfer] layerwise = true``): the KV streams while P prefills.
  Modelled at the prefill's end: when D has room then, the bytes the route could have
  carried during the prefill (its idle rate x the prefill's duration, at most all
  layers but the last) count as sent, and only the rest flows; contention during the
  prefill itself is not modelled.

Conservation: every call ends once (the decode leg reports it; a prefill leg never
does), and the bytes sent equal, per call prefilled remotely, its prompt tokens x the
KV bytes per token the decode instance holds.  Early rejection (``PairDecision.reject``)
fails the call with reason ``rejected_overload``.  Units: seconds, bytes, tokens, blocks.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import simpy

from policies.base import (
    ClusterView,
    PairDecision,
    PairRouter,
    ReplicaView,
    ReplicaWatch,
    Router,
)
from sim.cluster.links import Flow, LinkNetwork
from sim.common.errors import PolicyError
from sim.engine.replica import Replica, Seq
from sim.specs.models import ModelSpec
from sim.specs.topology import Link, Topology
from sim.workload.calls import Call

#: The failure reason of a call a router rejected early.
REJECTED = "rejected_overload"


@dataclass
class TransferRecord:
    """One call's KV transfer: replica ids, bytes, and when the KV was ready on the
    prefill instance, when its flows started (room on the decode instance) and when the
    last byte arrived (seconds).  ``free_blocks`` / ``blocks``: what the decode instance
    had free when the flows started, and what the call needed."""

    call_id: str
    prefill: int
    decode: int
    nbytes: float
    ready_s: float
    start_s: float = math.nan
    end_s: float = math.nan
    blocks: int = 0
    free_blocks: int = 0


@dataclass(eq=False)
class _Leg:
    """A call prefilled remotely, between its prefill and its decode leg."""

    call: Call
    issued_s: float
    has_successor: bool
    prefill: Replica
    decode: Replica
    seq: Seq  # the prefill leg
    record: TransferRecord
    flows_left: int = 0


@dataclass(frozen=True)
class _Route:
    """One GPU-to-GPU flow of a replica pair: its links and KV bytes per token."""

    links: tuple[Link, ...]
    bytes_per_token: int


@dataclass
class Disaggregation:
    """The disaggregated calls of a cluster (see the module docstring).

    ``roles``: replica id -> pool role; ``specs``: model -> spec (KV geometry);
    ``deliver``: submit a sequence to a replica; ``fail``: end a call as failed.
    """

    env: simpy.Environment
    topology: Topology
    view: ClusterView
    router: Router
    prefill_router: Router
    specs: dict[str, ModelSpec]
    deliver: Callable[[Replica, Seq], None]
    fail: Callable[[Call, str, Seq | None], None]
    layerwise: bool = False
    roles: dict[int, str] = field(default_factory=dict)
    models: set[str] = field(default_factory=set)  # the models served by pools
    links: LinkNetwork = field(init=False)
    records: list[TransferRecord] = field(default_factory=list)
    local_prefills: int = 0
    remote_prefills: int = 0
    rejected: int = 0
    _legs: dict[int, _Leg] = field(default_factory=dict)  # id(prefill seq) -> leg
    _queue: dict[int, deque[_Leg]] = field(default_factory=dict)  # decode id -> waiting
    _promised: dict[int, int] = field(default_factory=dict)  # decode id -> blocks in flight
    _delivered: dict[int, list[tuple[Seq, int]]] = field(default_factory=dict)
    _routes: dict[tuple[int, int], list[_Route]] = field(default_factory=dict)
    #: (finish time, TTFT, TPOT or NaN) of completed pooled calls, for planners
    latency: deque[tuple[float, float, float]] = field(default_factory=deque)
    role_moves: int = 0

    def __post_init__(self) -> None:
        self.links = LinkNetwork(self.env, self.topology)
        self._view = _PairView(self)
        self.pool_view = self._view

    # ---- routing -------------------------------------------------------------------
    def dispatch(
        self, call: Call, issued_s: float, has_successor: bool, ready: Sequence[Replica]
    ) -> None:
        """Route a new call among the ready instances ``ready`` of its model."""
        roles = self.roles
        decode = [r for r in ready if roles.get(r.replica_id) != "prefill" and r.fits(call)]
        if not decode:
            reason = "exceeds_kv_capacity" if ready else "no_replica"
            self.fail(call, reason, None)
            return
        prefill = [r for r in ready if roles.get(r.replica_id) != "decode"]
        p, d = self._choose(call, prefill, decode)
        if p is None:
            return
        if p is d or call.output_tokens <= 1:
            self.local_prefills += p is d
            self.remote_prefills += p is not d
            self.deliver(p, Seq(call, issued_s, p.block_size, has_successor))
            return
        self.remote_prefills += 1
        seq = Seq(replace(call, output_tokens=1), issued_s, p.block_size, has_successor)
        record = TransferRecord(call.call_id, p.replica_id, d.replica_id, 0.0, math.nan)
        self._legs[id(seq)] = _Leg(call, issued_s, has_successor, p, d, seq, record)
        self.deliver(p, seq)

    def _choose(
        self, call: Call, prefill: list[Replica], decode: list[Replica]
    ) -> tuple[Replica | None, Replica]:
        """The (prefill, decode) instances of ``call``; prefill None: rejected."""
        reps = self.view.replicas()
        if isinstance(self.router, PairRouter):
            dec: PairDecision = self.router.route_pair(call, prefill, decode, self._view)
            if dec.reject:
                self.rejected += 1
                self.fail(call, REJECTED, None)
                return None, decode[0]
            pid, did = dec.prefill, dec.decode
        else:
            did = self.router.route(call, decode, self.view)
            pid = self.prefill_router.route(call, prefill, self.view) if prefill else did
        ok_d = {r.replica_id for r in decode}
        ok_p = {r.replica_id for r in prefill} | {did}
        if did not in ok_d or pid not in ok_p:
            name = getattr(self.router, "policy_name", "router")
            raise PolicyError(
                f"router {name!r} returned the pair ({pid}, {did}), not a ready "
                f"(prefill, decode) pair of {decode[0].model}"
            )
        return reps[pid], reps[did]  # type: ignore[return-value]

    # ---- legs ----------------------------------------------------------------------
    def on_finished(self, rep: Replica, seq: Seq, now: float) -> bool:
        """A sequence finished on ``rep``: True when it was a prefill leg (its KV now
        goes to the decode instance; the call has not ended)."""
        leg = self._legs.pop(id(seq), None) if self._legs else None
        if leg is None:
            return False
        tokens = leg.call.input_tokens
        leg.record.nbytes = float(tokens * self.kv_bytes_per_token(leg.decode))
        leg.record.ready_s = now
        leg.record.blocks = leg.decode.kv_cache_manager.num_blocks(tokens + 1)
        self._queue.setdefault(leg.decode.replica_id, deque()).append(leg)
        self.try_transfers(leg.decode)
        return True

    def free_blocks(self, rep: Replica) -> int:
        """Blocks of decode instance ``rep`` a new transfer could take (see the module
        docstring)."""
        rid = rep.replica_id
        held = self._delivered.get(rid)
        if held:
            # admitted (computing, or past its first decode step): its blocks are active
            held[:] = [
                (s, b) for s, b in held if s.num_computed_tokens == 0 and s.num_output_tokens <= 1
            ]
        waiting = sum(b for _, b in held) if held else 0
        return rep.kv_capacity_blocks - rep.active_blocks - self._promised.get(rid, 0) - waiting

    def try_transfers(self, rep: Replica) -> None:
        """Start the transfers waiting for room on decode instance ``rep``, in order."""
        queue = self._queue.get(rep.replica_id)
        while queue:
            leg = queue[0]
            free = self.free_blocks(rep)
            if leg.record.blocks > free:
                return
            queue.popleft()
            leg.record.free_blocks = free
            self._start(leg)

    def _start(self, leg: _Leg) -> None:
        now = self.env.now
        rec = leg.record
        rec.start_s = now
        rid = leg.decode.replica_id
        self._promised[rid] = self._promised.get(rid, 0) + rec.blocks
        tokens = leg.call.input_tokens
        routes = self.routes(leg.prefill, leg.decode)
        prefill_s = now - leg.seq.admit_s if self.layerwise else 0.0
        layers = self.specs[leg.decode.model].num_layers
        leg.flows_left = len(routes)
        self.records.append(rec)
        done = functools.partial(self._flow_done, leg)
        for route in routes:
            nbytes = float(route.bytes_per_token * tokens)
            sent = 0.0
            if self.layerwise and now == rec.ready_s and prefill_s > 0:
                rate = min(self.links.capacity(lk) for lk in route.links)
                sent = min(nbytes * (layers - 1) / layers, rate * prefill_s)
            self.links.start(route.links, nbytes - sent, done, sent=sent)

    def _flow_done(self, leg: _Leg, now: float) -> None:
        leg.flows_left -= 1
        if leg.flows_left > 0:
            return
        rec = leg.record
        rec.end_s = now
        d = leg.decode
        rid = d.replica_id
        self._promised[rid] -= rec.blocks
        p = leg.seq
        seq = Seq(leg.call, leg.issued_s, d.block_size, leg.has_successor)
        seq.num_output_tokens = p.num_output_tokens
        seq.num_prefill_tokens = leg.call.input_tokens + p.num_output_tokens
        seq.num_external_computed_tokens = leg.call.input_tokens
        seq.first_token_s = p.first_token_s
        seq.admit_s = p.admit_s
        seq.num_cached_tokens = p.num_cached_tokens
        seq.preemptions = p.preemptions
        self._delivered.setdefault(rid, []).append((seq, rec.blocks))
        d.submit(seq)  # D took the KV: it serves the call even while draining for a move

    def on_completed(self, seq: Seq, now: float) -> None:
        """A pooled call completed: keep its TTFT and TPOT for planners (an hour's worth)."""
        out = seq.max_tokens
        tpot = (now - seq.first_token_s) / (out - 1) if out > 1 else math.nan
        lat = self.latency
        lat.append((now, seq.first_token_s - seq.arrival_s, tpot))
        while lat and lat[0][0] < now - 3600.0:
            lat.popleft()

    def drained(self, rep: Replica) -> bool:
        """Whether ``rep`` has no call and no KV transfer coming to it."""
        rid = rep.replica_id
        if rep.running or rep.waiting or self._queue.get(rid) or self._promised.get(rid, 0):
            return False
        self.free_blocks(rep)  # prunes the delivered calls since admitted
        return not self._delivered.get(rid)

    # ---- KV geometry ---------------------------------------------------------------
    def kv_bytes_per_token(self, rep: Replica) -> int:
        """KV bytes one token occupies over all GPUs of instance ``rep`` (heads
        replicated on GPUs count once per GPU)."""
        spec = self.specs[rep.model]
        per_head = 2 * spec.num_layers * spec.head_dim * spec.kv_bytes_per_element
        return sum(len(hs) for hs in _shards(spec.num_kv_heads, len(rep.gpus))) * per_head

    def routes(self, p: Replica, d: Replica) -> list[_Route]:
        """The flows of a transfer from ``p`` to ``d`` (memoised per pair)."""
        key = (p.replica_id, d.replica_id)
        out = self._routes.get(key)
        if out is None:
            spec = self.specs[d.model]
            per_head = 2 * spec.num_layers * spec.head_dim * spec.kv_bytes_per_element
            heads = spec.num_kv_heads
            src = _shards(heads, len(p.gpus))
            owner: dict[int, int] = {}
            for i, hs in enumerate(src):
                for h in hs:
                    owner.setdefault(h, i)
            pairs: dict[tuple[int, int], int] = {}
            for j, hs in enumerate(_shards(heads, len(d.gpus))):
                for h in hs:
                    k = (owner[h], j)
                    pairs[k] = pairs.get(k, 0) + 1
            out = [
                _Route(self.topology.route(p.gpus[i], d.gpus[j]), n * per_head)
                for (i, j), n in pairs.items()
            ]
            self._routes[key] = out
        return out

    def transfer_estimate_s(self, call: Call, p: Replica, d: Replica) -> float:
        """Seconds the transfer of ``call``'s prompt KV takes on idle links."""
        if p is d:
            return 0.0
        t = 0.0
        for r in self.routes(p, d):
            rate = min(self.links.capacity(lk) for lk in r.links) if r.links else math.inf
            t = max(
                t, r.bytes_per_token * call.input_tokens / rate + self.links.route_latency(r.links)
            )
        return t

    # ---- summary -------------------------------------------------------------------
    def summary(self) -> tuple[dict[str, object], np.ndarray, np.ndarray]:
        """``kv_transfer_bytes`` and the call counts, and the finished transfers'
        durations (flows started until the last byte arrived) and waits (ready on the
        prefill instance until room on the decode instance), in seconds."""
        done = [r for r in self.records if not math.isnan(r.end_s)]
        dur = np.array([r.end_s - r.start_s for r in done], dtype=np.float64)
        wait = np.array([r.start_s - r.ready_s for r in done], dtype=np.float64)
        counts: dict[str, object] = {
            "kv_transfer_bytes": int(sum(r.nbytes for r in done)),
            "kv_transfers": len(done),
            "local_prefills": self.local_prefills,
            "remote_prefills": self.remote_prefills,
            "rejected_overload": self.rejected,
        }
        return counts, dur, wait


def _shards(heads: int, tp: int) -> list[list[int]]:
    """The KV heads each of ``tp`` GPUs holds (replicated when heads < tp, as vLLM)."""
    if heads >= tp:
        per = heads // tp
        return [list(range(i * per, (i + 1) * per)) for i in range(tp)]
    return [[i * heads // tp] for i in range(tp)]


class _PairView:
    """The :class:`policies.base.DisaggView` a pair router reads."""

    def __init__(self, d: Disaggregation) -> None:
        self._d = d
        self._v = d.view

    @property
    def now(self) -> float:
        return self._v.now

    def replicas(self, model: str | None = None) -> Sequence[ReplicaView]:
        return self._v.replicas(model)

    def ready_replicas(self, model: str | None = None) -> Sequence[ReplicaView]:
        return self._v.ready_replicas(model)

    def models(self) -> Sequence[str]:
        return self._v.models()

    def live_replicas(self, model: str) -> Sequence[ReplicaView]:
        return self._v.live_replicas(model)

    def pending_calls(self, model: str) -> int:
        return self._v.pending_calls(model)

    def prefix_holders(self, call: Call, model: str) -> Sequence[tuple[ReplicaView, int]]:
        return self._v.prefix_holders(call, model)

    def watch_replicas(self) -> ReplicaWatch:
        return self._v.watch_replicas()

    def _rep(self, r: ReplicaView) -> Replica:
        return self._v.replicas()[r.replica_id]  # type: ignore[return-value]

    def prefill_time_s(self, replica: ReplicaView, tokens: int) -> float:
        return self._rep(replica).recompute_time(tokens)

    def transfer_time_s(self, call: Call, prefill: ReplicaView, decode: ReplicaView) -> float:
        return self._d.transfer_estimate_s(call, self._rep(prefill), self._rep(decode))

    def decode_free_blocks(self, replica: ReplicaView) -> int:
        return self._d.free_blocks(self._rep(replica))

    def decode_time_s(self, replica: ReplicaView, batch: int, context_tokens: int) -> float:
        return self._rep(replica).cost.decode_time(max(1, batch), context_tokens)

    # PoolView (planners)
    def roles(self) -> dict[int, str]:
        return dict(self._d.roles)

    def recent_latency(self, since_s: float) -> tuple[list[float], list[float]]:
        recent = [x for x in self._d.latency if x[0] >= since_s]
        return [x[1] for x in recent], [x[2] for x in recent if not math.isnan(x[2])]


__all__ = ["REJECTED", "Disaggregation", "Flow", "TransferRecord"]
