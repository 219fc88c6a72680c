"""llm-d inference scheduler: filters, then a weighted sum of scorers."""

from __future__ import annotations

import random
from collections.abc import Sequence

from policies.base import ClusterView, ReplicaView, Router
from policies.registry import register
from sim.common.errors import PolicyError
from sim.workload.calls import Call


@register("routing", "llmd_scorer")
class LLMDScorer(Router):
    """llm-d endpoint picker: filter, score (prefix, KV utilisation, queue), pick the max.

    Filters (each skipped when it would remove every replica): drop replicas whose
    KV utilisation (``active_blocks / kv_capacity_blocks``) is at least
    ``kv_threshold``, and replicas whose waiting queue exceeds ``queue_threshold``.
    Scorers, each in [0, 1]:

    - prefix-cache: fraction of the prompt's blocks cached on the replica (precise
      mode: read from the replica's KV cache, as llm-d's KV-events indexer does);
    - kv-cache-utilisation: ``1 - active_blocks / kv_capacity_blocks``;
    - queue: ``(max_q - q) / (max_q - min_q)`` over the remaining replicas' waiting
      queues (1 when all are equal).

    Score = ``prefix_weight * prefix + kv_weight * kv + queue_weight * queue``; the
    maximum wins, ties picked at random (``random.Random(seed)``), as the max-score
    picker does.  Parameters: ``prefix_weight`` (float, 3), ``kv_weight`` (float, 2),
    ``queue_weight`` (float, 2), ``kv_threshold`` (float, 0.95, fraction),
    ``queue_threshold`` (int, 128 requests).  Weights follow llm-d's
    inference-scheduling guide profile (prefix 3, KV utilisation 2, queue 2).
    The prefix scores come from the view's prefix index (one lookup per call, not one
    cache lookup per replica); the filters and the queue normalisation still read
    every candidate's counters (a few integer reads each).
    Reference: llm-d/llm-d-inference-scheduler (``prefix-cache-scorer``,
    ``kv-cache-utilization-scorer``, ``queue-scorer``, ``max-score-picker``).
    """

    def __init__(
        self,
        prefix_weight: float = 3.0,
        kv_weight: float = 2.0,
        queue_weight: float = 2.0,
        kv_threshold: float = 0.95,
        queue_threshold: int = 128,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if min(prefix_weight, kv_weight, queue_weight) < 0:
            raise PolicyError("llmd_scorer: weights must be >= 0")
        self.prefix_weight = prefix_weight
        self.kv_weight = kv_weight
        self.queue_weight = queue_weight
        self.kv_threshold = kv_threshold
        self.queue_threshold = queue_threshold
        self._rng = random.Random(seed)

    @staticmethod
    def _kv_util(r: ReplicaView) -> float:
        return r.active_blocks / r.kv_capacity_blocks if r.kv_capacity_blocks else 1.0

    def scores(
        self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView | None = None
    ) -> list[tuple[float, int]]:
        """(score, replica_id) of the replicas that pass the filters (``view``: ask its
        prefix index instead of each replica's cache)."""
        pool = list(candidates)
        kept = [r for r in pool if self._kv_util(r) < self.kv_threshold]
        pool = kept or pool
        kept = [r for r in pool if r.num_waiting <= self.queue_threshold]
        pool = kept or pool
        queues = [r.num_waiting for r in pool]
        qmin, qmax = min(queues), max(queues)
        blocks = len(call.prefix_hashes) * call.block_size
        cached = (
            None
            if self.full_scan or view is None or not blocks
            else {r.replica_id: t for r, t in view.prefix_holders(call, pool[0].model)}
        )
        out = []
        for r, q in zip(pool, queues, strict=True):
            if cached is None:
                prefix = r.cached_prefix_tokens(call) / blocks if blocks else 0.0
            else:  # the prefix index: replicas it does not name cache none of the prompt
                prefix = cached.get(r.replica_id, 0) / blocks
            queue = (qmax - q) / (qmax - qmin) if qmax > qmin else 1.0
            kv = 1.0 - self._kv_util(r)
            s = (
                self.prefix_weight * min(1.0, prefix)
                + self.kv_weight * kv
                + self.queue_weight * queue
            )
            out.append((s, r.replica_id))
        return out

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        scored = self.scores(call, candidates, view)
        best = max(s for s, _ in scored)
        ties = [rid for s, rid in scored if s == best]
        return ties[0] if len(ties) == 1 else self._rng.choice(ties)
