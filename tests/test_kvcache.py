"""The KV cache (sim/engine/kvcache.py): the segment pool against the per-entry
reference, through the KV-cache manager the engine uses, and hand-worked cases.

Random agent-like workloads (prompts that extend each other turn by turn and branch
inside earlier prompts) drive a ``KVCacheManager`` over each pool with the engine's
calls: prefix lookup, ``allocate_slots`` for admission (hits referenced, host-tier hits
loaded) and for running sequences, ``cache_blocks`` chunk by chunk, and ``free`` with
LRU, pins, discard or the host tier.  Every observable (what each call returns, free,
evictable and pinned blocks, evictions, host use, and the match of every prompt) must
agree after every operation, and both managers' invariants must hold.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.base import RetentionDecision
from sim.common.errors import AgentsimError
from tests.kv_reference import BlockPool as RefPool
from tests.kv_reference import python_source

# the module's Python source, compiled or not: the reference pool stands in for the
# segment pool under the same manager, and the managers are deep-copied
kvcache = python_source("sim.engine.kvcache")
BlockPool, KVCacheManager = kvcache.BlockPool, kvcache.KVCacheManager
PrefixIndex, SeqBlocks = kvcache.PrefixIndex, kvcache.SeqBlocks

BS = 16  # tokens per block
BPH = 2  # blocks per hash
TRACE_BLOCK = BS * BPH  # tokens per hash


@st.composite
def _prompts(draw: st.DrawFn) -> list[tuple[int, ...]]:
    """Chain-hash prompts: each extends a random earlier prompt at a random point."""
    prompts: list[tuple[int, ...]] = []
    next_id = 1
    for _ in range(draw(st.integers(2, 14))):
        branch: bool = draw(st.booleans())
        if prompts and branch:
            base = draw(st.sampled_from(prompts))
            # often a whole earlier prompt (an agent's next turn), else a cut inside it
            cut = draw(st.one_of(st.just(len(base)), st.integers(0, len(base))))
            base = base[:cut]
        else:
            base = ()
        new = draw(st.integers(1, 6))
        # a chain hash names its whole prefix: a fresh id per (prefix, block)
        prompts.append(base + tuple(range(next_id, next_id + new)))
        next_id += new
    return prompts


@dataclass
class FakeSeq:
    """What the manager reads of a sequence (``sim.engine.kvcache.KVSeq``)."""

    kv_blocks: SeqBlocks
    num_prefill_tokens: int
    num_computed_tokens: int = 0
    num_external_computed_tokens: int = 0


def fake_seq(hashes: tuple[int, ...], tokens: int, trace_block: int = TRACE_BLOCK) -> FakeSeq:
    return FakeSeq(SeqBlocks(hashes, trace_block, BS), tokens)


@dataclass
class Live:
    """One sequence, as each manager sees it."""

    new: FakeSeq
    ref: FakeSeq


class Pair:
    """A manager over each pool; the same calls on both, compared after each."""

    def __init__(self, capacity: int, host: int, write_through: bool) -> None:
        self.index = PrefixIndex()  # the routers' root index, as replica 3 reports to it
        self.new = KVCacheManager(BlockPool(capacity, BS, host, self.index, 3), write_through)
        self.ref = KVCacheManager(RefPool(capacity, BS, host), write_through)  # type: ignore[arg-type]
        self.now = 0.0

    def same(self, prompts: list[tuple[int, ...]], live: list[Live]) -> None:
        a, b = self.new.pool, self.ref.pool
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
        assert a.hashes() == set(b.entries)
        # the root index names exactly the prompts' first hashes resident in HBM
        held = {r for r, rids in self.index.holders.items() if rids == {3}}
        assert held == {p[0] for p in prompts if p[0] in b.entries}
        assert len(held) == len(self.index.holders)
        self.new.check([s.new for s in live])
        self.ref.check([s.ref for s in live])

    def admit(self, hashes: tuple[int, ...]) -> Live | None:
        """Admit a prompt of the hashed blocks plus half a block, as one chunk."""
        tokens = len(hashes) * TRACE_BLOCK + BS // 2
        s = Live(fake_seq(hashes, tokens), fake_seq(hashes, tokens))
        ok = []
        for m, seq in ((self.new, s.new), (self.ref, s.ref)):
            computed = m.get_computed_blocks(seq)
            chunk = tokens - computed.num_computed_tokens
            assert m.can_allocate(seq, chunk, computed, self.now) == (
                m.allocate_slots(seq, chunk, self.now, computed)
            )
            ok.append(computed if seq.kv_blocks.num_slots else None)
            seq.num_computed_tokens = tokens
        assert ok[0] == ok[1]
        return s if ok[0] is not None else None

    def cache(self, s: Live, tokens: int | None) -> None:
        """Cache ``s``'s prompt blocks of its first ``tokens`` tokens (None: all)."""
        stored = [m.cache_blocks(seq, tokens) for m, seq in ((self.new, s.new), (self.ref, s.ref))]
        assert stored[0] == stored[1]

    def grow(self, s: Live, tokens: int) -> None:
        """Decode ``tokens`` more tokens of ``s`` (a running sequence)."""
        ok = [
            m.allocate_slots(seq, tokens, self.now)
            for m, seq in ((self.new, s.new), (self.ref, s.ref))
        ]
        assert ok[0] == ok[1]
        if ok[0]:
            s.new.num_computed_tokens += tokens
            s.ref.num_computed_tokens += tokens

    def free(self, s: Live, how: str) -> None:
        decision = {
            "lru": RetentionDecision(),
            "pin": RetentionDecision(pin_s=1e18),
            "discard": RetentionDecision(discard=True),
            "host": RetentionDecision(swap_to_host=True),
            "preempt": None,
        }[how]
        freed = [
            m.free(seq, self.now, None if decision is None else lambda: decision)
            for m, seq in ((self.new, s.new), (self.ref, s.ref))
        ]
        assert freed[0] == freed[1]


