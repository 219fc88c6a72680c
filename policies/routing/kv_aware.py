"""NVIDIA Dynamo's KV-aware router: prefill cost of uncached blocks plus decode load."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import cast

from policies.base import ClusterView, ReplicaView, Router
from policies.registry import register
from policies.routing._buckets import LoadBuckets, covers_ready, kth_merged
from sim.common.errors import PolicyError
from sim.workload.calls import Call


@register("routing", "kv_aware")
class KVAware(Router):
    """Dynamo KV router: minimise overlap_weight x prefill blocks + active decode blocks.

    Rule, per ready replica ``w`` of the call's model (block size ``B`` = the
    replica's KV block size, cached prefix from the replica's real KV cache, as
    Dynamo's indexer sees the engines' KV events)::

        prefill_blocks(w) = (pending_prefill_tokens(w) + input_tokens - cached_tokens(w)) / B
        logit(w)          = overlap_weight * prefill_blocks(w) + active_blocks(w)

    ``temperature == 0``: pick the minimum logit (ties broken at random);
    ``temperature > 0``: normalise the logits by their maximum and sample ``w`` with
    probability proportional to ``exp(-logit(w) / temperature)``.
    Parameters: ``overlap_weight`` (float, 1.0; 0 ignores the cache),
    ``temperature`` (float, 0.0), ``migrate`` (bool, False: move the cached prefix to
    the chosen replica when cheaper than recompute).  Randomness: ``random.Random(seed)``.
    At ``temperature == 0`` the choice costs O(1) in the replica count: the replicas that
    cache part of the prompt come from the view's prefix index, every other one scores
    its load alone, kept in :class:`~policies.routing._buckets.LoadBuckets` by
    ``(pending_prefill_tokens, active_blocks)``; ties are drawn exactly as the scan
    draws them (``full_scan`` is that scan).  Sampling (``temperature > 0``) weighs
    every replica, so it scans them.
    Reference: ai-dynamo/dynamo ``lib/llm/src/kv_router/scheduler.rs``
    (``DefaultWorkerSelector``, ``softmax_sample``); defaults of ``--kv-overlap-score-weight``
    and ``--router-temperature``.
    """

    def __init__(
        self,
        overlap_weight: float = 1.0,
        temperature: float = 0.0,
        migrate: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if overlap_weight < 0 or temperature < 0:
            raise PolicyError("kv_aware: overlap_weight and temperature must be >= 0")
        self.overlap_weight = overlap_weight
        self.temperature = temperature
        self.migrate_kv = migrate
        self._rng = random.Random(seed)
        self._loads: dict[str, LoadBuckets] = {}

    def _load_key(self, r: ReplicaView) -> tuple[float, tuple[int, int]]:
        p, a = r.pending_prefill_tokens, r.active_blocks
        return self.overlap_weight * (p / r.block_size) + a, (p, a)

    def logits(self, call: Call, candidates: Sequence[ReplicaView]) -> list[float]:
        out = []
        for r in candidates:
            new = call.input_tokens - r.cached_prefix_tokens(call)
            prefill_blocks = (r.pending_prefill_tokens + new) / r.block_size
            out.append(self.overlap_weight * prefill_blocks + r.active_blocks)
        return out

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        if self.temperature <= 0 and not self.full_scan and covers_ready(candidates, view):
            return self._route_indexed(call, candidates, view)
        logits = self.logits(call, candidates)
        if self.temperature <= 0:
            best = min(logits)
            ties = [i for i, x in enumerate(logits) if x == best]
            i = ties[0] if len(ties) == 1 else self._rng.choice(ties)
            return candidates[i].replica_id
        top = max(logits)
        norm = [x / top for x in logits] if top > 0 else logits
        lo = min(norm)
        weights = [math.exp(-(x - lo) / self.temperature) for x in norm]
        i = self._rng.choices(range(len(candidates)), weights=weights)[0]
        return candidates[i].replica_id

    def _route_indexed(  # long: one pass over the cached replicas, then the load buckets
        self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView
    ) -> int:
        """The minimum-logit replica (ties drawn as the scan draws them), from the prefix
        index and the load buckets instead of every candidate."""
        model = candidates[0].model
        loads = self._loads.get(model)
        if loads is None:
            loads = self._loads[model] = LoadBuckets(model, self._load_key)
        loads.update(view)
        ow = self.overlap_weight
        inp = call.input_tokens
        bs = candidates[0].block_size
        best = math.inf
        tie_reps: list[int] = []  # replicas caching part of the prompt with the best logit
        excluded: dict[object, list[int]] = {}  # bucket -> its replicas scored above
        if ow > 0:
            for r, cached in view.prefix_holders(call, model):
                x = ow * ((r.pending_prefill_tokens + (inp - cached)) / r.block_size)
                x += r.active_blocks
                rid = r.replica_id
                if x < best:
                    best, tie_reps = x, [rid]
                elif x == best:
                    tie_reps.append(rid)
                excluded.setdefault(loads.of[rid], []).append(rid)
        # the other replicas, by increasing load rank (rank + shift ~ their logit)
        shift = ow * (inp / bs)
        tie_buckets: list[object] = []
        looked: list[tuple[float, object]] = []
        buckets = loads.buckets
        while (t := loads.top()) is not None:
            rank, bk = t
            if rank + shift > best + 1e-9 * (abs(best) + abs(rank) + shift + 1.0):
                break  # every later bucket scores above the best (rounding margin)
            looked.append(loads.pop())
            if len(buckets[bk]) == len(excluded.get(bk, ())):
                continue  # all of it caches part of the prompt: scored above
            pending, active = cast(tuple[int, int], bk)
            x = ow * ((pending + inp) / bs) + active
            if x < best:
                best, tie_reps, tie_buckets = x, [], [bk]
            elif x == best:
                tie_buckets.append(bk)
        loads.restore(looked)
        n = len(tie_reps) + sum(len(buckets[b]) - len(excluded.get(b, ())) for b in tie_buckets)
        i = 0 if n == 1 else self._rng.choice(range(n))
        if len(tie_buckets) == 1:
            return kth_merged(
                buckets[tie_buckets[0]], excluded.get(tie_buckets[0], ()), tie_reps, i
            )
        if not tie_buckets:
            return sorted(tie_reps)[i]
        drop = {rid for b in tie_buckets for rid in excluded.get(b, ())}
        ties = sorted({rid for b in tie_buckets for rid in buckets[b]} - drop | set(tie_reps))
        return ties[i]
