"""The per-entry prefix cache: the reference for ``sim/engine/kvcache.py``'s ``BlockPool``.

This is agentsim's original KV cache, one ref-counted entry per prefix hash (every
operation walks the blocks it touches).  ``sim/engine/kvcache.py`` keeps runs of entries as
segments to make agent sessions O(turns) per call; ``tests/test_kvcache.py`` puts a
``KVCacheManager`` over each, drives both with the same random operations and requires
identical results.  Kept only as a
test oracle: nothing in ``sim/`` imports it.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from itertools import takewhile
from types import ModuleType
from typing import Any

from sim.common import native
from tests.helpers import load_file

# An entry is a 3-item list [refs, blocks, pinned_until] (a list, not an object: the
# cache creates and touches one per prompt block, millions per run).
REFS, BLOCKS, PINNED, STAMP = 0, 1, 2, 3
Entry = list[Any]  # [refs: int, blocks: int, pinned_until: float (0: unpinned), stamp: int]


class BlockPool:
    """Block accounting and prefix cache of one replica.

    Args:
        capacity_blocks: total KV blocks of the replica.
        block_size: tokens per block.
        host_capacity_blocks: blocks of the host-DRAM tier (0: no host tier).
    """

    def __init__(
        self, capacity_blocks: int, block_size: int, host_capacity_blocks: int = 0
    ) -> None:
        if capacity_blocks < 1:
            raise ValueError("KV capacity must be at least one block")
        self.capacity = capacity_blocks
        self.block_size = block_size
        self.free = capacity_blocks
        self.entries: dict[int, Entry] = {}  # hash -> [refs, blocks, pinned_until, stamp]
        # LRU of unreferenced, unpinned entries, oldest first, with lazy deletion.  An
        # item (stamp, hashes, lo, hi) stands for the entries hashes[lo:hi] released
        # together by one call, evicted tail first; an entry in it is live only while
        # it exists, is unreferenced and unpinned, and still carries that stamp.
        # Referencing an entry is then O(1) with no queue operation, releasing a call
        # appends one item, and eviction skips stale entries.
        self._lru: deque[tuple[int, tuple[int, ...], int, int]] = deque()
        self._lru_len = 0  # entries named by the items of _lru (live or stale)
        self._tick = 0
        self._pinned: list[tuple[float, int]] = []  # heap of (until, hash) unreferenced pinned
        self.evictable_blocks = 0  # blocks of entries in _lru
        self.pinned_blocks = 0  # blocks of unreferenced entries waiting in _pinned
        self.evictions = 0  # entries evicted
        self.evicted_blocks = 0
        # host-DRAM tier: hash -> blocks, least recently used first
        self.host_capacity = max(0, host_capacity_blocks)
        self.host_used = 0
        self._host: OrderedDict[int, int] = OrderedDict()
        self.swapped_out_blocks = 0
        self.swapped_in_blocks = 0
        self.host_evicted_blocks = 0

    # ---- queries ----------------------------------------------------------------
    @property
    def used(self) -> int:
        return self.capacity - self.free

    @property
    def active_blocks(self) -> int:
        """Blocks referenced by sequences."""
        return self.capacity - self.free - self.evictable_blocks - self.pinned_blocks

    def match(self, hashes: tuple[int, ...]) -> int:
        """Number of leading ``hashes`` present in the cache."""
        # takewhile and dict.__contains__ both run in C: no Python loop per block
        return len(list(takewhile(self.entries.__contains__, hashes)))

    def entry_blocks(self) -> int:
        """Blocks held by prefix entries (referenced, evictable or pinned)."""
        return sum(e[BLOCKS] for e in self.entries.values())

    def evictable_among(self, hashes: tuple[int, ...], n: int) -> int:
        """Blocks of the first ``n`` of ``hashes`` (all present) that are evictable."""
        entries = self.entries
        return sum(
            entries[h][BLOCKS]
            for h in hashes[:n]
            if not entries[h][REFS] and not entries[h][PINNED]
        )

    def next_pin_expiry(self) -> float | None:
        """When the earliest pin of an unreferenced entry expires (None: no pins)."""
        pinned = self._pinned
        entries = self.entries
        while pinned:
            until, h = pinned[0]
            e = entries.get(h)
            if e is None or e[REFS] or e[PINNED] != until:
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
            until, h = heapq.heappop(pinned)
            e = self.entries.get(h)
            if e is None or e[REFS] or e[PINNED] != until:
                continue  # re-referenced or re-pinned since
            e[PINNED] = 0.0
            self.pinned_blocks -= e[BLOCKS]
            self._tick += 1
            e[STAMP] = self._tick
            self._lru.appendleft((self._tick, (h,), 0, 1))  # expired pins are the oldest
            self._lru_len += 1
            self.evictable_blocks += e[BLOCKS]

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
        lru = self._lru
        entries = self.entries
        while self.free < blocks:
            stamp, hs, lo, hi = lru.popleft()
            self._lru_len -= hi - lo
            j = hi - 1
            get = entries.get
            free = self.free
            while j >= lo and free < blocks:
                h = hs[j]
                j -= 1
                e = get(h)
                if e is None or e[3] != stamp or e[0] or e[2]:
                    continue  # stale: re-released, re-referenced, pinned or gone
                del entries[h]
                b = int(e[1])
                self.evictable_blocks -= b
                free += b
                self.evictions += 1
                self.evicted_blocks += b
            self.free = free
            if j >= lo:  # the rest of this group stays, still the oldest
                lru.appendleft((stamp, hs, lo, j + 1))
                self._lru_len += j + 1 - lo
        self.free -= blocks
        return True

    def release(self, blocks: int) -> None:
        """Return private blocks."""
        self.free += blocks

    # ---- prefix entries ---------------------------------------------------------
    def ref(self, hashes: tuple[int, ...], n: int) -> None:
        """Reference the first ``n`` of ``hashes`` (all present: see :meth:`match`)."""
        entries = self.entries
        left_lru = 0
        for h in hashes[:n]:
            e = entries[h]
            r = e[0]  # REFS
            if not r:
                if e[2]:  # PINNED
                    self.pinned_blocks -= e[1]
                    e[2] = 0.0
                else:  # leaves the LRU (its queue item goes stale)
                    left_lru += e[1]  # BLOCKS
            e[0] = r + 1
        self.evictable_blocks -= left_lru

    def register(
        self, hashes: tuple[int, ...], start: int, entry_blocks: int, end: int | None = None
    ) -> int:
        """Turn private blocks holding ``hashes[start:end]`` into referenced entries.

        Where another sequence registered the same hash meanwhile, that entry is
        referenced and our private copy is freed.  Returns the blocks freed.
        """
        entries = self.entries
        freed = 0
        for h in hashes[start:end]:
            e = entries.get(h)
            if e is None:
                entries[h] = [1, entry_blocks, 0.0, 0]
            else:
                if not e[REFS]:
                    if e[PINNED]:
                        self.pinned_blocks -= e[BLOCKS]
                        e[PINNED] = 0.0
                    else:
                        self.evictable_blocks -= e[BLOCKS]
                e[REFS] += 1
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
        entries = self.entries
        to_host = to_host and self.host_capacity > 0
        moved = 0
        self._tick += 1
        stamp = self._tick
        to_lru = 0  # blocks that became evictable
        if not to_host and not discard and not pin_until > now:
            # the common case, kept tight: entries left unreferenced join the LRU
            for h in reversed(hashes[:n]):
                e = entries[h]
                r = e[0] - 1  # REFS
                e[0] = r
                if not r:
                    e[3] = stamp  # STAMP
                    to_lru += e[1]  # BLOCKS
            n_iter = 0
        else:
            n_iter = n
        for i in range(n_iter - 1, -1, -1):
            h = hashes[i]
            e = entries[h]
            e[REFS] -= 1
            if e[REFS]:
                continue
            if to_host and e[BLOCKS] <= self.host_capacity:
                del entries[h]
                b = int(e[BLOCKS])
                self.free += b
                self._host_put(h, b)
                moved += b
            elif discard:
                del entries[h]
                self.free += e[BLOCKS]
            elif pin_until > now:
                e[PINNED] = pin_until
                self.pinned_blocks += e[BLOCKS]
                heapq.heappush(self._pinned, (pin_until, h))
            else:
                e[STAMP] = stamp
                to_lru += e[BLOCKS]
        if to_lru:
            self.evictable_blocks += to_lru
            self._lru.append((stamp, hashes, 0, n))
            self._lru_len += n
            if self._lru_len > 2 * len(entries) + 4096:
                self._compact()
        self.swapped_out_blocks += moved
        return moved

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
        """Copy ``hashes[start:end]`` into the host tier (write-through offload)."""
        if self.host_capacity < bph:
            return
        for h in hashes[start:end]:
            self._host_put(h, bph)

    def host_match(self, hashes: tuple[int, ...], start: int) -> int:
        """How many of ``hashes[start:]`` follow on in the host tier (a prefix run)."""
        host = self._host
        if not host:
            return 0
        m = 0
        for h in hashes[start:]:
            if h not in host:
                break
            m += 1
        return m

    def swap_in(self, hashes: tuple[int, ...], start: int, m: int, keep: bool = False) -> int:
        """Move ``hashes[start:start + m]`` from the host tier into HBM as referenced entries.

        The caller has already allocated their blocks (the blocks returned).
        """
        host = self._host
        entries = self.entries
        blocks = 0
        for h in hashes[start : start + m]:
            if keep:
                b = host[h]
                host.move_to_end(h)
            else:
                b = host.pop(h)
                self.host_used -= b
            blocks += b
            e = entries.get(h)
            if e is None:
                entries[h] = [1, b, 0.0, 0]
            else:  # computed again meanwhile: keep that copy, return the allocation
                if not e[REFS]:
                    if e[PINNED]:
                        self.pinned_blocks -= int(e[BLOCKS])
                        e[PINNED] = 0.0
                    else:
                        self.evictable_blocks -= int(e[BLOCKS])
                e[REFS] += 1
                self.free += b
        self.swapped_in_blocks += blocks
        return blocks

    def _live(self, stamp: int, h: int) -> bool:
        e = self.entries.get(h)
        return e is not None and not e[REFS] and not e[PINNED] and e[STAMP] == stamp

    def _compact(self) -> None:
        """Rebuild the LRU from its live entries (keeps it within a constant factor of
        the cache), in the same eviction order."""
        items: deque[tuple[int, tuple[int, ...], int, int]] = deque()
        for stamp, hs, lo, hi in self._lru:
            live = tuple(h for h in hs[lo:hi] if self._live(stamp, h))
            if live:
                items.append((stamp, live, 0, len(live)))
        self._lru = items
        self._lru_len = sum(hi - lo for _, _, lo, hi in items)

    def check(self) -> None:
        """Assert the accounting invariants (used by tests)."""
        assert 0 <= self.free <= self.capacity, (self.free, self.capacity)
        live = [h for stamp, hs, lo, hi in self._lru for h in hs[lo:hi] if self._live(stamp, h)]
        assert self._lru_len == sum(hi - lo for _, _, lo, hi in self._lru)
        assert len(live) == len(set(live)), "an entry is twice in the LRU"
        ev = sum(self.entries[h][BLOCKS] for h in live)
        assert ev == self.evictable_blocks, (ev, self.evictable_blocks)
        ev_all = sum(e[BLOCKS] for e in self.entries.values() if not e[REFS] and not e[PINNED])
        assert ev_all == ev, "an evictable entry is missing from the LRU"
        assert self.entry_blocks() <= self.used, (self.entry_blocks(), self.used)
        assert self.host_used == sum(self._host.values()) <= self.host_capacity


def python_source(module: str) -> ModuleType:
    """``module``'s Python source, imported under its own name plus ``_source``, whether
    or not the compiled build (``sim.common.native``) serves ``module`` itself.

    The reference pool stands in for ``BlockPool`` only in Python: the compiled
    ``KVCacheManager`` checks that its pool is a ``BlockPool`` (mypyc enforces the
    annotations), and its objects cannot be deep-copied.  ``tests/test_native.py``
    checks the build against this same source."""
    return load_file(module + "_source", native.source_of(module))