@st.composite
def scenario(
    draw: st.DrawFn,
) -> tuple[int, int, bool, list[tuple[int, ...]], list[tuple[str, int, str]]]:
    prompts = draw(_prompts())
    # often small, so that evictions trim segments partway and leave a later segment
    # cached behind an evicted one
    capacity = draw(st.one_of(st.integers(8, 30), st.integers(8, 80)))
    host = draw(st.sampled_from([0, 0, 6, 30]))
    write_through = draw(st.booleans())
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["admit", "admit", "register", "chunk", "grow", "finish", "preempt"]
                ),
                st.integers(0, 10_000),
                st.sampled_from(["lru", "lru", "lru", "pin", "discard", "host"]),
            ),
            min_size=20,
            max_size=60,
        )
    )
    return capacity, host, write_through, prompts, ops


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_segments_match_the_per_entry_cache(sc: tuple) -> None:  # type: ignore[type-arg]
    capacity, host, write_through, prompts, ops = sc
    pair = Pair(capacity, host, write_through)
    live: list[Live] = []
    for op, pick, how in ops:
        pair.now += 1.0
        if op == "admit":
            s = pair.admit(prompts[pick % len(prompts)])
            if s is not None:
                live.append(s)
        elif live:
            s = live[pick % len(live)]
            cached = s.new.kv_blocks.num_cached_hashes
            n_hashes = len(s.new.kv_blocks.block_hashes)
            if op == "register":
                pair.cache(s, None)
            elif op == "chunk" and cached < n_hashes:
                pair.cache(s, (cached + 1 + pick % (n_hashes - cached)) * TRACE_BLOCK)
            elif op == "grow":
                pair.grow(s, 1 + pick % (3 * BS))
            elif op == "finish" and s.new.kv_blocks.prompt_cached:
                live.remove(s)
                pair.free(s, how)
            elif op == "preempt":
                live.remove(s)
                pair.free(s, "preempt")
        pair.same(prompts, live)


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


