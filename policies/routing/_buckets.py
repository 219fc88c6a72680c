"""Load buckets: the ready replicas of one model ordered by a load key, kept up to date
from the cluster's replica changes (``ClusterView.watch_replicas``).

A router that picks the replica with the smallest load score keeps one
:class:`LoadBuckets` per model instead of scoring every candidate per call.  Replicas
whose routing-visible state is equal (same bucket key, e.g. the same outstanding
requests) share a bucket, a list of their ids in increasing order, so ties are
resolved by position exactly as a scan in replica-id order resolves them.  A lazy
min-heap of ``(rank, bucket key)`` over the non-empty buckets gives them in increasing
rank: popping stale entries (emptied buckets) as it goes, peeking and restoring what a
caller looked at.  Per call the cost is the replicas that changed since the previous
call (each O(log n)) plus the buckets a router looks at, not the replica count.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Hashable, Sequence

from policies.base import ClusterView, ReplicaView, ReplicaWatch

#: key(replica) -> (rank, bucket key): the float the heap orders by and the exact state
#: that decides the router's score (equal bucket keys score equally for every call).
LoadKey = Callable[[ReplicaView], tuple[float, Hashable]]


def covers_ready(candidates: Sequence[ReplicaView], view: ClusterView) -> bool:
    """Whether ``candidates`` are all the ready replicas of their model (what the
    buckets and the prefix index hold).  They are a subset of them, so equal counts
    mean equal sets; when a caller narrows them (a prefill or decode pool of a
    disaggregated cluster), the router scans them instead."""
    return len(candidates) == len(view.ready_replicas(candidates[0].model))


class LoadBuckets:
    """The ready replicas of ``model`` in buckets of equal load, by increasing rank."""

    __slots__ = ("model", "key", "of", "buckets", "heap", "in_heap", "watch", "view")

    def __init__(self, model: str, key: LoadKey) -> None:
        self.model = model
        self.key = key
        self.of: dict[int, Hashable] = {}  # replica id -> its bucket key
        self.buckets: dict[Hashable, list[int]] = {}  # bucket key -> sorted replica ids
        self.heap: list[tuple[float, Hashable]] = []  # (rank, bucket key), lazy
        self.in_heap: set[Hashable] = set()
        self.watch: ReplicaWatch | None = None
        self.view: ClusterView | None = None

    def update(self, view: ClusterView) -> None:
        """Re-key the replicas that changed since the last update (the first: all)."""
        if self.watch is None or view is not self.view:  # (a new view: start over)
            self.__init__(self.model, self.key)  # type: ignore[misc]
            self.view = view
            self.watch = view.watch_replicas()
        model = self.model
        for r in self.watch.drain():
            rid = r.replica_id
            old = self.of.pop(rid, None)
            if old is not None:
                members = self.buckets[old]
                if len(members) == 1:
                    del self.buckets[old]
                else:
                    del members[bisect_left(members, rid)]
            if r.ready and r.model == model:
                rank, bk = self.key(r)
                self.of[rid] = bk
                members = self.buckets.get(bk)  # type: ignore[assignment]
                if members is None:
                    self.buckets[bk] = [rid]
                    if bk not in self.in_heap:
                        self.in_heap.add(bk)
                        heapq.heappush(self.heap, (rank, bk))
                else:
                    insort(members, rid)
        if len(self.heap) > 2 * len(self.buckets) + 64:  # drop stale entries
            self.heap = [(rank, bk) for rank, bk in self.heap if bk in self.buckets]
            heapq.heapify(self.heap)
            self.in_heap = {bk for _, bk in self.heap}

    def top(self) -> tuple[float, Hashable] | None:
        """The smallest-rank non-empty bucket (rank, key), or None."""
        heap = self.heap
        while heap:
            rank, bk = heap[0]
            if bk in self.buckets:
                return rank, bk
            heapq.heappop(heap)
            self.in_heap.discard(bk)
        return None

    def pop(self) -> tuple[float, Hashable]:
        """Take the top bucket's heap entry out (:meth:`restore` puts it back)."""
        return heapq.heappop(self.heap)

    def restore(self, entries: Sequence[tuple[float, Hashable]]) -> None:
        for e in entries:
            heapq.heappush(self.heap, e)


def kth_merged(a: list[int], removed: Sequence[int], added: Sequence[int], k: int) -> int:
    """The ``k``-th smallest of ``(a - removed) | added`` (all sorted ascending,
    ``removed`` a subset of ``a``, ``added`` disjoint from it) without building it:
    O((len(removed) + len(added)) log len(a))."""
    events = sorted([(x, False) for x in removed] + [(y, True) for y in added])
    pos = 0
    for v, is_added in events:
        j = bisect_left(a, v)
        run = j - pos  # a[pos:j]: kept members before v
        if k < run:
            return a[pos + k]
        k -= run
        if is_added:
            if k == 0:
                return v
            k -= 1
            pos = j
        else:
            pos = j + 1  # skip the removed a[j] == v
    return a[pos + k]
