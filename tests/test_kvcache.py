"""The segment KV cache (sim/engine/kvcache.py) against the per-entry reference.

Random agent-like workloads (prompts that extend each other turn by turn and branch
inside earlier prompts) drive both caches through the engine's protocol: match,
reference the hits, allocate, register the computed prompt, release with LRU, pins,
discard or the host tier, and swap back in.  Every observable (free blocks, evictable
and pinned blocks, evictions, host use, and the match of every prompt) must agree
after every operation, and the segment cache's invariants must hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.engine.kvcache import BlockPool
from tests.kv_reference import BlockPool as RefPool

BPH = 2  # blocks per hash


@st.composite
def _prompts(draw: st.DrawFn) -> list[tuple[int, ...]]:
    """Chain-hash prompts: each extends a random earlier prompt at a random point."""
    prompts: list[tuple[int, ...]] = []
    next_id = 1
    for _ in range(draw(st.integers(2, 14))):
        branch: bool = draw(st.booleans())
        if prompts and branch:
            base = draw(st.sampled_from(prompts))
            cut = draw(st.integers(0, len(base)))
            base = base[:cut]
        else:
            base = ()
        new = draw(st.integers(1, 6))
        # a chain hash names its whole prefix: a fresh id per (prefix, block)
        prompts.append(base + tuple(range(next_id, next_id + new)))
        next_id += new
    return prompts


@dataclass
class Live:
    hashes: tuple[int, ...]
    nref: int
    private: int


class Pair:
    """The same operations on both caches, compared after each."""

    def __init__(self, capacity: int, host: int) -> None:
        self.new = BlockPool(capacity, 16, host)
        self.ref = RefPool(capacity, 16, host)
        self.now = 0.0

    def same(self, prompts: list[tuple[int, ...]]) -> None:
        a, b = self.new, self.ref
        for attr in (
            "free",
            "evictable_blocks",
            "pinned_blocks",
            "evictions",
            "evicted_blocks",
            "host_used",
            "swapped_in_blocks",
            "swapped_out_blocks",
            "host_evicted_blocks",
        ):
            assert getattr(a, attr) == getattr(b, attr), attr
        for p in prompts:
            assert a.match(p) == b.match(p), p
            assert a.host_match(p, a.match(p)) == b.host_match(p, b.match(p)), p
        assert set(a.entries) == set(b.entries)
        a.check()
        b.check()

    def admit(self, hashes: tuple[int, ...], keep: bool = False) -> Live | None:
        a, b = self.new, self.ref
        n = a.match(hashes)
        m = a.host_match(hashes, n) if a.host_used else 0
        need = (len(hashes) - n - m) * BPH + 1  # unhashed prompt blocks + the tail
        swap = m * BPH
        if need + swap > a.available(self.now):
            assert need + swap > b.available(self.now)
            return None
        if n and need + swap > a.available(self.now) - a.evictable_among(hashes, n):
            assert need + swap > b.available(self.now) - sum(
                b.entries[h][1] for h in hashes[:n] if not b.entries[h][0] and not b.entries[h][2]
            )
            return None
        for c in (a, b):
            c.ref(hashes, n)
            assert c.allocate(need + swap, self.now)
            if m:
                c.swap_in(hashes, n, m, keep=keep)
        return Live(hashes, n + m, need)

    def register(self, s: Live, end: int | None = None) -> None:
        """Register ``s``'s prompt up to ``end`` (None: all of it; a prefill chunk
        registers the part computed so far)."""
        stop = len(s.hashes) if end is None else end
        freed = self.new.register(s.hashes, s.nref, BPH, stop)
        assert freed == self.ref.register(s.hashes, s.nref, BPH, stop)
        s.private -= (stop - s.nref) * BPH  # now entries (duplicates were freed)
        s.nref = stop

    def store(self, s: Live) -> None:
        """Write-through offload of ``s``'s referenced entries to the host tier."""
        for c in (self.new, self.ref):
            c.host_store(s.hashes, 0, s.nref, BPH)

    def finish(self, s: Live, how: str) -> None:
        kw = {
            "lru": {},
            "pin": {"pin_until": 1e18},
            "discard": {"discard": True},
            "host": {"to_host": True},
        }[how]
        moved = [
            c.unref(s.hashes, s.nref, self.now, **kw)  # type: ignore[arg-type]
            for c in (self.new, self.ref)
        ]
        assert moved[0] == moved[1]
        self.new.release(s.private)
        self.ref.release(s.private)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, ...]], list[tuple[str, int, str]]]:
    prompts = draw(_prompts())
    capacity = draw(st.integers(8, 80))
    host = draw(st.sampled_from([0, 0, 6, 30]))
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["admit", "admit", "register", "chunk", "store", "finish", "preempt"]
                ),
                st.integers(0, 10_000),
                st.sampled_from(["lru", "lru", "lru", "pin", "discard", "host"]),
            ),
            max_size=60,
        )
    )
    return capacity, host, prompts, ops


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_segments_match_the_per_entry_cache(sc: tuple) -> None:  # type: ignore[type-arg]
    capacity, host, prompts, ops = sc
    pair = Pair(capacity, host)
    live: list[Live] = []
    for op, pick, how in ops:
        pair.now += 1.0
        if op == "admit":
            s = pair.admit(prompts[pick % len(prompts)], keep=how == "host")
            if s is not None:
                live.append(s)
        elif live:
            s = live[pick % len(live)]
            if op == "register" and s.nref < len(s.hashes):
                pair.register(s)
            elif op == "chunk" and s.nref < len(s.hashes):
                pair.register(s, s.nref + 1 + pick % (len(s.hashes) - s.nref))
            elif op == "store":
                pair.store(s)
            elif op == "finish" and s.nref == len(s.hashes):
                live.remove(s)
                pair.finish(s, how)
            elif op == "preempt":
                live.remove(s)
                pair.finish(s, "lru")
        pair.same(prompts)