def _both(op: Callable[[BlockPool | RefPool], object]) -> object:
    """Run ``op`` on a fresh segment pool and a fresh per-entry reference pool of 20
    blocks (16 tokens, no host tier); both must return the same and keep their
    invariants.  Returns the segment pool's result."""
    pools = (BlockPool(20, BS), RefPool(20, BS))
    got = [op(p) for p in pools]
    assert got[0] == got[1]
    for p in pools:
        p.check()
    return got[0]


def test_a_segment_left_behind_an_evicted_predecessor_is_found_again() -> None:
    """A's six entries and B's two more (B pins them) are cached; A's release lets LRU
    eviction take 3, 4, 5, 6 but not 7, 8 (pinned): 7 is resident after an evicted
    hash.  A call on B's prompt hits 1, 2, registers 3-6 anew and finds 7, 8 inside its
    new run (no new copy: 2 blocks freed, the pin taken over), as the per-entry cache."""
    a = (1, 2, 3, 4, 5, 6)
    b = (*a, 7, 8)

    def run(p: BlockPool | RefPool) -> tuple[int, ...]:
        assert p.allocate(6, 0.0)
        p.register(a, 0, 1)  # A holds its prompt
        p.ref(b, 6)  # B extends A's prompt
        assert p.allocate(2, 0.0)
        p.register(b, 6, 1)
        p.unref(b, 8, 0.0, pin_until=100.0)  # 7, 8 pinned; 1-6 still A's
        p.unref(a, 6, 1.0)  # 1-6 evictable
        assert p.allocate(16, 2.0)  # 12 free + 4 evicted, tail first: 6, 5, 4, 3
        hits = p.match(b)
        p.release(16)
        p.ref(b, hits)
        assert p.allocate(8 - hits, 3.0)
        freed = p.register(b, hits, 1)
        return hits, freed, p.match(b), p.free, p.pinned_blocks, p.evictions

    assert _both(run) == (2, 2, 8, 12, 0, 4)


def test_a_chunk_extends_its_own_piece_after_another_call_split_it() -> None:
    """X registers (1, 2, 3, 4) of its prompt as one segment; Y, diverging after 2,
    splits it; X's next chunk (5-8) extends the piece (3, 4) it still holds alone, as
    if no split had happened: three segments, and the same cache as the reference."""
    x = (1, 2, 3, 4, 5, 6, 7, 8)
    y = (1, 2, 9)

    def run(p: BlockPool | RefPool) -> tuple[int, ...]:
        assert p.allocate(8, 0.0)
        p.register(x, 0, 1, 4)
        assert p.match(y) == 2
        p.ref(y, 2)
        assert p.allocate(1, 0.0)
        p.register(y, 2, 1)
        p.register(x, 4, 1)
        p.unref(y, 3, 1.0)
        p.unref(x, 8, 2.0)
        assert p.allocate(15, 3.0)  # 11 free + the oldest, y's 9, then x's tail 8, 7, 6
        return p.match(x), p.match(y), p.evictions, p.evictable_blocks

    assert _both(run) == (5, 2, 4, 5)
    pool = BlockPool(20, BS)
    pool.allocate(8, 0.0)
    pool.register(x, 0, 1, 4)
    pool.ref(y, 2)
    pool.register(x, 4, 1)
    assert sorted((s.lo, s.hi) for s in pool._segments()) == [(0, 2), (2, 8)]
    pool.check()


def test_hashes_that_are_not_chain_hashes_raise_a_clear_error() -> None:
    """Hash 2 follows 1 in A's prompt and 4 in B's: once cached at both places, a
    call that splits A's segment before 2 would key 2 twice; the pool says the hashes
    are not chain hashes instead of mixing up the two entries."""
    pool = BlockPool(20, BS)
    a, b = (1, 2, 3), (4, 2, 5)
    assert pool.allocate(6, 0.0)
    pool.register(a, 0, 1)
    pool.register(b, 0, 1, 1)
    pool.ref(b, 1)  # a second reference: B's next chunk cannot extend (4)
    pool.register(b, 1, 1)  # 2 starts a segment of B's prompt, and sits inside A's
    assert pool.num_entries == 6 and len(pool.hashes()) == 5
    with pytest.raises(AgentsimError, match="not chain hashes: hash 2 is cached after two"):
        pool.ref((1, 9), pool.match((1, 9)))


