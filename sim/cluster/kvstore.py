"""A tiered KV store shared by the instances: host DRAM, local NVMe and a remote pool.

Tier 0 is every instance's own GPU HBM prefix cache (``sim/engine/kvcache.py``); the
store adds the tiers of ``[[kv_store]]`` in a cluster TOML (:class:`sim.cluster.config.
KVStoreTier`): ``host`` (DRAM of each node), ``nvme`` (each node's local drive) and
``remote`` (one pool for the cluster, as Mooncake Store or an LMCache server).  Each
tier location (a node's host tier, a node's NVMe, the remote pool) holds prefix blocks
by chain hash, up to its capacity, evicting ``lru`` (least recently written or read) or
``fifo`` (oldest written) entries first.  A global prefix index maps each chain hash to
the locations that hold it.

Writes: when a call ends on an instance, the KV of its prompt's full blocks is written
through to every tier the instance reaches (its node's host and NVMe, the remote pool),
so a session's context persists between turns and outlives the instance (a pod restart
or a move to another instance does not lose it).

Loads: when a call is delivered to an instance, the store finds, for every location the
instance reaches, the longest prefix of the call's chain hashes held there beyond what
the instance's HBM already caches.  Loading ``n`` tokens from a tier takes its latency
plus ``n`` x the instance's KV bytes per token per GPU / the tier's bandwidth per GPU
(every GPU of the TP group loads its shard in parallel); recomputing them takes the
instance's prefill time for those tokens.  The call loads from the tier that saves the
most time, if any saves time at all, and then reaches the instance that much later with
those tokens already computed (``Seq.num_external_computed_tokens``), as vLLM's KV
connectors report externally computed tokens.

Faults: a pod restart or GPU failure loses only HBM, so the store's tiers still serve
the session afterwards; a node failure empties that node's ``host`` tier, and a spot
reclaim its ``host`` and ``nvme`` tiers (:meth:`KVStore.lose_node`); the ``remote``
pool survives every fault.  So a ``host`` tier survives what ``host_offload`` survives
and a ``remote`` tier what ``remote_store`` survives, for every call and every turn
rather than only at a fault.

The fault-time persistence policies ``host_offload`` and ``remote_store``
(``policies/persistence/``, applied by ``sim/cluster/faults.py``) are not tiers of this
store and share none of its code; a store can run beside them.  They model a different
thing: a write-behind snapshot of what a lost replica held, keyed by call or session
(not by chain hash), counted in tokens (a session's generated tokens included, not only
full prompt blocks), kept only if its write over the topology path finished before the
fault, with no capacity or eviction, and always reloaded (no load-vs-recompute choice)
over the topology path at the model's full KV bytes per token (not a tier's bandwidth
per GPU).  Expressing them as store tiers would change fault-run results.  Units:
bytes, seconds, tokens.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sim.cluster.config import KV_STORE_TIERS, ClusterConfig
from sim.engine.replica import Replica, Seq
from sim.workload.calls import Call

GB = 1e9
GiB = 1024**3

#: Per-node tiers (one location per node); the others are one location for the cluster.
NODE_TIERS = ("host", "nvme")


@dataclass(frozen=True)
class Tier:
    """One tier as the store uses it: capacity (bytes per location), bandwidth (bytes/s
    per loading GPU), latency (s), eviction (``lru`` / ``fifo``)."""

    name: str
    capacity: float
    bandwidth: float
    latency: float
    eviction: str


@dataclass
class _Location:
    """One tier location: entries by chain hash (bytes), in eviction order."""

    tier: Tier
    key: tuple[str, int]
    entries: OrderedDict[int, float] = field(default_factory=OrderedDict)
    used: float = 0.0
    peak: float = 0.0


@dataclass
class KVStore:
    """The store's locations, the global prefix index and what it served."""

    tiers: Sequence[Tier]
    index: dict[int, set[tuple[str, int]]] = field(default_factory=dict)
    locations: dict[tuple[str, int], _Location] = field(default_factory=dict)
    loaded_tokens: dict[str, int] = field(default_factory=dict)
    load_s: float = 0.0
    loads: int = 0
    prompt_tokens: int = 0

    def _location(self, tier: Tier, node: int) -> _Location:
        key = (tier.name, node if tier.name in NODE_TIERS else -1)
        loc = self.locations.get(key)
        if loc is None:
            loc = self.locations[key] = _Location(tier, key)
        return loc

    def reach(self, rep: Replica) -> list[_Location]:
        """The locations an instance reads and writes, fastest tier first."""
        return [self._location(t, rep.node) for t in self.tiers]

    # ---- writes ------------------------------------------------------------------------
    def save(self, rep: Replica, call: Call) -> None:
        """Write ``call``'s prompt blocks (as computed on ``rep``) to every location
        ``rep`` reaches; older entries make room by the tier's eviction order."""
        hashes = call.prefix_hashes
        if not hashes:
            return
        per_block = _bytes_per_token(rep) * call.block_size
        for loc in self.reach(rep):
            if per_block > loc.tier.capacity:
                continue
            for h in hashes:
                old = loc.entries.get(h)
                if old is not None:
                    if loc.tier.eviction == "lru":
                        loc.entries.move_to_end(h)
                    continue
                while loc.used + per_block > loc.tier.capacity:
                    self._evict(loc)
                loc.entries[h] = per_block
                loc.used += per_block
                self.index.setdefault(h, set()).add(loc.key)
            loc.peak = max(loc.peak, loc.used)

    def _evict(self, loc: _Location) -> None:
        h, size = loc.entries.popitem(last=False)
        loc.used -= size
        holders = self.index.get(h)
        if holders is not None:
            holders.discard(loc.key)
            if not holders:
                del self.index[h]

    def lose_node(self, node: int, tiers: Sequence[str]) -> None:
        """The node-local ``tiers`` of ``node`` lose what they held (a node failure
        takes its DRAM; a spot reclaim its local drive too); the index forgets them."""
        for name in tiers:
            loc = self.locations.get((name, node))
            if loc is None:
                continue
            while loc.entries:
                self._evict(loc)

    # ---- loads -------------------------------------------------------------------------
    def held_tokens(self, call: Call, key: tuple[str, int]) -> int:
        """Prompt tokens of ``call`` whose prefix blocks location ``key`` holds (the
        global index's answer: the longest run of leading chain hashes held there)."""
        n = 0
        index = self.index
        for h in call.prefix_hashes:
            holders = index.get(h)
            if holders is None or key not in holders:
                break
            n += 1
        return min(n * call.block_size, call.input_tokens - 1)

    def plan_load(self, rep: Replica, seq: Seq) -> float:
        """Load ``seq``'s prefix onto ``rep`` from the tier that saves the most time
        over recomputing it (if any): sets its external computed tokens and returns the
        load time (s; 0: nothing loaded)."""
        call = seq.call
        if math.isnan(seq.admit_s):  # its first delivery (a decode leg is not)
            self.prompt_tokens += call.input_tokens
        if not call.prefix_hashes or seq.num_computed_tokens:
            return 0.0
        have = max(rep.cached_prefix_tokens(call), seq.num_external_computed_tokens)
        per_token = _bytes_per_token(rep)
        best: tuple[float, float, int, _Location] | None = None
        for loc in self.reach(rep):
            n = self.held_tokens(call, loc.key)
            if n <= have:
                continue
            t_load = loc.tier.latency + (n - have) * per_token / loc.tier.bandwidth
            saved = rep.recompute_time(n) - rep.recompute_time(have) - t_load
            if saved > 0 and (best is None or saved > best[0]):
                best = (saved, t_load, n, loc)
        if best is None:
            return 0.0
        _, t_load, n, loc = best
        if loc.tier.eviction == "lru":
            for h in call.prefix_hashes[: -(-n // call.block_size)]:
                if h in loc.entries:
                    loc.entries.move_to_end(h)
        seq.num_external_computed_tokens = n
        name = loc.tier.name
        self.loaded_tokens[name] = self.loaded_tokens.get(name, 0) + n - have
        self.load_s += t_load
        self.loads += 1
        return t_load

    # ---- summary -----------------------------------------------------------------------
    def hit_rates(self, hbm_hit_tokens: int) -> dict[str, float]:
        """Fraction of the prompt tokens delivered that came from each tier: ``hbm``
        (prefix-cache hits on the serving instance) and each store tier (loaded)."""
        total = self.prompt_tokens
        out = {"hbm": round(hbm_hit_tokens / total, 12) if total else 0.0}
        for t in self.tiers:
            got = self.loaded_tokens.get(t.name, 0)
            out[t.name] = round(got / total, 12) if total else 0.0
        return out

    def occupancy(self) -> dict[str, float]:
        """Peak bytes held per tier, summed over its locations."""
        out: dict[str, float] = {}
        for loc in self.locations.values():
            out[loc.tier.name] = out.get(loc.tier.name, 0.0) + loc.peak
        return out


def store_tiers(cfg: ClusterConfig) -> list[Tier]:
    """The store tiers of a cluster config, defaults filled in (:data:`sim.cluster.
    config.KV_STORE_TIERS`), in the order host, nvme, remote."""
    out = []
    for t in sorted(cfg.kv_store, key=lambda t: list(KV_STORE_TIERS).index(t.tier)):
        cap, bw, lat = KV_STORE_TIERS[t.tier]
        out.append(
            Tier(
                t.tier,
                (t.capacity_gib or cap) * GiB,
                (t.bandwidth_gbs or bw) * GB,
                t.latency_s if t.latency_s > 0 else lat,
                t.eviction,
            )
        )
    return out


def _bytes_per_token(rep: Replica) -> float:
    """KV bytes of one token on one GPU of ``rep`` (what each GPU moves)."""
    return rep.kv_block_bytes / rep.block_size
