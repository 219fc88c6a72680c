"""Paged KV-cache memory of one replica, with prefix caching.

Memory is counted in blocks of ``block_size`` tokens (vLLM's paged attention).  A
sequence holds two kinds of blocks:

- *prefix entries*: blocks of its prompt identified by the trace's chain hashes
  (``Call.prefix_hashes``).  An entry is shared by every sequence whose prompt starts
  with the same hashes and is ref-counted.  An entry nobody references stays cached
  (evictable) and is evicted in least-recently-used order when memory is needed,
  unless it is pinned (retention policy) until a time.
- *private blocks*: everything else (the unhashed prompt tail, generated tokens),
  counted as a number, never as objects: per-sequence state stays O(1) apart from
  its tuple of hashes.

An entry covers a whole number of blocks (see :func:`effective_hashes`).  A
sequence's prompt entries are registered chunk by chunk, when the engine schedules
the step that computes them (vLLM v1 caches full blocks in ``allocate_slots``), so a
concurrent sequence shares a prefix as soon as that part of it is being computed.

Segments.  Entries are kept in *segments*: runs of consecutive hashes of one prompt
that share their reference count, pin, LRU stamp and blocks per hash (:class:`Seg`).
A call registers its new hashes as one segment; the next turn of an agent session
references its predecessor's segments whole, so referencing, releasing and evicting
a 30k-token context costs O(turns), not O(blocks) (SGLang's radix cache keeps runs of
tokens per node for the same reason).  A segment is split where a call references
only part of it (two prompts diverge inside it); the piece split off stays linked as
the segment's ``tail``, so an LRU item that named the whole segment still reaches
every piece, in the same tail-first order.  The pool keys segments by their first
and last resident hash, not by every hash: with chain hashes a lookup only ever starts
at a segment's first hash (see :meth:`BlockPool.match`), so eviction trims a segment
with at most two key changes.  Every operation is exactly the per-entry one
(``tests/kv_reference.py`` holds that reference and a test compares them); the one
order not kept is that of entries whose pins expire at the same instant, which were
ordered by hash value and are now ordered tail first, segment by segment.

Host-DRAM tier: a replica may also hold up to ``host_capacity`` blocks of prefix
entries in host memory.  A retention policy can *swap* a finished call's entries
there instead of keeping them in HBM (:meth:`BlockPool.unref` with ``to_host``); a
later call whose prefix continues into the host tier *swaps them in*
(:meth:`BlockPool.host_match`, :meth:`BlockPool.swap_in`) into freshly allocated HBM
blocks.  As vLLM's CPU KV offload tier, the host tier can instead be written
through: every registered entry is also copied there (:meth:`BlockPool.host_store`),
the HBM copy staying cached, and a hit is copied back keeping the host copy
(``swap_in(keep=True)``).  The host tier is LRU per entry; the engine prices the
copies over the GPU's PCIe path to its CPU (``sim/engine/replica.py``).

The engine's side (vLLM v1's ``KVCacheManager``): :class:`KVCacheManager` owns each
sequence's blocks (:class:`SeqBlocks`: the hashes it references, its private blocks,
the tokens they hold).  The engine looks a prompt up (:meth:`KVCacheManager.get_computed_blocks`),
asks for room for the tokens it schedules (:meth:`KVCacheManager.allocate_slots`, False
when the pool cannot give it, changing nothing), caches the prompt blocks a step
computes (:meth:`KVCacheManager.cache_blocks`) and gives a sequence's blocks back
(:meth:`KVCacheManager.free`); it never counts blocks itself.

Invariant: ``used_blocks <= capacity`` always; ``free + used == capacity``;
``host_used <= host_capacity``.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import takewhile
from typing import TYPE_CHECKING, Protocol

from sim.common.errors import AgentsimError

if TYPE_CHECKING:
    from policies.base import RetentionDecision
    from sim.workload.calls import Call


def effective_hashes(
    hashes: tuple[int, ...], trace_block: int, block_size: int
) -> tuple[tuple[int, ...], int, int]:
    """Re-block a call's chain hashes for an engine block size.

    Returns ``(hashes, tokens_per_hash, blocks_per_hash)``.  When the trace's block
    is a multiple of the engine's, each hash covers ``trace_block / block_size``
    engine blocks.  Otherwise hashes are grouped to the least common multiple of the
    two sizes, keeping every r-th hash (a chain hash identifies its whole prefix).
    """
    if not hashes:
        return hashes, trace_block, 1
    if trace_block % block_size == 0:
        return hashes, trace_block, trace_block // block_size
    unit = math.lcm(trace_block, block_size)
    r = unit // trace_block
    return hashes[r - 1 :: r], unit, unit // block_size


def root_hash(hashes: tuple[int, ...], trace_block: int, block_size: int) -> int | None:
    """The first of :func:`effective_hashes` (None when there is none), without
    re-blocking the whole tuple: the key a :class:`PrefixIndex` looks a prompt up by."""
    if trace_block % block_size == 0:
        return hashes[0] if hashes else None
    r = math.lcm(trace_block, block_size) // trace_block
    return hashes[r - 1] if len(hashes) >= r else None


class PrefixIndex:
    """Which replicas hold which prompt *roots* in HBM, cluster-wide (read by routers
    through ``ClusterView.prefix_holders``).

    A root is a prompt's first (re-blocked) chain hash.  A replica caches some prefix of
    a prompt exactly when its pool holds the prompt's root (:meth:`BlockPool.match` is
    >= 1 iff ``hashes[0]`` is resident), so a router finds every replica that caches
    part of a prompt with one dict lookup instead of asking every replica.  Since a
    chain hash names its whole prefix, a root only ever sits at position 0 of the
    tuples that hold it, so the pools report just those: a segment created at
    position 0 adds its replica, one that loses position 0 (evicted, discarded,
    swapped to the host tier, the pool reset) removes it.  Maintained by
    :class:`BlockPool` alone; routers only read it.
    """

    __slots__ = ("holders",)

    def __init__(self) -> None:
        self.holders: dict[int, set[int]] = {}  # root hash -> replica ids holding it

    def add(self, root: int, rid: int) -> None:
        got = self.holders.get(root)
        if got is None:
            self.holders[root] = {rid}
        else:
            got.add(rid)

    def discard(self, root: int, rid: int) -> None:
        got = self.holders.get(root)
        if got is not None:
            got.discard(rid)
            if not got:
                del self.holders[root]


class Seg:
    """A run of prefix entries ``hs[lo:hi]`` that share one state.

    Attributes:
        hs: the hash tuple of the prompt that registered the run (shared, not copied).
        lo, hi: the resident run; eviction takes entries from ``hi`` down.
        bph: blocks per entry (hash).
        refs: sequences referencing the run.
        pinned: unreferenced and pinned until this time (seconds); 0.0: not pinned.
        stamp: LRU stamp of the release that made it evictable.
        tail: the segment split off this one's end, if any (same LRU membership).
    """

    __slots__ = ("hs", "lo", "hi", "bph", "refs", "pinned", "stamp", "tail")

    def __init__(self, hs: tuple[int, ...], lo: int, hi: int, bph: int, refs: int) -> None:
        self.hs = hs
        self.lo = lo
        self.hi = hi
        self.bph = bph
        self.refs = refs
        self.pinned = 0.0
        self.stamp = 0
        self.tail: Seg | None = None

    @property
    def blocks(self) -> int:
        return (self.hi - self.lo) * self.bph


def _chain(seg: Seg) -> list[Seg]:
    """``seg`` and the pieces split off its end, head first."""
    out = [seg]
    t = seg.tail
    while t is not None:
        out.append(t)
        t = t.tail
    return out


# An LRU item: (stamp, segments released together by one call head first, count of
# them still to examine).  Eviction takes items oldest first, segments tail first.
LRUItem = tuple[int, list[Seg], int]


class BlockPool:
    """Block accounting and prefix cache of one replica (vLLM's ``BlockPool``: free
    blocks, cached blocks by hash, the LRU of evictable ones).  Knows blocks and hashes,
    not sequences: :class:`KVCacheManager` keeps which sequence holds which.

    Args:
        capacity_blocks: total KV blocks of the replica.
        block_size: tokens per block.
        host_capacity_blocks: blocks of the host-DRAM tier (0: no host tier).
    """

    def __init__(
        self,
        capacity_blocks: int,
        block_size: int,
        host_capacity_blocks: int = 0,
        index: PrefixIndex | None = None,
        replica_id: int = -1,
    ) -> None:
        if capacity_blocks < 1:
            raise ValueError("KV capacity must be at least one block")
        # the cluster's root index this pool reports to, as replica ``replica_id``
        self.index = index
        self.replica_id = replica_id
        self.capacity = capacity_blocks
        self.block_size = block_size
        self.free = capacity_blocks
        # resident segments by their first hash and by their last one: with chain hashes
        # a lookup only ever starts at a segment's first hash (see match), and a prompt's
        # next chunk continues the segment that ends at its last cached hash
        self.starts: dict[int, Seg] = {}
        self.ends: dict[int, Seg] = {}
        self.num_entries = 0  # resident hashes (the segments' lengths)
        # LRU of unreferenced, unpinned segments, oldest first, with lazy deletion: a
        # segment in an item is live only while it is unreferenced, unpinned and still
        # carries the item's stamp.  Referencing is then O(1) per segment with no queue
        # operation, releasing a call appends one item, and eviction skips stale ones.
        self._lru: deque[LRUItem] = deque()
        self._lru_len = 0  # segments named by the items of _lru (live or stale)
        self._tick = 0
        self._pin_seq = 0
        self._pinned: list[tuple[float, int, Seg]] = []  # heap of unreferenced pinned
        self.evictable_blocks = 0  # blocks of live segments in _lru
        self.pinned_blocks = 0  # blocks of unreferenced segments waiting in _pinned
        self.evictions = 0  # entries evicted
        self.evicted_blocks = 0
        # host-DRAM tier: hash -> blocks, least recently used first
        self.host_capacity = max(0, host_capacity_blocks)
        self.host_used = 0
        self._host: OrderedDict[int, int] = OrderedDict()
        self.swapped_out_blocks = 0
        self.swapped_in_blocks = 0
        self.host_evicted_blocks = 0
        # eviction rank of a resident hash (a retention policy's ``eviction_rank``):
        # None evicts in LRU order; otherwise highest rank first, LRU among equals
        self.rank: Callable[[int], int] | None = None

    # ---- queries ----------------------------------------------------------------
    @property
    def used(self) -> int:
        return self.capacity - self.free

    @property
    def active_blocks(self) -> int:
        """Blocks referenced by sequences."""
        return self.capacity - self.free - self.evictable_blocks - self.pinned_blocks

    def match(self, hashes: tuple[int, ...]) -> int:
        """Number of leading ``hashes`` present in the cache.

        Hops a segment at a time.  A chain hash names its whole prefix, so it sits at
        one position, after the same hashes, in every prompt holding it: the prompt's
        first hash, and each hash after a run the prompt shares with a segment (it
        either left the segment midway or reached its end), can only be resident as the
        first hash of a segment (the hash before it is resident in the segment just
        left, or, for the first, there is none).  So one lookup in ``starts`` per
        segment, and one comparison decides whether the prompt runs through it
        (:func:`_agree`).
        """
        get = self.starts.get
        n = len(hashes)
        i = 0
        while i < n:
            seg = get(hashes[i])
            if seg is None:
                return i
            hs, q = seg.hs, seg.lo
            m = seg.hi - q
            if m > n - i:
                m = n - i
            if hs[q + m - 1] == hashes[i + m - 1]:
                i += m
            else:
                i += _agree(hs, q, seg.hi, hashes, i, n)
        return n

    def entry_blocks(self) -> int:
        """Blocks held by prefix entries (referenced, evictable or pinned)."""
        return sum(s.blocks for s in self._segments())

    def evictable_among(self, hashes: tuple[int, ...], n: int) -> int:
        """Blocks of the first ``n`` of ``hashes`` (all present) that are evictable."""
        starts = self.starts
        total = 0
        i = 0
        end = len(hashes)
        while i < n:
            seg = starts[hashes[i]]
            # the run as match saw it (bounded by the whole prompt), then cut at n
            k = min(_agree(seg.hs, seg.lo, seg.hi, hashes, i, end), n - i)
            if not seg.refs and not seg.pinned:
                total += k * seg.bph
            i += k
        return total

    def next_pin_expiry(self) -> float | None:
        """When the earliest pin of an unreferenced entry expires (None: no pins)."""
        pinned = self._pinned
        while pinned:
            until, _, seg = pinned[0]
            if seg.refs or seg.pinned != until or seg.hi == seg.lo:
                heapq.heappop(pinned)  # stale: re-referenced, re-pinned or gone
                continue
            return until
        return None

    def available(self, now: float) -> int:
        """Blocks that can be had now: free plus evictable (expiring pins released)."""
        self._release_expired(now)
        return self.free + self.evictable_blocks

    # ---- allocation -------------------------------------------------------------
    def _release_expired(self, now: float) -> None:
        pinned = self._pinned
        while pinned and pinned[0][0] <= now:
            until, _, seg = heapq.heappop(pinned)
            if seg.refs or seg.pinned != until or seg.hi == seg.lo:
                continue  # re-referenced, re-pinned or gone since
            seg.pinned = 0.0
            b = seg.blocks
            self.pinned_blocks -= b
            self._tick += 1
            seg.stamp = self._tick
            self._lru.appendleft((self._tick, [seg], 1))  # expired pins are the oldest
            self._lru_len += 1
            self.evictable_blocks += b

    def allocate(self, blocks: int, now: float, unpin: bool = False) -> bool:
        """Take ``blocks`` blocks, evicting LRU entries if needed; False if impossible.

        ``unpin``: when free and evictable blocks fall short, pins are released early,
        earliest expiry first (as if their time had come), until they do or none is
        left (Continuum unpins under memory pressure rather than stall a running call).
        """
        if blocks <= self.free:
            self.free -= blocks
            return True
        # expired pins become the oldest LRU entries, so they are evicted first
        self._release_expired(now)
        while unpin and blocks > self.free + self.evictable_blocks:
            until = self.next_pin_expiry()
            if until is None:
                break
            self._release_expired(until)
        if blocks > self.free + self.evictable_blocks:
            return False
        if self.rank is not None:
            self._evict_ranked(blocks)
            self.free -= blocks
            return True
        lru = self._lru
        trim = self._trim
        free = self.free
        while free < blocks:
            stamp, segs, k = lru.popleft()
            self._lru_len -= k
            j = k - 1
            while j >= 0:
                seg = segs[j]
                chain = (seg,) if seg.tail is None else _chain(seg)
                for s in reversed(chain):
                    if s.stamp != stamp or s.refs or s.pinned or s.hi == s.lo:
                        continue  # stale: re-released, re-referenced, pinned or gone
                    bph = s.bph
                    cnt = min(s.hi - s.lo, -(-(blocks - free) // bph))
                    trim(s, cnt)
                    b = cnt * bph
                    free += b
                    self.evictable_blocks -= b
                    self.evictions += cnt
                    self.evicted_blocks += b
                    if free >= blocks:
                        break
                if free >= blocks:
                    break
                j -= 1
            if j >= 0:  # the rest of this item stays, still the oldest
                lru.appendleft((stamp, segs, j + 1))
                self._lru_len += j + 1
        self.free = free - blocks
        return True

    def allocate_above(self, blocks: int, now: float, rank: int) -> bool:
        """Take ``blocks`` blocks evicting only entries ranked above ``rank`` (in the
        order of :meth:`_evict_ranked`); False, evicting nothing, when free blocks and
        those entries fall short (a prefetch never evicts what is needed as soon)."""
        if blocks <= self.free:
            self.free -= blocks
            return True
        self._release_expired(now)
        if not self._evict_ranked(blocks, rank):
            return False
        self.free -= blocks
        return True

    def _evict_ranked(self, blocks: int, above: int | None = None) -> bool:
        """Evict evictable segments until ``blocks`` blocks are free: highest
        ``rank(first hash)`` first; among equal ranks in LRU order (items oldest first,
        a call's segments tail first), each segment from its end.  ``above``: only
        segments ranked above it, and nothing at all (False) when they and the free
        blocks fall short.  The evicted segments stay named by their LRU items (lazy
        deletion, as in :meth:`allocate`)."""
        assert self.rank is not None
        rank = self.rank
        seen: set[int] = set()
        cands: list[tuple[int, int, Seg]] = []
        for stamp, segs, k in self._lru:
            for seg in reversed(segs[:k]):
                for s in reversed(_chain(seg)):
                    if id(s) not in seen and self._live(stamp, s):
                        seen.add(id(s))
                        r = rank(s.hs[s.lo])
                        if above is None or r > above:
                            cands.append((-r, len(cands), s))
        if above is not None and self.free + sum(s.blocks for _, _, s in cands) < blocks:
            return False
        cands.sort()
        free = self.free
        for _, _, s in cands:
            if free >= blocks:
                break
            cnt = min(s.hi - s.lo, -(-(blocks - free) // s.bph))
            self._trim(s, cnt)
            b = cnt * s.bph
            free += b
            self.evictable_blocks -= b
            self.evictions += cnt
            self.evicted_blocks += b
        self.free = free
        return True

    def release(self, blocks: int) -> None:
        """Return private blocks."""
        self.free += blocks

    def _trim(self, s: Seg, cnt: int) -> None:
        """Drop the last ``cnt`` entries of ``s`` from the cache (``cnt`` <= its length):
        one key changes, not one per entry."""
        hs = s.hs
        hi = s.hi
        s.hi = lo = hi - cnt
        self.num_entries -= cnt
        self.ends.pop(hs[hi - 1], None)
        if lo > s.lo:
            self.ends[hs[lo - 1]] = s
            return
        self.starts.pop(hs[lo], None)
        if not lo and self.index is not None:
            self.index.discard(hs[0], self.replica_id)

    @staticmethod
    def _claim(keys: dict[int, Seg], h: int, seg: Seg) -> None:
        """Key ``seg`` by ``h`` in ``keys`` (``starts`` or ``ends``).  With chain hashes
        no other segment holds that key; one that does means the input is not chain
        hashes, and the cache cannot stay consistent."""
        if keys.setdefault(h, seg) is not seg:
            raise _not_chain(h)

    def _new_seg(self, hashes: tuple[int, ...], i: int, j: int, bph: int) -> None:
        """Register ``hashes[i:j]`` (none resident) as a new segment referenced once."""
        seg = Seg(hashes, i, j, bph, 1)
        self._claim(self.starts, hashes[i], seg)
        self._claim(self.ends, hashes[j - 1], seg)
        self.num_entries += j - i
        if not i and self.index is not None:
            self.index.add(hashes[0], self.replica_id)

    # ---- prefix entries ---------------------------------------------------------
    def _split(self, seg: Seg, p: int) -> Seg:
        """Split ``seg`` at ``p`` (lo < p < hi); returns the piece ``hs[p:hi]``."""
        s2 = Seg(seg.hs, p, seg.hi, seg.bph, seg.refs)
        s2.pinned = seg.pinned
        s2.stamp = seg.stamp
        s2.tail = seg.tail
        seg.hi = p
        seg.tail = s2
        hs = seg.hs
        self._claim(self.starts, hs[p], s2)
        self.ends[hs[p - 1]] = seg
        self.ends[hs[s2.hi - 1]] = s2
        if seg.pinned and not seg.refs:
            self._pin_seq += 1
            heapq.heappush(self._pinned, (seg.pinned, self._pin_seq, s2))
        return s2

    def _ref_range(self, hashes: tuple[int, ...], i: int, n: int) -> None:
        """Reference ``hashes[i:n]`` (all present), splitting segments at the run's ends."""
        starts = self.starts
        end = len(hashes)
        while i < n:
            seg = starts[hashes[i]]  # the run starts a segment (see match)
            hs = seg.hs
            lo = seg.lo
            size = seg.hi - lo
            if size > n - i or hs[lo + size - 1] != hashes[i + size - 1]:
                # the run as match saw it (bounded by the whole prompt), then cut at n
                k = min(_agree(hs, lo, seg.hi, hashes, i, end), n - i)
                if k < size:
                    self._split(seg, lo + k)
                size = k
            if not seg.refs:
                b = size * seg.bph
                if seg.pinned:
                    self.pinned_blocks -= b
                    seg.pinned = 0.0
                else:  # leaves the LRU (its queue item goes stale)
                    self.evictable_blocks -= b
            seg.refs += 1
            i += size

    def ref(self, hashes: tuple[int, ...], n: int) -> None:
        """Reference the first ``n`` of ``hashes`` (all present: see :meth:`match`)."""
        self._ref_range(hashes, 0, n)

    def _add_referenced(self, hashes: tuple[int, ...], start: int, end: int, bph: int) -> int:
        """Make ``hashes[start:end]`` referenced entries: new ones become segments of
        ``bph`` blocks per hash, present ones are referenced.  Returns how many were
        present.

        The caller references ``hashes[:start]`` (segments covering them exactly), so
        with chain hashes the first resident one of ``hashes[start:end]``, if any, starts
        a segment (the hash before it is not resident, or ends a segment): looking the
        run up in ``starts`` finds whether any is present."""
        starts = self.starts
        if start >= end:
            return 0
        run = hashes[start:end]
        if not any(map(starts.__contains__, run)):  # the common case, all in C
            prev = self.ends.get(hashes[start - 1]) if start else None
            if (
                prev is not None
                and prev.hs is hashes
                and prev.hi == start
                and prev.refs == 1
                and prev.bph == bph
                and prev.tail is None
            ):
                # the caller's own next chunk: its previous piece, referenced by it alone
                # (so unpinned and out of the LRU), grows instead of a new segment
                prev.hi = end
                del self.ends[hashes[start - 1]]
                self._claim(self.ends, hashes[end - 1], prev)
                self.num_entries += end - start
                return 0
            self._new_seg(hashes, start, end, bph)
            return 0
        present = 0
        n = len(hashes)
        i = start
        while i < end:
            j = i + 1
            if hashes[i] in starts:
                # the resident run, segment by segment as match walks it
                j = i
                while j < end:
                    seg = starts.get(hashes[j])
                    if seg is None:
                        break
                    j += min(_agree(seg.hs, seg.lo, seg.hi, hashes, j, n), end - j)
                self._ref_range(hashes, i, j)
                present += j - i
            else:
                while j < end and hashes[j] not in starts:
                    j += 1
                self._new_seg(hashes, i, j, bph)
            i = j
        return present

    def register(
        self, hashes: tuple[int, ...], start: int, entry_blocks: int, end: int | None = None
    ) -> int:
        """Turn private blocks holding ``hashes[start:end]`` (``end`` None: to the end)
        into referenced entries.

        The engine calls this for every prefill chunk it schedules, for the full blocks
        computed by the end of that step (as vLLM v1 caches them), so a prompt registers
        in pieces; a piece that continues the sequence's own unshared segment extends it.
        Where another sequence registered the same hash meanwhile, that entry is
        referenced and our private copy is freed.  Returns the blocks freed.
        """
        stop = len(hashes) if end is None else end
        freed = self._add_referenced(hashes, start, stop, entry_blocks) * entry_blocks
        self.free += freed
        return freed

    def unref(
        self,
        hashes: tuple[int, ...],
        n: int,
        now: float,
        pin_until: float = 0.0,
        discard: bool = False,
        to_host: bool = False,
    ) -> int:
        """Drop one reference from the first ``n`` of ``hashes``.

        Entries left unreferenced become evictable (most recently used), are pinned
        until ``pin_until`` if that is in the future, are freed if ``discard``, or
        move to the host tier if ``to_host`` (and it has room for them).  Returns the
        blocks moved to the host tier.
        Hashes are released tail first, so that under LRU a prompt's last blocks are
        evicted before its first ones and the cached part stays a prefix (as vLLM
        frees a request's blocks in reverse order).
        """
        starts = self.starts
        released: list[Seg] = []
        i = 0
        while i < n:  # the segments this sequence references cover hashes[:n] exactly
            seg = starts.get(hashes[i])
            if seg is None:  # a run matched by its last hash held another middle
                raise _not_chain(hashes[i])
            r = seg.refs - 1
            seg.refs = r
            if not r:
                released.append(seg)
            i += seg.hi - seg.lo
        self._tick += 1
        stamp = self._tick
        if not released:
            return 0
        to_host = to_host and self.host_capacity > 0
        if not to_host and not discard and not pin_until > now:
            # the common case: the released segments join the LRU as one item
            to_lru = 0
            for seg in released:
                seg.stamp = stamp
                to_lru += (seg.hi - seg.lo) * seg.bph
            self._append_lru(stamp, released, to_lru)
            return 0
        moved = 0
        lru: list[Seg] = []
        to_lru = 0
        for seg in reversed(released):
            b = seg.blocks
            if to_host and seg.bph <= self.host_capacity:
                for h in reversed(seg.hs[seg.lo : seg.hi]):
                    self._host_put(h, seg.bph)
                self._trim(seg, seg.hi - seg.lo)
                self.free += b
                moved += b
            elif discard:
                self._trim(seg, seg.hi - seg.lo)
                self.free += b
            elif pin_until > now:
                seg.pinned = pin_until
                self.pinned_blocks += b
                self._pin_seq += 1
                heapq.heappush(self._pinned, (pin_until, self._pin_seq, seg))
            else:
                seg.stamp = stamp
                to_lru += b
                lru.append(seg)
        if lru:
            lru.reverse()
            self._append_lru(stamp, lru, to_lru)
        self.swapped_out_blocks += moved
        return moved

    def _append_lru(self, stamp: int, segs: list[Seg], blocks: int) -> None:
        self.evictable_blocks += blocks
        self._lru.append((stamp, segs, len(segs)))
        self._lru_len += len(segs)
        if self._lru_len > 2 * self.num_entries + 4096:
            self._compact()

    # ---- host-DRAM tier -----------------------------------------------------------
    def _host_put(self, h: int, blocks: int) -> None:
        host = self._host
        if h in host:
            host.move_to_end(h)
            return
        while self.host_used + blocks > self.host_capacity:
            _, b = host.popitem(last=False)
            self.host_used -= b
            self.host_evicted_blocks += b
        host[h] = blocks
        self.host_used += blocks

    def host_store(self, hashes: tuple[int, ...], start: int, end: int, bph: int) -> None:
        """Copy ``hashes[start:end]`` (``bph`` blocks each) into the host tier, keeping
        them in HBM (vLLM's CPU offload stores every computed block; the GPU copy stays
        in the prefix cache).  Present ones become most recently used."""
        if self.host_capacity < bph:
            return
        for h in hashes[start:end]:
            self._host_put(h, bph)

    def host_match(self, hashes: tuple[int, ...], start: int) -> int:
        """How many of ``hashes[start:]`` follow on in the host tier (a prefix run)."""
        host = self._host
        if not host:
            return 0
        return len(list(takewhile(host.__contains__, hashes[start:])))

    def swap_in(self, hashes: tuple[int, ...], start: int, m: int, keep: bool = False) -> int:
        """Move ``hashes[start:start + m]`` from the host tier into HBM as referenced entries
        (``keep``: copy them, the host tier keeping them as most recently used, as vLLM's
        CPU offload tier does).

        The caller has already allocated their blocks (the blocks returned).  An entry
        computed again meanwhile keeps that copy, and its allocation is returned.
        """
        host = self._host
        run = hashes[start : start + m]
        if keep:
            sizes = [host[h] for h in run]
            for h in run:
                host.move_to_end(h)
        else:
            sizes = [host.pop(h) for h in run]
        if not sizes:
            return 0
        blocks = sum(sizes)
        if not keep:
            self.host_used -= blocks
        present = self._add_referenced(hashes, start, start + m, sizes[0])
        self.free += present * sizes[0]
        self.swapped_in_blocks += blocks
        return blocks

    def upload(self, hashes: tuple[int, ...], now: float, keep: bool = False) -> int:
        """Copy the run of ``hashes`` that continues their HBM-resident prefix in the
        host tier back into HBM as unreferenced (most recently used) entries, evicting
        LRU entries for room (a predictive upload; ``keep`` as :meth:`swap_in`);
        nothing when the run is empty or the blocks cannot be had.  Returns the blocks
        uploaded."""
        n = self.match(hashes)
        m = self.host_match(hashes, n)
        if not m:
            return 0
        host = self._host
        blocks = sum(host[h] for h in hashes[n : n + m])
        avail = self.available(now) - (self.evictable_among(hashes, n) if n else 0)
        if blocks > avail:
            return 0
        self.ref(hashes, n)  # the resident prefix is not evicted for its own tail
        ok = self.allocate(blocks, now)
        assert ok, "upload planned beyond available blocks"
        self.swap_in(hashes, n, m, keep)
        self.unref(hashes, n + m, now)
        return blocks

    # ---- maintenance and checks ---------------------------------------------------
    def _segments(self) -> list[Seg]:
        return list(self.starts.values())

    def hashes(self) -> set[int]:
        """Every resident hash (walks every entry: for checks and tests)."""
        return {h for s in self.starts.values() for h in s.hs[s.lo : s.hi]}

    @staticmethod
    def _live(stamp: int, s: Seg) -> bool:
        return s.stamp == stamp and not s.refs and not s.pinned and s.hi > s.lo

    def _compact(self) -> None:
        """Rebuild the LRU from its live segments (keeps it within a constant factor of
        the cache), in the same eviction order."""
        items: deque[LRUItem] = deque()
        live = self._live
        for stamp, segs, k in self._lru:
            keep = [seg for seg in segs[:k] if any(live(stamp, s) for s in _chain(seg))]
            if keep:
                items.append((stamp, keep, len(keep)))
        self._lru = items
        self._lru_len = sum(k for _, _, k in items)

    def check(self) -> None:
        """Assert the accounting invariants (used by tests)."""
        assert 0 <= self.free <= self.capacity, (self.free, self.capacity)
        segs = self._segments()
        for s in segs:
            assert s.lo < s.hi and self.starts[s.hs[s.lo]] is s
            assert self.ends[s.hs[s.hi - 1]] is s, "a segment's last hash is not its key"
        assert len(self.ends) == len(segs), "a stale key in ends"
        assert sum(s.hi - s.lo for s in segs) == self.num_entries == len(self.hashes()), (
            "entry in two segments"
        )
        assert self._lru_len == sum(k for _, _, k in self._lru)
        live: list[Seg] = []
        for stamp, items, k in self._lru:
            # an item may name a segment and, through its chain, the pieces split off it
            mine = {id(s): s for seg in items[:k] for s in _chain(seg) if self._live(stamp, s)}
            live += mine.values()
        assert len(live) == len({id(s) for s in live}), "a segment is twice in the LRU"
        ev = sum(s.blocks for s in live)
        assert ev == self.evictable_blocks, (ev, self.evictable_blocks)
        ev_all = sum(s.blocks for s in segs if not s.refs and not s.pinned)
        assert ev_all == ev, "an evictable entry is missing from the LRU"
        pinned = sum(s.blocks for s in segs if not s.refs and s.pinned)
        assert pinned == self.pinned_blocks, (pinned, self.pinned_blocks)
        assert self.entry_blocks() <= self.used, (self.entry_blocks(), self.used)
        assert self.host_used == sum(self._host.values()) <= self.host_capacity


def _not_chain(h: int) -> AgentsimError:
    """The error for prefix hashes that break the chain-hash contract at hash ``h``."""
    return AgentsimError(
        f"prefix hashes are not chain hashes: hash {h} is cached after two different "
        "prefixes (a chain hash names its whole prefix, so it follows the same hashes in "
        "every prompt)"
    )


def _agree(hs: tuple[int, ...], q: int, hi: int, hashes: tuple[int, ...], i: int, n: int) -> int:
    """How many of ``hashes[i:n]`` equal ``hs[q:hi]`` position by position (>= 1 when
    ``hs[q] == hashes[i]``).  Chain hashes agree on a leading run, then differ, so the
    last position decides a whole run and a bisection finds where a shorter one ends
    (O(log n) comparisons, not one per hash)."""
    m = min(hi - q, n - i)
    if hs[q + m - 1] == hashes[i + m - 1]:
        return m
    a, b = 0, m - 1  # position a agrees, position b differs
    while b - a > 1:
        mid = (a + b) >> 1
        if hs[q + mid] == hashes[i + mid]:
            a = mid
        else:
            b = mid
    return a + 1


# ---- the engine's side: which sequence holds which blocks ---------------------------


class SeqBlocks:
    """The KV blocks one sequence holds (vLLM's per-request block list, as counts).

    Changed only by :class:`KVCacheManager`.  It lives on the sequence (``Seq.kv_blocks``)
    rather than in a dict keyed by it, so the decode path does no lookup.

    Attributes:
        block_hashes: the prompt's chain hashes re-blocked for the engine's block size.
        hash_tokens, hash_blocks: tokens and blocks one hash covers.
        num_cached_hashes: leading ``block_hashes`` the sequence references (prefix hits
            plus the blocks it computed and cached).
        num_private: blocks it holds outside prefix entries.
        num_slots: tokens its blocks can hold (``(num_cached_hashes x hash_blocks +
            num_private) x block_size``).
        prompt_cached: its whole prompt is cached (prefill done; nothing more to cache).
    """

    __slots__ = (
        "block_hashes",
        "hash_tokens",
        "hash_blocks",
        "num_cached_hashes",
        "num_private",
        "num_slots",
        "prompt_cached",
    )

    def __init__(self, prefix_hashes: tuple[int, ...], trace_block: int, block_size: int) -> None:
        self.block_hashes, self.hash_tokens, self.hash_blocks = effective_hashes(
            prefix_hashes, trace_block, block_size
        )
        self.num_cached_hashes = 0
        self.num_private = 0
        self.num_slots = 0
        self.prompt_cached = False


class KVSeq(Protocol):
    """What :class:`KVCacheManager` reads of a sequence (``sim.engine.replica.Seq``).
    Tokens: ``num_computed_tokens`` have KV; ``num_prefill_tokens`` must have KV before
    the next sample; ``num_external_computed_tokens`` were restored from a saved copy."""

    kv_blocks: SeqBlocks
    num_computed_tokens: int
    num_prefill_tokens: int
    num_external_computed_tokens: int


@dataclass(slots=True)
class ComputedBlocks:
    """A waiting sequence's prefix lookup (:meth:`KVCacheManager.get_computed_blocks`).

    Attributes:
        num_hits: leading block hashes cached in HBM.
        num_host_hits: hashes after those found in the host tier (loaded on admission).
        num_host_blocks: blocks those hold (what admission copies from host memory).
        num_hit_tokens: prompt tokens the hits cover (at most all but the last token,
            which is always computed).
        num_computed_tokens: where the prefill starts: the hits, or more when a saved
            copy restored more (``num_external_computed_tokens``), also capped.
    """

    num_hits: int
    num_host_hits: int
    num_host_blocks: int
    num_hit_tokens: int
    num_computed_tokens: int


@dataclass(slots=True)
class FreedBlocks:
    """What :meth:`KVCacheManager.free` gave back: ``num_blocks`` the sequence held
    (private blocks plus the prefix entries it referenced), ``num_to_host`` of them
    moved to the host tier (what the engine prices as a swap-out)."""

    num_blocks: int
    num_to_host: int


class KVCacheManager:
    """Owns the blocks of each sequence of one replica over a :class:`BlockPool`
    (vLLM v1's ``KVCacheManager``).  Units: tokens, blocks, seconds (``now``).

    Args:
        pool: the replica's block pool and prefix cache.
        host_write_through: the host tier is vLLM's CPU KV offload: every cached
            prompt block is also stored there, and loads copy (the host keeps them).
    """

    def __init__(self, pool: BlockPool, host_write_through: bool = False) -> None:
        self.pool = pool
        self.block_size = pool.block_size
        self.host_write_through = host_write_through and pool.host_capacity > 0

    # ---- views (blocks) -------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.pool.capacity

    @property
    def used(self) -> int:
        """Blocks held by sequences or holding cached prefixes."""
        return self.pool.used

    @property
    def active_blocks(self) -> int:
        """Blocks referenced by sequences."""
        return self.pool.active_blocks

    @property
    def pinned_blocks(self) -> int:
        return self.pool.pinned_blocks

    @property
    def host_capacity(self) -> int:
        return self.pool.host_capacity

    @property
    def evictions(self) -> int:
        """Prefix entries evicted so far."""
        return self.pool.evictions

    def next_pin_expiry(self) -> float | None:
        """When the earliest pin of an unreferenced entry expires (None: no pins)."""
        return self.pool.next_pin_expiry()

    def num_blocks(self, num_tokens: int) -> int:
        """Blocks that hold ``num_tokens`` tokens."""
        return -(-num_tokens // self.block_size)

    def fits(self, num_tokens: int) -> bool:
        """Whether a sequence of ``num_tokens`` tokens can ever fit in the pool."""
        return self.num_blocks(num_tokens) <= self.pool.capacity

    def cached_prefix_tokens(self, call: Call) -> int:
        """Tokens of ``call``'s prompt cached in HBM (a prefix match; routers ask)."""
        if not call.prefix_hashes:
            return 0
        hashes, tokens, _ = effective_hashes(call.prefix_hashes, call.block_size, self.block_size)
        return min(self.pool.match(hashes) * tokens, call.input_tokens)

    # ---- admission --------------------------------------------------------------------
    def get_computed_blocks(self, seq: KVSeq) -> ComputedBlocks:
        """Look up a waiting sequence's prompt: its cached prefix in HBM, then in the
        host tier.  Changes nothing."""
        b = seq.kv_blocks
        hashes = b.block_hashes
        pool = self.pool
        n = pool.match(hashes) if hashes else 0
        # the prefix may continue in the host tier: those entries are swapped in
        m = pool.host_match(hashes, n) if pool.host_used and hashes else 0
        last = seq.num_prefill_tokens - 1
        hit_tokens = min((n + m) * b.hash_tokens, last)
        start = max(hit_tokens, min(seq.num_external_computed_tokens, last))
        return ComputedBlocks(n, m, m * b.hash_blocks, hit_tokens, start)

    def _admission_blocks(
        self,
        seq: KVSeq,
        num_new_tokens: int,
        computed: ComputedBlocks,
        now: float,
        reserve: int = 0,
    ) -> int:
        """New private blocks admitting ``seq`` takes (-1: they cannot be had now, or
        not while leaving ``reserve`` blocks available).

        The check comes before any cache reference, so a failed attempt leaves the
        LRU order as it was (vLLM also checks before it allocates).
        """
        b = seq.kv_blocks
        n = computed.num_hits
        hit_blocks = (n + computed.num_host_hits) * b.hash_blocks
        end = computed.num_computed_tokens + num_new_tokens
        need = max(0, -(-end // self.block_size) - hit_blocks)
        total = need + computed.num_host_blocks + reserve
        pool = self.pool
        avail = pool.available(now)
        if total > avail:
            return -1
        # referencing the hit entries takes them out of the evictable pool (at most
        # n x hash_blocks blocks: count them only when that bound could matter)
        if (
            n
            and total > avail - n * b.hash_blocks
            and total > avail - pool.evictable_among(b.block_hashes, n)
        ):
            return -1
        return need

    def can_allocate(
        self,
        seq: KVSeq,
        num_new_tokens: int,
        computed: ComputedBlocks,
        now: float,
        reserve: int = 0,
    ) -> bool:
        """Whether :meth:`allocate_slots` would admit ``seq`` now (pins whose time has
        come are released to the LRU, as time moving on does; nothing else changes)."""
        return self._admission_blocks(seq, num_new_tokens, computed, now, reserve) >= 0

    def allocate_slots(
        self,
        seq: KVSeq,
        num_new_tokens: int,
        now: float,
        computed: ComputedBlocks | None = None,
        reserve: int = 0,
    ) -> bool:
        """Make room for ``num_new_tokens`` more tokens of ``seq``; False (and nothing
        allocated, referenced or evicted) when the pool cannot give the blocks.
        ``reserve`` (admissions only): blocks that must stay available afterwards (a
        batch policy's reserved partition, ``BatchPolicy.admission_reserve``).

        ``computed`` None: a running sequence, growing from ``num_computed_tokens``.
        Otherwise a waiting one being admitted from ``computed`` (its lookup): the hits
        are referenced, the host-tier hits loaded into new blocks, and private blocks
        taken for the tokens from ``computed.num_computed_tokens`` on.  Unreferenced
        cached blocks are evicted (LRU) as needed.  A running sequence may also release
        pins early (earliest expiry first) rather than fail: pinned blocks never
        preempt a running call; an admission waits for pins to expire instead.
        """
        b = seq.kv_blocks
        if computed is None:
            end = seq.num_computed_tokens + num_new_tokens
            if end <= b.num_slots:
                return True
            bs = self.block_size
            need = -(-end // bs) - b.num_slots // bs
            if not self.pool.allocate(need, now, unpin=True):
                return False
            b.num_private += need
            b.num_slots += need * bs
            return True
        need = self._admission_blocks(seq, num_new_tokens, computed, now, reserve)
        if need < 0:
            return False
        pool = self.pool
        n, m = computed.num_hits, computed.num_host_hits
        pool.ref(b.block_hashes, n)
        ok = pool.allocate(need + computed.num_host_blocks, now)
        assert ok, "admission planned beyond available blocks"
        if m:
            pool.swap_in(b.block_hashes, n, m, keep=self.host_write_through)
        b.num_cached_hashes = n + m
        b.num_private = need
        b.num_slots = ((n + m) * b.hash_blocks + need) * self.block_size
        return True

    def upload(self, hashes: tuple[int, ...], now: float) -> int:
        """Bring a finished sequence's prefix (its ``block_hashes``) back from the host
        tier into HBM as cached entries (:meth:`BlockPool.upload`); returns the blocks."""
        if not hashes or not self.pool.host_used:
            return 0
        return self.pool.upload(hashes, now, keep=self.host_write_through)

    def num_decodes_with_slots(self, seqs: Sequence[KVSeq], start: int, limit: int) -> int:
        """How many of ``seqs[start:]`` (at most ``limit``), in order, are decoding (their
        prefill is computed) and hold a slot for their next token already, so that
        ``allocate_slots(seq, 1)`` would take nothing.  The scheduler takes such a run
        in one call instead of one call per sequence (the common case of a step)."""
        i = start
        stop = start + limit
        if stop > len(seqs):
            stop = len(seqs)
        while i < stop:
            s = seqs[i]
            kvt = s.num_computed_tokens
            if kvt < s.num_prefill_tokens or kvt >= s.kv_blocks.num_slots:
                break
            i += 1
        return i - start

    # ---- prefix caching ---------------------------------------------------------------
    def cache_blocks(self, seq: KVSeq, num_tokens: int | None = None) -> int:
        """Make the full prompt blocks of ``seq``'s first ``num_tokens`` tokens (None:
        its whole prompt, which ends its caching) shared prefix entries, as vLLM v1
        caches the blocks a step computes when it schedules the step.  A piece that
        another sequence cached meanwhile is shared and our copy freed.  Returns the
        blocks also written to the host tier (write-through; 0 otherwise).
        """
        b = seq.kv_blocks
        hashes = b.block_hashes
        if b.prompt_cached:
            return 0
        if num_tokens is None:
            b.prompt_cached = True
            upto = len(hashes)
        elif hashes:
            upto = min(len(hashes), num_tokens // b.hash_tokens)
        else:
            return 0
        start = b.num_cached_hashes
        if upto <= start:
            return 0
        hb = b.hash_blocks
        self.pool.register(hashes, start, hb, upto)
        b.num_private -= (upto - start) * hb
        b.num_cached_hashes = upto
        if not self.host_write_through:
            return 0
        self.pool.host_store(hashes, start, upto, hb)
        return (upto - start) * hb

    def prefetch(self, call: Call, now: float) -> tuple[int, int] | None:
        """Load the part of ``call``'s prompt that continues its HBM prefix in the host
        tier into HBM now, as cached (unreferenced, most recently used) entries, so
        that the call hits them in HBM when it arrives (KVFlow's prefetch).  With an
        eviction rank, only entries ranked above the prompt's last hash to load are
        evicted for it (never one needed as soon); without, any evictable one.  Nothing
        happens when no block of it is in the host tier or its blocks cannot be had that
        way.  Returns the last hash loaded and the blocks loaded (what the engine
        prices as a copy), or None."""
        pool = self.pool
        if not call.prefix_hashes or not pool.host_used:
            return None
        hashes, _, hb = effective_hashes(call.prefix_hashes, call.block_size, self.block_size)
        n = pool.match(hashes)
        m = pool.host_match(hashes, n)
        blocks = m * hb
        if not m:
            return None
        if pool.rank is None:
            if blocks > pool.available(now) - pool.evictable_among(hashes, n):
                return None
            pool.ref(hashes, n)
            ok = pool.allocate(blocks, now)
            assert ok, "prefetch planned beyond available blocks"
        else:
            # the hits rank at most as high as the deeper hashes to load (every call
            # containing a chain hash contains its prefix), so none is a candidate
            if not pool.allocate_above(blocks, now, pool.rank(hashes[n + m - 1])):
                return None
            pool.ref(hashes, n)
        pool.swap_in(hashes, n, m, keep=self.host_write_through)
        pool.unref(hashes, n + m, now)
        return hashes[n + m - 1], blocks

    # ---- decode spans -------------------------------------------------------------------
    def num_decode_steps(self, n: int, k: int, get_slacks: Callable[[], Sequence[int]]) -> int:
        """How many of ``k`` decode steps (one token per sequence each) ``n`` decoding
        sequences can take on the free blocks, each taking a new block whenever its blocks
        are full.  ``get_slacks()``: each one's free slots (the tokens its blocks take before
        it needs another one, below ``block_size`` as blocks are taken when needed),
        ascending; asked only when the free blocks could fall short."""
        bs = self.block_size
        free = self.pool.free
        if free >= n * -(-k // bs):
            return k  # no sequence can need more than ceil(k / bs) new blocks in k steps
        slacks = get_slacks()
        assert len(slacks) == n and slacks[-1] < bs, "a decoding sequence's blocks"
        # Sequence i needs a new block at steps slack_i + 1 + t * bs (t = 0, 1, ...); with
        # every slack below bs, round t of these crossings lies in (t * bs, (t + 1) * bs],
        # so the sorted crossings are the sorted slacks repeated every bs steps.  The span
        # ends just before crossing number ``free`` (0-based), the first one free blocks
        # cannot pay for.
        first_short = slacks[free % n] + 1 + (free // n) * bs
        return min(k, first_short - 1)

    def grant_blocks(
        self, grants: Sequence[tuple[Sequence[KVSeq], int]], now: float, stepwise: bool = False
    ) -> bool:
        """Give every sequence of each ``(seqs, n)`` of ``grants`` ``n`` more private
        blocks: the decodes whose slots are full before a step (one block each,
        ``stepwise``: exactly as ``allocate_slots(seq, 1)`` one sequence at a time) or the
        blocks a decode span's tokens filled (one allocation at its end).  Pins are
        released early if needed, as for a running sequence; ``stepwise``, only when a
        sequence's block needs them (released pins are evicted first, so releasing them
        for the whole grant at once could evict other entries).  False, giving nothing,
        when free, evictable and pinned blocks together fall short (pins whose time has
        come are released, as the first of those calls would)."""
        total = sum(len(seqs) * n for seqs, n in grants)
        pool = self.pool
        if total > pool.free:
            avail = pool.available(now)
            if total > avail + pool.pinned_blocks:
                return False
            stepwise = stepwise and total > avail
        bs = self.block_size
        if total and not stepwise:
            ok = pool.allocate(total, now, unpin=True)
            assert ok, "blocks granted beyond free, evictable and pinned ones"
        for seqs, n in grants:
            for s in seqs:
                if stepwise:
                    ok = pool.allocate(n, now, unpin=True)
                    assert ok, "blocks granted beyond free, evictable and pinned ones"
                b = s.kv_blocks
                b.num_private += n
                b.num_slots += n * bs
        return True

    # ---- release ------------------------------------------------------------------------
    def free(
        self,
        seq: KVSeq,
        now: float,
        decide: Callable[[], RetentionDecision] | None = None,
    ) -> FreedBlocks:
        """Give back every block ``seq`` holds; its prompt's entries stay cached.

        Private blocks are freed first; then ``decide`` (a retention policy, None: keep
        in the LRU) is asked, seeing the pool without them, whether the entries the
        sequence leaves unreferenced are pinned for ``pin_s``, discarded, or moved to
        the host tier.  Entries are released tail first (the LRU evicts a prompt's last
        blocks before its first, as vLLM frees a request's blocks in reverse order).
        """
        b = seq.kv_blocks
        pool = self.pool
        held = b.num_slots // self.block_size
        pool.release(b.num_private)
        b.num_private = 0
        if decide is None:
            pool.unref(b.block_hashes, b.num_cached_hashes, now)
            moved = 0
        else:
            d = decide()
            moved = pool.unref(
                b.block_hashes,
                b.num_cached_hashes,
                now,
                pin_until=now + d.pin_s if d.pin_s > 0 else 0.0,
                discard=d.discard,
                to_host=d.swap_to_host,
            )
        b.num_cached_hashes = 0
        b.num_slots = 0
        b.prompt_cached = False
        return FreedBlocks(held, moved)

    def reset(self) -> None:
        """Drop every block and cached prefix, in HBM and in the host tier (the GPUs
        were lost); the pool keeps its sizes.  Sequences must have been freed."""
        p = self.pool
        if p.index is not None:
            for s in p._segments():
                if not s.lo:
                    p.index.discard(s.hs[0], p.replica_id)
        self.pool = type(p)(p.capacity, p.block_size, p.host_capacity, p.index, p.replica_id)
        self.pool.rank = p.rank

    def check(self, seqs: Iterable[KVSeq]) -> None:
        """Assert the pool's invariants and that ``seqs`` (all the sequences holding
        blocks) account for every block not cached as a prefix entry."""
        pool = self.pool
        pool.check()
        bs = self.block_size
        private = 0
        for s in seqs:
            b = s.kv_blocks
            private += b.num_private
            assert b.num_private >= 0
            assert b.num_slots == (b.num_cached_hashes * b.hash_blocks + b.num_private) * bs
            assert b.num_slots >= s.num_computed_tokens, "holds fewer blocks than its KV needs"
        assert private + pool.entry_blocks() == pool.used, "block leak"