@st.composite
def _any_prompts(draw: st.DrawFn) -> list[tuple[int, ...]]:
    """Prompts of arbitrary hashes from a small alphabet (one hash at several
    positions and after several prefixes across prompts), none repeated in a prompt."""
    one = st.lists(st.integers(1, 8), min_size=1, max_size=6, unique=True).map(tuple)
    return draw(st.lists(one, min_size=2, max_size=8))


@settings(max_examples=200, deadline=None)
@given(_any_prompts(), st.integers(8, 80), st.data())
def test_hashes_that_are_not_chain_hashes_never_corrupt_the_pool(
    prompts: list[tuple[int, ...]], capacity: int, data: st.DataObject
) -> None:
    """Outside the chain-hash contract the pool may differ from the per-entry cache,
    but every block stays accounted for, or it stops with the chain-hash error."""
    m = KVCacheManager(BlockPool(capacity, BS, data.draw(st.sampled_from([0, 6]))))
    live: list[FakeSeq] = []
    now = 0.0
    try:
        for _ in range(data.draw(st.integers(0, 40))):
            now += 1.0
            op = data.draw(st.sampled_from(["admit", "admit", "chunk", "finish"]))
            if op == "admit":
                h = data.draw(st.sampled_from(prompts))
                s = fake_seq(h, len(h) * TRACE_BLOCK + BS // 2)
                c = m.get_computed_blocks(s)
                if m.allocate_slots(s, s.num_prefill_tokens - c.num_computed_tokens, now, c):
                    s.num_computed_tokens = s.num_prefill_tokens
                    live.append(s)
            elif live:
                s = data.draw(st.sampled_from(live))
                b = s.kv_blocks
                if op == "chunk" and not b.prompt_cached:
                    m.cache_blocks(s, (b.num_cached_hashes + 1) * TRACE_BLOCK)
                elif op == "finish":
                    m.cache_blocks(s, None)
                    live.remove(s)
                    how = data.draw(st.sampled_from(["lru", "pin", "discard", "host"]))
                    d = {
                        "lru": RetentionDecision(),
                        "pin": RetentionDecision(pin_s=1e18),
                        "discard": RetentionDecision(discard=True),
                        "host": RetentionDecision(swap_to_host=True),
                    }[how]
                    m.free(s, now, lambda d=d: d)
            p = m.pool
            segs = p._segments()
            for g in segs:
                assert g.lo < g.hi and g.refs >= 0 and p.starts[g.hs[g.lo]] is g
            assert p.num_entries == sum(g.hi - g.lo for g in segs)
            free_now = [g.blocks for g in segs if not g.refs]
            assert sum(free_now) == p.evictable_blocks + p.pinned_blocks
            private = sum(s.kv_blocks.num_private for s in live)
            assert private + p.entry_blocks() == p.used, "block leak"
    except AgentsimError as e:
        assert "not chain hashes" in str(e)


def _pool_state(m: KVCacheManager) -> tuple[int, int, int, int, int]:
    p = m.pool
    return p.free, p.evictable_blocks, p.pinned_blocks, p.evictions, p.num_entries


def test_allocate_slots_false_when_the_pool_is_exhausted_changes_nothing() -> None:
    """10 blocks of 16 tokens.  A finished prompt leaves 2 cached (evictable) blocks, a
    running sequence holds 7: 1 free + 2 evictable = 3 can be had.  A 60-token prompt
    (4 blocks) and 100 more tokens of the running one (5 blocks) are refused and the
    pool, the cached prefix and both sequences are as before; 45 more tokens (2 blocks)
    evict the cached prefix, tail first."""
    m = KVCacheManager(BlockPool(10, BS))
    p = fake_seq((1, 2), 40, trace_block=BS)  # 2 hashed blocks + 8 tokens: 3 blocks
    assert m.allocate_slots(p, 40, 0.0, m.get_computed_blocks(p))
    m.cache_blocks(p, None)
    assert m.free(p, 0.0).num_blocks == 3
    assert _pool_state(m) == (8, 2, 0, 0, 2)  # the prefix stays cached, evictable

    a = fake_seq((), 100)
    assert m.allocate_slots(a, 100, 1.0, m.get_computed_blocks(a))
    a.num_computed_tokens = 100  # 7 blocks: room for 112 tokens
    assert (a.kv_blocks.num_private, a.kv_blocks.num_slots) == (7, 112)
    before = _pool_state(m)
    assert before == (1, 2, 0, 0, 2)

    b = fake_seq((), 60)
    computed = m.get_computed_blocks(b)
    assert not m.can_allocate(b, 60, computed, 2.0)
    assert not m.allocate_slots(b, 60, 2.0, computed)
    assert _pool_state(m) == before
    assert (b.kv_blocks.num_private, b.kv_blocks.num_slots, b.kv_blocks.num_cached_hashes) == (
        0,
        0,
        0,
    )
    assert not m.allocate_slots(a, 100, 2.0)  # 200 tokens: 13 blocks, 5 more
    assert _pool_state(m) == before
    assert (a.kv_blocks.num_private, a.kv_blocks.num_slots) == (7, 112)
    assert m.pool.match((1, 2)) == 2

    assert m.allocate_slots(a, 12, 3.0)  # 112 tokens: still 7 blocks, nothing taken
    assert _pool_state(m) == before
    assert m.allocate_slots(a, 45, 3.0)  # 145 tokens: 10 blocks, 3 more: evicts 2 entries
    assert _pool_state(m) == (0, 0, 0, 2, 0)
    assert (a.kv_blocks.num_private, a.kv_blocks.num_slots) == (10, 160)
    m.check([a])


def test_free_returns_exactly_the_sequences_blocks() -> None:
    """S caches 3 prompt blocks (hashes 1, 2, 3) and holds 2 private ones; T shares
    hashes 1 and 2 and holds 2 private blocks.  Freeing S returns its 5 blocks: its 2
    private ones become free, hash 3 (only S's) evictable, hashes 1 and 2 stay T's."""
    m = KVCacheManager(BlockPool(20, BS))
    s = fake_seq((1, 2, 3), 60, trace_block=BS)  # 4 blocks: 3 hashed + 12 tokens
    assert m.allocate_slots(s, 60, 0.0, m.get_computed_blocks(s))
    m.cache_blocks(s, None)
    s.num_computed_tokens = 60
    assert m.allocate_slots(s, 10, 0.0)  # 70 tokens: a 5th block
    t = fake_seq((1, 2, 9), 60, trace_block=BS)
    computed = m.get_computed_blocks(t)
    assert (computed.num_hits, computed.num_hit_tokens) == (2, 32)
    assert m.allocate_slots(t, 60 - 32, 1.0, computed)  # 4 blocks: 2 hits + 2 private
    assert (t.kv_blocks.num_cached_hashes, t.kv_blocks.num_private) == (2, 2)
    assert (m.pool.free, m.pool.evictable_blocks, m.active_blocks) == (13, 0, 7)  # 5 + 4 - 2

    freed = m.free(s, 2.0)
    assert (freed.num_blocks, freed.num_to_host) == (5, 0)
    assert (m.pool.free, m.pool.evictable_blocks, m.active_blocks) == (15, 1, 4)
    b = s.kv_blocks
    assert (b.num_cached_hashes, b.num_private, b.num_slots, b.prompt_cached) == (0, 0, 0, False)
    assert m.pool.match((1, 2, 3)) == 3  # still cached
    m.check([t])

    freed = m.free(t, 3.0)
    assert (freed.num_blocks, freed.num_to_host) == (4, 0)
    assert (m.pool.free, m.pool.evictable_blocks, m.active_blocks) == (17, 3, 0)
    m.check([])


def test_num_decodes_with_slots_stops_at_a_full_block_or_a_prefill() -> None:
    """Decodes whose next token fits their blocks are counted in order; the run stops at
    a sequence whose blocks are full (it needs allocate_slots) or that still prefills."""
    m = KVCacheManager(BlockPool(100, BS))
    seqs = [fake_seq((), t) for t in (20, 32, 20, 40)]
    for s in seqs:
        assert m.allocate_slots(s, s.num_prefill_tokens, 0.0, m.get_computed_blocks(s))
        s.num_computed_tokens = s.num_prefill_tokens  # prefill done: 2, 2, 2, 3 blocks
    seqs[3].num_computed_tokens = 16  # still prefilling
    assert m.num_decodes_with_slots(seqs, 0, 4) == 1  # the second one's 2 blocks are full
    assert m.num_decodes_with_slots(seqs, 2, 9) == 1  # the fourth one prefills
    assert m.num_decodes_with_slots(seqs, 0, 0) == 0
    assert m.allocate_slots(seqs[1], 1, 1.0)  # a third block: room again
    assert m.num_decodes_with_slots(seqs, 0, 9) == 3
    assert m.num_decodes_with_slots(seqs, 0, 2) == 2  # the limit (token budget)


@settings(max_examples=600, deadline=None)
@given(prompts=_prompts(), data=st.data())
def test_granting_decode_blocks_at_once_is_allocating_them_one_by_one(
    prompts: list[tuple[int, ...]], data: st.DataObject
) -> None:
    """``grant_blocks(stepwise=True)`` gives decodes whose blocks are full their next
    block (the engine's decode clock), in one allocation unless pins must be released.
    Where ``allocate_slots(seq, 1)`` one sequence after the other would give every one
    its block, the pool ends exactly as after those (free, evictable and pinned blocks,
    evictions, which entries stay, every match); where one would fail, it gives none."""
    m = KVCacheManager(BlockPool(data.draw(st.integers(8, 48)), BS))
    decoders: list[FakeSeq] = []
    now = 0.0
    for p in prompts:
        s = fake_seq(p, len(p) * TRACE_BLOCK + data.draw(st.integers(0, 2 * BS)))
        c = m.get_computed_blocks(s)
        if not m.allocate_slots(s, s.num_prefill_tokens - c.num_computed_tokens, now, c):
            continue
        m.cache_blocks(s, None)
        if data.draw(st.booleans()):  # a finished call: cached, maybe pinned
            pin = data.draw(st.sampled_from([0.0, 1.5, 6.0]))
            m.free(s, now, lambda pin=pin: RetentionDecision(pin_s=pin))  # type: ignore[misc]
        else:  # a decoding call whose blocks are full: its next token needs a block
            s.num_computed_tokens = s.kv_blocks.num_slots
            decoders.append(s)
        now += 1.0
    t = now + data.draw(st.sampled_from([0.0, 2.0, 10.0]))  # some pins expired by then
    (ma, da), (mb, db) = copy.deepcopy((m, decoders)), copy.deepcopy((m, decoders))
    one_by_one = all(ma.allocate_slots(s, 1, t) for s in da)
    at_once = mb.grant_blocks(((db, 1),), t, stepwise=True)
    assert at_once == one_by_one
    if one_by_one:
        assert _pool_state(ma) == _pool_state(mb)
        assert ma.pool.hashes() == mb.pool.hashes()
        assert [ma.pool.match(p) for p in prompts] == [mb.pool.match(p) for p in prompts]
        assert [(s.kv_blocks.num_private, s.kv_blocks.num_slots) for s in da] == [
            (s.kv_blocks.num_private, s.kv_blocks.num_slots) for s in db
        ]
        ma.check(da)
        mb.check(db)
    else:
        assert [s.kv_blocks.num_slots for s in db] == [s.kv_blocks.num_slots for s in decoders]
        assert mb.pool.used == m.pool.used
