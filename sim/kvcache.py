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
  its list of referenced hashes.

An entry covers a whole number of blocks (see :func:`effective_hashes`).  A
sequence's prompt entries are registered when its prefill completes (vLLM caches
full computed blocks), so concurrent sequences share a prefix only once it has been
computed.

Invariant: ``used_blocks <= capacity`` always; ``free + used == capacity``.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from dataclasses import dataclass


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


@dataclass(slots=True)
class Entry:
    """A cached prefix block group: ``blocks`` blocks, ``refs`` sequences using it."""

    blocks: int
    refs: int = 0
    pinned_until: float = 0.0


class KVCache:
    """Block accounting and prefix cache of one replica.

    Args:
        capacity_blocks: total KV blocks of the replica.
        block_size: tokens per block.
    """

    def __init__(self, capacity_blocks: int, block_size: int) -> None:
        if capacity_blocks < 1:
            raise ValueError("KV capacity must be at least one block")
        self.capacity = capacity_blocks
        self.block_size = block_size
        self.free = capacity_blocks
        self.entries: dict[int, Entry] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()  # unreferenced, unpinned entries
        self._pinned: list[tuple[float, int]] = []  # heap of (until, hash) unreferenced pinned
        self.evictable_blocks = 0  # blocks of entries in _lru
        self.pinned_blocks = 0  # blocks of unreferenced entries waiting in _pinned
        self.evictions = 0  # entries evicted
        self.evicted_blocks = 0

    # ---- queries ----------------------------------------------------------------
    @property
    def used(self) -> int:
        return self.capacity - self.free

    @property
    def cached_blocks(self) -> int:
        """Blocks held by unreferenced cache entries (evictable or pinned)."""
        return self.evictable_blocks + self.pinned_blocks

    @property
    def active_blocks(self) -> int:
        """Blocks referenced by sequences."""
        return self.capacity - self.free - self.evictable_blocks - self.pinned_blocks

    def match(self, hashes: tuple[int, ...]) -> int:
        """Number of leading ``hashes`` present in the cache."""
        entries = self.entries
        n = 0
        for h in hashes:
            if h not in entries:
                break
            n += 1
        return n

    def available(self, now: float) -> int:
        """Blocks that can be had now: free plus evictable (expiring pins released)."""
        self._release_expired(now)
        return self.free + self.evictable_blocks

    # ---- allocation -------------------------------------------------------------
    def _release_expired(self, now: float) -> None:
        pinned = self._pinned
        while pinned and pinned[0][0] <= now:
            until, h = heapq.heappop(pinned)
            e = self.entries.get(h)
            if e is None or e.refs or e.pinned_until != until:
                continue  # re-referenced or re-pinned since
            e.pinned_until = 0.0
            self.pinned_blocks -= e.blocks
            self._lru[h] = None
            self._lru.move_to_end(h, last=False)  # expired pins are the oldest entries
            self.evictable_blocks += e.blocks

    def allocate(self, blocks: int, now: float) -> bool:
        """Take ``blocks`` blocks, evicting LRU entries if needed; False if impossible."""
        if blocks <= self.free:
            self.free -= blocks
            return True
        if blocks > self.free + self.evictable_blocks:
            self._release_expired(now)
            if blocks > self.free + self.evictable_blocks:
                return False
        lru = self._lru
        entries = self.entries
        while self.free < blocks:
            h, _ = lru.popitem(last=False)
            e = entries.pop(h)
            self.evictable_blocks -= e.blocks
            self.free += e.blocks
            self.evictions += 1
            self.evicted_blocks += e.blocks
        self.free -= blocks
        return True

    def release(self, blocks: int) -> None:
        """Return private blocks."""
        self.free += blocks

    # ---- prefix entries ---------------------------------------------------------
    def ref(self, hashes: tuple[int, ...], n: int) -> None:
        """Reference the first ``n`` of ``hashes`` (all present: see :meth:`match`)."""
        entries = self.entries
        lru = self._lru
        for h in hashes[:n]:
            e = entries[h]
            if e.refs == 0:
                if h in lru:
                    del lru[h]
                    self.evictable_blocks -= e.blocks
                else:  # pinned and unreferenced
                    self.pinned_blocks -= e.blocks
                    e.pinned_until = 0.0
            e.refs += 1

    def register(self, hashes: tuple[int, ...], start: int, entry_blocks: int) -> int:
        """Turn private blocks holding ``hashes[start:]`` into referenced entries.

        Where another sequence registered the same hash meanwhile, that entry is
        referenced and our private copy is freed.  Returns the blocks freed.
        """
        entries = self.entries
        freed = 0
        for h in hashes[start:]:
            e = entries.get(h)
            if e is None:
                entries[h] = Entry(entry_blocks, 1)
            else:
                if e.refs == 0:
                    if h in self._lru:
                        del self._lru[h]
                        self.evictable_blocks -= e.blocks
                    else:
                        self.pinned_blocks -= e.blocks
                        e.pinned_until = 0.0
                e.refs += 1
                freed += entry_blocks
        self.free += freed
        return freed

    def unref(
        self,
        hashes: tuple[int, ...],
        n: int,
        now: float,
        pin_until: float = 0.0,
        discard: bool = False,
    ) -> None:
        """Drop one reference from the first ``n`` of ``hashes``.

        Entries left unreferenced become evictable (most recently used), are pinned
        until ``pin_until`` if that is in the future, or are freed if ``discard``.
        """
        entries = self.entries
        lru = self._lru
        for h in hashes[:n]:
            e = entries[h]
            e.refs -= 1
            if e.refs:
                continue
            if discard:
                del entries[h]
                self.free += e.blocks
            elif pin_until > now:
                e.pinned_until = pin_until
                self.pinned_blocks += e.blocks
                heapq.heappush(self._pinned, (pin_until, h))
            else:
                lru[h] = None
                self.evictable_blocks += e.blocks

    def check(self) -> None:
        """Assert the accounting invariants (used by tests)."""
        assert 0 <= self.free <= self.capacity, (self.free, self.capacity)
        ev = sum(self.entries[h].blocks for h in self._lru)
        assert ev == self.evictable_blocks, (ev, self.evictable_blocks)
        entry_blocks = sum(e.blocks for e in self.entries.values())
        assert entry_blocks <= self.used, (entry_blocks, self.used)
