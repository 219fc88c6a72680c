"""NVIDIA Dynamo's KV-aware router: prefill cost of uncached blocks plus decode load."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from policies.base import ClusterView, ReplicaView, Router
from policies.registry import register
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

    def logits(self, call: Call, candidates: Sequence[ReplicaView]) -> list[float]:
        out = []
        for r in candidates:
            new = call.input_tokens - r.cached_prefix_tokens(call)
            prefill_blocks = (r.pending_prefill_tokens + new) / r.block_size
            out.append(self.overlap_weight * prefill_blocks + r.active_blocks)
        return out

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
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