def test_a_session_turn_touches_segments_not_blocks() -> None:
    """Turn t + 1 references turn t's prompt as whole segments: one per earlier turn."""
    kv = BlockPool(10_000, 16)
    prompt: tuple[int, ...] = ()
    for turn in range(20):
        n = kv.match(prompt + tuple(range(1000 * turn, 1000 * turn + 50)))
        prompt = prompt + tuple(range(1000 * turn, 1000 * turn + 50))
        assert n == 50 * turn
        kv.ref(prompt, n)
        assert kv.allocate(50, float(turn))
        kv.register(prompt, n, 1)
        kv.unref(prompt, len(prompt), float(turn))
        assert len(kv._segments()) == turn + 1
        kv.check()
    assert kv.evictable_blocks == 1000 and kv.free == 9000


def test_eviction_splits_nothing_and_keeps_a_prefix() -> None:
    """LRU eviction takes a released prompt's tail first; the cached part stays a prefix
    that the next call still matches."""
    kv = BlockPool(10, 16)
    a = (1, 2, 3, 4)
    assert kv.allocate(8, 0.0)
    kv.register(a, 0, 2)
    kv.unref(a, 4, 0.0)
    assert kv.allocate(5, 1.0)  # 2 free + evict 2 entries (4 blocks) from the tail
    assert kv.match(a) == 2 and kv.evictions == 2 and kv.free == 1
    kv.check()


def test_branching_prompts_split_a_segment() -> None:
    """A prompt that diverges inside another's segment references only the shared run."""
    kv = BlockPool(100, 16)
    a = (1, 2, 3, 4, 5)
    b = (1, 2, 9, 10)
    assert kv.allocate(5, 0.0)
    kv.register(a, 0, 1)
    assert kv.match(b) == 2
    kv.ref(b, 2)
    assert kv.allocate(2, 0.0)
    kv.register(b, 2, 1)
    kv.unref(a, 5, 1.0)  # 3, 4, 5 become evictable; 1, 2 are still b's
    assert kv.evictable_blocks == 3
    assert kv.allocate(100 - 7 + 3, 2.0)  # takes every free and evictable block
    assert kv.match(a) == 2 and kv.match(b) == 4
    kv.check()


def test_swap_out_keeps_the_prefix_when_the_host_tier_overflows() -> None:
    """A prompt of two segments released to a host tier with room for two of its four
    entries: the tail goes first (tail-first release), so the host keeps the prefix."""
    for cache in (BlockPool(100, 16, host_capacity_blocks=4), RefPool(100, 16, 4)):
        a, b = (1, 2), (1, 2, 3, 4)
        assert cache.allocate(4, 0.0)
        cache.register(a, 0, 2)
        cache.ref(b, 2)
        assert cache.allocate(4, 0.0)
        cache.register(b, 2, 2)
        cache.unref(a, 2, 0.0)
        moved = cache.unref(b, 4, 1.0, to_host=True)
        assert moved == 8 and cache.host_used == 4
        assert cache.match(b) == 0 and cache.host_match(b, 0) == 2
