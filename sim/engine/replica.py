"""One replica's serving engine: iteration-level continuous batching on a SimPy clock.

Each iteration the scheduler (vLLM-like, see ``policies.base.BatchPolicy``) builds a
batch: every running sequence in its decode phase contributes one token, running
sequences still prefilling contribute a chunk, and waiting sequences are admitted in
the batch policy's order while the token budget (``max_num_batched_tokens``), the
sequence limit (``max_num_seqs``) and KV memory allow (chunked prefill).  Memory is
the KV-cache manager's (:class:`~sim.engine.kvcache.KVCacheManager`, as vLLM v1's
scheduler asks its ``KVCacheManager``): the engine asks it for a prompt's cached prefix
(``get_computed_blocks``), for room for the tokens it schedules (``allocate_slots``),
to cache computed prompt blocks (``cache_blocks``) and to free a sequence's blocks
(``free``); it never counts blocks itself.  When ``allocate_slots`` refuses a running
sequence, the lowest-priority running sequence is preempted and later recomputed; as
in vLLM v1, a step that preempted admits no waiting call.  The full prompt blocks a
step's prefill chunks compute become prefix-cache entries when the step is scheduled
(vLLM v1's ``allocate_slots`` caches them then), so a call admitted later in the same
step, or in any later one, hits them.  The cost model prices the iteration; at its end
tokens advance and finished calls are reported.

Exact fast-forward: when the batch is pure decode and nothing can join it (no waiting
call can be admitted), the composition cannot change before the earliest completion,
the next arrival, or the moment memory runs out.  The engine then schedules a *span*
of ``k`` identical-shape iterations as one SimPy event, with the iteration times from
the cost model (``decode_time`` per iteration for short spans, the vectorised
``decode_times`` for long ones).  An arrival during a span cuts it at the
end of the iteration in flight, so every timestamp equals the step-by-step result
(``fast_forward=False``) up to float rounding.  No SimPy event per token.

Decode clock: a running sequence past its prefill gains one token in every step (the
token budget is at least ``max_num_seqs``, and sequences still prefilling come after
the decoding ones in the running list, since chunks are given in that order), so its
token counts are stored relative to ``_tick``, the decode steps the replica has taken,
and a step or a span advances every decoding sequence at once by advancing the tick.
The decoding sequences sit in a dict by the tick they reach ``max_tokens`` and in
``block_size`` buckets by the residue of the ticks their blocks fill (a block more moves
that tick by ``block_size``, so a sequence never changes bucket); a step gives its
tick's bucket a block each in one allocation, exactly as one per sequence would be when
all of them can be had (else the step goes sequence by sequence, preempting as vLLM
does).  A step then costs the
sequences that finish or fill a block, not the batch size: its decodes are the first
``n`` of the running list, counted, not copied.  ``Seq.num_computed_tokens``
and ``num_output_tokens`` read the clock, so nothing outside the engine sees it.

Host-DRAM KV tier (``host_kv_blocks`` > 0): when the retention policy swaps a
finished call's prefix to host memory, the copy runs on the GPU's copy engine
alongside compute (as InferCept's pipelined swap-out), so it frees HBM at once and
delays nothing; its time is counted in ``swap_out_s``.  When an admitted call's
prefix continues into the host tier, those blocks are swapped back into fresh HBM
blocks and the copy time over the GPU's PCIe path to its CPU (``host_path``, at the
link's achieved rate; each GPU of the TP group copies its shard in parallel) is *added
to the admitting iteration* (vLLM swaps in before the forward pass of the step).
With ``cpu_offload`` the tier is vLLM's CPU KV offload: written through (every
registered prompt block is also stored there, on the copy engine) and loads copy.
A retention decision may also ask for a *predictive upload* (``upload_after_s``): the
swapped-out prefix is copied back on the copy engine before the session's next call
(Tokencake's time scheduler), landing as cached entries, so that call pays no load.

Reserved KV (``BatchPolicy.admission_reserve``, Tokencake's space scheduler): an
admission must leave the blocks the batch policy reserves available (free or
evictable) while other calls run.

Pins (TTL retention): a call that cannot be admitted because pinned blocks hold the
memory waits for the earliest pin to expire (or for the next arrival); a decode
span ends at the first iteration boundary after that expiry, so fast-forward stays
exact.  A running call that needs a block is never preempted for a pin: pins are
released early, earliest expiry first, to give it the block (Continuum's unpinning
under memory pressure).

Units: seconds, tokens, KV blocks.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from heapq import heappop, heappush
from itertools import accumulate
from operator import attrgetter
from typing import TYPE_CHECKING, cast

import numpy as np
import simpy

from sim.costmodel.base import BatchShape, IterationModel, kv_transfer_time
from sim.engine.kvcache import BlockPool, KVCacheManager, PrefixIndex, SeqBlocks
from sim.specs.topology import Path

if TYPE_CHECKING:
    from policies.base import BatchPolicy, RetentionDecision, RetentionPolicy
    from sim.workload.calls import Call

#: Decode spans of at most this many iterations are priced with scalar
#: ``decode_time`` calls; longer ones with the vectorised ``decode_times``.
SHORT_SPAN = 16

_ord_of = attrgetter("_ord")

#: The GPU-to-CPU path of a replica built without one (tests): free and instant.
NO_HOST_PATH = Path(float("inf"), 0.0, "local", 0)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Scheduler limits of a replica (vLLM names and meanings)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    fast_forward: bool = True
    check_invariants: bool = False  # assert KV/token accounting at every boundary (tests)


class Seq:
    """Compact per-call state inside a replica (vLLM's ``Request``): token counts,
    timestamps, and the KV blocks it holds (``kv_blocks``, owned by the replica's
    :class:`~sim.engine.kvcache.KVCacheManager`).  Units: tokens, seconds."""

    __slots__ = (
        "call",
        "arrival_s",
        "num_prompt_tokens",
        "max_tokens",
        "_nct",
        "num_prefill_tokens",
        "_nout",
        "num_cached_tokens",
        "num_external_computed_tokens",
        "kv_blocks",
        "first_token_s",
        "admit_s",
        "preemptions",
        "has_successor",
        "replica_id",
        "failovers",
        "_clk",
        "_ord",
    )

    def __init__(self, call: Call, arrival_s: float, block_size: int, has_successor: bool) -> None:
        self.call = call
        self.arrival_s = arrival_s
        self.num_prompt_tokens = call.input_tokens
        self.max_tokens = call.output_tokens  # output tokens to generate (from the trace)
        # the replica whose decode clock advances this sequence (None: the counts are
        # stored as they are); see :class:`Replica` ("Decode clock")
        self._clk: Replica | None = None
        self._ord = 0  # its place in the replica's running list (admission order)
        self._nct = 0  # tokens whose KV is computed (less the clock's tick when clocked)
        # tokens to have in KV before the next sample: the prompt, plus the output
        # tokens generated before a preemption or failure (recomputed)
        self.num_prefill_tokens = call.input_tokens
        self._nout = 0  # output tokens generated (less the clock's tick when clocked)
        self.num_cached_tokens = 0  # prompt tokens hit in the prefix cache at first admission
        # prompt tokens whose KV was loaded from a saved copy (faults, KV migration)
        self.num_external_computed_tokens = 0
        self.kv_blocks = SeqBlocks(call.prefix_hashes, call.block_size, block_size)
        self.first_token_s = math.nan
        self.admit_s = math.nan
        self.preemptions = 0
        self.has_successor = has_successor
        self.replica_id = -1
        self.failovers = 0  # times the call moved off a failed replica

    def reset_for_recompute(self) -> None:
        """Lost its KV (preempted or its replica failed): prefill the prompt and the
        output tokens generated so far again, from scratch."""
        self.num_computed_tokens = 0
        self.num_external_computed_tokens = 0
        self.num_prefill_tokens = self.num_prompt_tokens + self.num_output_tokens

    @property
    def num_computed_tokens(self) -> int:
        """Tokens whose KV is computed."""
        c = self._clk
        return self._nct if c is None else self._nct + c._tick

    @num_computed_tokens.setter
    def num_computed_tokens(self, value: int) -> None:
        assert self._clk is None, "a decoding sequence advances with its replica's clock"
        self._nct = value

    @property
    def num_output_tokens(self) -> int:
        """Output tokens generated."""
        c = self._clk
        return self._nout if c is None else self._nout + c._tick

    @num_output_tokens.setter
    def num_output_tokens(self, value: int) -> None:
        assert self._clk is None, "a decoding sequence advances with its replica's clock"
        self._nout = value

    # SeqView protocol (read by batch policies)
    @property
    def computed_tokens(self) -> int:
        return self.num_computed_tokens

    @property
    def generated_tokens(self) -> int:
        return self.num_output_tokens

    @property
    def remaining_tokens(self) -> int:
        """Prefill tokens still to compute plus output tokens still to generate."""
        return max(0, self.num_prefill_tokens - self.num_computed_tokens) + (
            self.max_tokens - self.num_output_tokens
        )


FinishHook = Callable[["Replica", Seq, float], None]


class Replica:
    """A model served on a TP group of GPUs.  Implements ``policies.base.ReplicaView``."""

    # long: one assignment per piece of engine state (KV tiers, policies, queues, stats)
    def __init__(
        self,
        env: simpy.Environment,
        replica_id: int,
        model: str,
        gpus: tuple[int, ...],
        node: int,
        cost: IterationModel,
        kv_capacity_blocks: int,
        config: EngineConfig,
        batch_policy: BatchPolicy,
        retention: RetentionPolicy,
        on_finish: FinishHook,
        host_kv_blocks: int = 0,
        host_path: Path = NO_HOST_PATH,
        kv_block_bytes: int = 0,
        cpu_offload: bool = False,
        prefix_index: PrefixIndex | None = None,
        touched: set[int] | None = None,
    ) -> None:
        """``host_kv_blocks``: blocks of the host-DRAM tier; ``host_path``: the GPU-to-CPU
        topology path (bottleneck bandwidth, latency, link type); ``kv_block_bytes``: bytes of one
        KV block on one GPU of the group (what each GPU copies); ``cpu_offload``: the
        host tier is vLLM's CPU KV offload (write-through: every computed prompt block
        is stored there too, and loads copy); ``prefix_index``: the cluster's index of
        prompt roots the replica's block pool reports to; ``touched``: a set the replica
        adds its id to whenever its routing-visible state (queue, load, KV) may change
        (the cluster hands it on to routers, ``ClusterView.watch_replicas``)."""
        self.env = env
        self.replica_id = replica_id
        self.model = model
        self.gpus = gpus
        self.node = node
        self.cost = cost
        self.cfg = config
        self.block_size = config.block_size
        self.kv_cache_manager = KVCacheManager(
            BlockPool(
                kv_capacity_blocks, config.block_size, host_kv_blocks, prefix_index, replica_id
            ),
            cpu_offload,
        )
        self.touched = touched
        # ReplicaView.cached_prefix_tokens(call): the cache's own method (routers call it
        # for every candidate replica of every call, so no wrapper in between)
        self.cached_prefix_tokens: Callable[[Call], int] = (
            self.kv_cache_manager.cached_prefix_tokens
        )
        self.host_path = host_path
        self.kv_block_bytes = kv_block_bytes
        self.policy = batch_policy
        self.retention = retention
        self.kv_cache_manager.pool.rank = (
            retention.eviction_rank if retention.ranks_eviction else None
        )
        self.on_finish = on_finish
        self.ready = False
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []
        self._outstanding_tokens = 0
        # sum over queued/running calls of max(0, num_prefill_tokens - num_computed_tokens)
        self._prefill_left = 0
        # the decode clock (module docstring): decode steps taken, the sequences that
        # advance with them and the sum of their stored KV token counts; the clocked
        # sequences by the tick they reach max_tokens (with a heap of those ticks,
        # pruned lazily), and by the residue mod block_size of the tick their blocks fill
        self._tick = 0
        self._n_clocked = 0
        self._ctx_base = 0
        self._fin: dict[int, list[Seq]] = {}
        self._fin_ticks: list[int] = []
        self._need: list[list[Seq]] = [[] for _ in range(config.block_size)]
        self._next_ord = 0
        self._stalled = False  # waiting for a pin to expire
        self._swap_in_pending_s = 0.0  # swap-in time charged to the next iteration
        self._prefetch_pending_s = 0.0  # wait of the next iteration for prefetch copies
        # in-flight work: either idle, one mixed iteration, or a decode span
        self._busy = False
        self._gen = 0  # generation id; a boundary event with an old id is stale
        self._span_start = 0.0
        self._span_cum: list[float] | None = None  # cumulative iteration times (s)
        self._span_k = 0
        # the step in flight: how many decodes (the first of ``running``) and its
        # prefill chunks ``(seq, tokens)``
        self._pending: tuple[int, list[tuple[Seq, int]]] | None = None
        self._uploads: list[tuple[int, ...]] = []  # uploads landed during in-flight work
        # statistics
        self.iterations = 0
        self.busy_s = 0.0
        self.preemptions = 0
        self.prompt_tokens = 0
        self.hit_tokens = 0
        self.swap_in_s = 0.0
        self.swap_out_s = 0.0
        self.prefetch_s = 0.0  # host-to-HBM copies of prefetched prompts (copy engine)
        self._inflight: dict[int, tuple[float, float]] = {}  # last hash -> (done, copy s)
        self.upload_s = 0.0  # predictive uploads (copy engine, overlapped with compute)
        #: samples of (time s, running, waiting, KV blocks used, KV blocks active), five
        #: doubles each, flat (40 bytes a sample instead of a tuple of five objects;
        #: ``fromlist`` is the fastest way in: half the time of ``extend`` on a tuple)
        self.timeline = array("d")

    # ---- ReplicaView ------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def outstanding_requests(self) -> int:
        return len(self.running) + len(self.waiting)

    @property
    def outstanding_tokens(self) -> int:
        return self._outstanding_tokens

    @property
    def kv_capacity_blocks(self) -> int:
        return self.kv_cache_manager.capacity

    @property
    def kv_used_blocks(self) -> int:
        return self.kv_cache_manager.used

    @property
    def active_blocks(self) -> int:
        return self.kv_cache_manager.active_blocks

    @property
    def pending_prefill_tokens(self) -> int:
        return self._prefill_left

    # ---- KVCostView (read by retention policies) ----------------------------------
    @property
    def host_capacity_blocks(self) -> int:
        return self.kv_cache_manager.host_capacity

    def recompute_time(self, tokens: int) -> float:
        """Seconds to prefill ``tokens`` tokens alone, in budget-sized chunks."""
        step = self.cfg.max_num_batched_tokens
        return sum(
            self.cost.iteration_time(BatchShape((min(step, tokens - c),), (c,)))
            for c in range(0, max(0, tokens), step)
        )

    def swap_time(self, tokens: int) -> float:
        """Seconds to copy ``tokens`` tokens of KV one way over the GPU-CPU path."""
        return self._swap_blocks_time(self.kv_cache_manager.num_blocks(tokens))

    def _swap_blocks_time(self, blocks: int) -> float:
        return kv_transfer_time(blocks * self.kv_block_bytes, self.host_path)

    # ---- admission of new work -----------------------------------------------------
    def fits(self, call: Call) -> bool:
        """Whether the call's whole context can ever fit in this replica's KV memory."""
        return self.kv_cache_manager.fits(call.input_tokens + call.output_tokens)

    def submit(self, seq: Seq) -> None:
        """Queue a call (arriving now)."""
        seq.replica_id = self.replica_id
        if self.touched is not None:
            self.touched.add(self.replica_id)
        self.policy.on_arrival(seq, self.waiting, self.env.now)
        self.waiting.append(seq)
        self._outstanding_tokens += seq.remaining_tokens
        self._prefill_left += max(0, seq.num_prefill_tokens - seq.num_computed_tokens)
        self.retention.on_call_arrived(seq.call, self.env.now)
        if self.retention.prefetches:
            self._prefetch(seq.call)
        if not self._busy or self._stalled:
            self._stalled = False
            self._busy = True
            self._gen += 1
            ev = self.env.timeout(0.0)
            ev.callbacks.append(self._make_cb(self._gen))
        elif self._span_k > 1:
            self._cut_span()

    def _prefetch(self, call: Call) -> None:
        """Load the host-resident prompts the retention policy names on ``call``'s
        arrival into HBM.  The copy runs on the copy engine alongside compute (KVFlow's
        fully overlapped prefetch), so it delays no iteration; its time is counted in
        ``prefetch_s``."""
        now = self.env.now
        for c in self.retention.prefetch(call, now):
            loaded = self.kv_cache_manager.prefetch(c, now)
            if loaded is None:
                continue
            last, blocks = loaded
            t = self._swap_blocks_time(blocks)
            self.prefetch_s += t
            # copies queue on the copy engine behind those still in flight
            done = max([now, *(d for d, _ in self._inflight.values())]) + t
            self._inflight[last] = (done, t)

    def _prefetch_wait(self, seq: Seq, hits: int, now: float) -> float:
        """Seconds ``seq``'s admitting step waits for the prefetches that its first
        ``hits`` HBM hashes include and that are still copying: the rest of each copy,
        at most the copy's own time (a prefetch still queued behind others is loaded
        at admission as a host hit is, no later); 0 when none is in flight."""
        inflight = self._inflight
        for h in [h for h, (done, _) in inflight.items() if done <= now]:
            del inflight[h]
        if not inflight or not hits:
            return 0.0
        waits = [
            min(inflight[h][0] - now, inflight[h][1])
            for h in seq.kv_blocks.block_hashes[:hits]
            if h in inflight
        ]
        return max(waits, default=0.0)

    def _make_cb(self, gen: int) -> Callable[[simpy.Event], None]:
        def cb(_: simpy.Event) -> None:
            if gen == self._gen:
                self._on_boundary()

        return cb

    def _cut_span(self) -> None:
        """An arrival during a decode span: end the span after the iteration in flight."""
        cum = self._span_cum
        assert cum is not None
        elapsed = self.env.now - self._span_start
        m = bisect_right(cum, elapsed)  # iterations finished by now
        if m + 1 >= self._span_k:
            return
        self._span_k = m + 1
        self._gen += 1
        ev = self.env.timeout(self._span_start + cum[m] - self.env.now)
        ev.callbacks.append(self._make_cb(self._gen))

    # ---- faults ------------------------------------------------------------------------
    def fail(self, now: float) -> list[tuple[Seq, int]]:
        """The replica's GPUs are lost (a fault): drop every call and all of its KV.

        The decode iterations of a span that finished by ``now`` are committed first,
        exactly as step by step; the iteration in flight is lost.  Returns each running,
        then waiting, sequence with the KV tokens it had computed, reset to recompute its
        prompt and the tokens it generated wherever it goes next.  The boundary event in
        flight goes stale (``_gen`` is bumped); the replica is no longer ready and holds
        no KV.
        """
        cum = self._span_cum
        if self._span_k and cum is not None:
            done = bisect_right(cum, now - self._span_start)
            self.busy_s += now - self._span_start - (cum[done - 1] if done else 0.0)
            if done:
                self._span_k = done
                self._finish_span(now)
        if self.touched is not None:
            self.touched.add(self.replica_id)
        for s in self.running:
            if s._clk is not None:
                self._clock_out(s)
        self._fin_ticks = []
        lost = [(s, s.num_computed_tokens) for s in self.running]
        lost += [(s, s.num_computed_tokens) for s in self.waiting]
        kvm = self.kv_cache_manager
        for seq, _ in lost:
            kvm.free(seq, now)  # the cache is reset below; this resets seq.kv_blocks
            seq.reset_for_recompute()
        self.running = []
        self.waiting = deque()
        self._outstanding_tokens = 0
        self._prefill_left = 0
        self._stalled = False
        self._swap_in_pending_s = self._prefetch_pending_s = 0.0
        self._uploads = []
        self._busy = False
        self._gen += 1
        self._span_k = 0
        self._span_cum = None
        self._pending = None
        self.ready = False
        kvm.reset()
        self.timeline.fromlist([now, 0, 0, 0, 0])
        return lost

    def set_cost(self, cost: IterationModel) -> None:
        """Re-price iterations (e.g. a link of the TP group changed bandwidth).

        The iteration in flight keeps its time; a decode span in flight ends after its
        current iteration so that later iterations use the new model (exact).
        """
        self.cost = cost
        if self._span_k > 1:
            self._cut_span()

    # ---- the iteration loop ------------------------------------------------------------
    def _on_boundary(self) -> None:
        now = self.env.now
        if self.touched is not None:
            self.touched.add(self.replica_id)
        if self._pending is not None:
            self._finish_iteration(now)
        elif self._span_k:
            self._finish_span(now)
        self._schedule(now)

    def check(self) -> None:
        """Assert the replica's accounting invariants (used when ``check_invariants``)."""
        self.kv_cache_manager.check(self.running)
        assert self._outstanding_tokens == sum(s.remaining_tokens for s in self.running) + sum(
            s.remaining_tokens for s in self.waiting
        ), "outstanding token accounting"
        assert self._prefill_left == sum(
            max(0, s.num_prefill_tokens - s.num_computed_tokens)
            for s in (*self.running, *self.waiting)
        ), "pending prefill accounting"
        clocked = [s for s in self.running if s._clk is self]
        assert clocked == [
            s for s in self.running if s.num_computed_tokens >= s.num_prefill_tokens
        ], "the decoding sequences are the clocked ones"
        assert clocked == self.running[: len(clocked)], (
            "a prefilling sequence before a decoding one"
        )
        assert len(clocked) == self._n_clocked and self._ctx_base == sum(s._nct for s in clocked)
        assert [s._ord for s in self.running] == sorted(s._ord for s in self.running)
        bs, tick = self.block_size, self._tick
        residue = {id(s): r for r, at in enumerate(self._need) for s in at}
        fin = {id(s): t for t, at in self._fin.items() for s in at}
        for s in clocked:  # its blocks fill within block_size ticks, at its residue
            assert tick <= s.kv_blocks.num_slots - s._nct < tick + bs
            assert residue.get(id(s)) == (s.kv_blocks.num_slots - s._nct) % bs
            assert fin.get(id(s)) == s.max_tokens - s._nout
        assert sum(map(len, self._need)) == sum(map(len, self._fin.values())) == len(clocked)
        assert min(self._fin, default=tick + 1) > tick
        for s in self.running:
            assert s.num_output_tokens <= s.max_tokens
            assert s.num_computed_tokens <= s.num_prefill_tokens + s.max_tokens

    def _schedule(self, now: float) -> None:
        self._stalled = False
        if self._uploads:
            for hashes in self._uploads:
                self.kv_cache_manager.upload(hashes, now)
            self._uploads = []
        if self.cfg.check_invariants:
            self.check()
        running = self.running
        kvm = self.kv_cache_manager
        self.timeline.fromlist([now, len(running), len(self.waiting), kvm.used, kvm.active_blocks])
        if not running and not self.waiting:
            self._busy = False
            return
        if self.cfg.fast_forward and running and self._can_span(now):
            k = kvm.num_decode_steps(self._n_clocked, self._fin_top() - self._tick, self._slacks)
            if k >= 2:
                self._start_span(now, k)
                return
        ndec, prefills, preempted = self._build_batch(now)
        assert ndec == self._n_clocked, "a decoding sequence left out of a step"
        if not ndec and not prefills and preempted:
            # everything running was preempted and nothing was admitted in this step:
            # the next step (at once) admits from the queue
            self._gen += 1
            ev = self.env.timeout(0.0)
            ev.callbacks.append(self._make_cb(self._gen))
            return
        if not ndec and not prefills:
            # Nothing can run: only pinned blocks can hold the memory a call that fits
            # needs (a call that fits can always run once the running set drains).
            expiry = kvm.next_pin_expiry()
            if expiry is None:
                raise RuntimeError(f"replica {self.replica_id}: scheduler stalled")
            self._stalled = True
            self._gen += 1
            ev = self.env.timeout(max(0.0, expiry - now))
            ev.callbacks.append(self._make_cb(self._gen))
            return
        shape = BatchShape(
            prefill_tokens=tuple(c for _, c in prefills),
            prefill_context=tuple(s.num_computed_tokens for s, _ in prefills),
            num_decode=ndec,
            decode_context_sum=self._ctx_base + (self._tick + 1) * ndec,
        )
        dt = self.cost.iteration_time(shape)
        if self._swap_in_pending_s:
            dt += self._swap_in_pending_s
            self._swap_in_pending_s = 0.0
        if self._prefetch_pending_s:
            dt += self._prefetch_pending_s
            self._prefetch_pending_s = 0.0
        self._pending = (ndec, prefills)
        self._span_k = 0
        self.busy_s += dt
        self.iterations += 1
        self._gen += 1
        ev = self.env.timeout(dt)
        ev.callbacks.append(self._make_cb(self._gen))

    # ---- the decode clock ---------------------------------------------------------------
    def _clock_in(self, seq: Seq) -> None:
        """``seq`` (running) completed its prefill: from now on it advances with the tick."""
        t = self._tick
        seq._nct -= t
        seq._nout -= t
        seq._clk = self
        self._n_clocked += 1
        self._ctx_base += seq._nct
        self._need[(seq.kv_blocks.num_slots - seq._nct) % self.block_size].append(seq)
        fin = seq.max_tokens - seq._nout
        at = self._fin.get(fin)
        if at is None:
            self._fin[fin] = [seq]
            heappush(self._fin_ticks, fin)
        else:
            at.append(seq)

    def _clock_out(self, seq: Seq) -> None:
        """``seq`` leaves the running set: its counts are stored as they are again."""
        self._need[(seq.kv_blocks.num_slots - seq._nct) % self.block_size].remove(seq)
        fin = seq.max_tokens - seq._nout
        at = self._fin.get(fin)  # None: it finishes now (_finished_decodes took them)
        if at is not None and len(at) == 1:
            del self._fin[fin]  # (its tick in _fin_ticks goes stale)
        elif at is not None:
            at.remove(seq)
        self._n_clocked -= 1
        self._ctx_base -= seq._nct
        t = self._tick
        seq._nct += t
        seq._nout += t
        seq._clk = None

    def _leave_running(self, seq: Seq) -> None:
        """Take ``seq`` out of the running list, found by bisection on admission order
        (``list.remove`` would compare it with every sequence before it)."""
        running = self.running
        i = bisect_left(running, seq._ord, key=_ord_of)
        assert running[i] is seq
        del running[i]

    def _fin_top(self) -> int:
        """The tick at which the first clocked sequence reaches ``max_tokens`` (some is)."""
        ticks, fin = self._fin_ticks, self._fin
        while ticks[0] not in fin:
            heappop(ticks)  # stale: every sequence finishing then left early
        return ticks[0]

    def _finished_decodes(self) -> list[Seq]:
        """The clocked sequences that reach ``max_tokens`` at this tick (none can before:
        a span ends by the first), in running order."""
        done = self._fin.pop(self._tick, None)
        if done is None:
            return []
        if len(done) > 1:
            done.sort(key=_ord_of)
        return done

    def _slacks(self) -> list[int]:
        """Each clocked sequence's free slots (tokens its blocks take before the next
        block), ascending: the sequences of ``_need[(tick + d) % block_size]`` have ``d``."""
        need, tick, bs = self._need, self._tick, self.block_size
        out: list[int] = []
        for d in range(bs):
            n = len(need[(tick + d) % bs])
            if n:
                out += [d] * n
        return out

    def _decode_blocks(self, now: float) -> bool:
        """Give every clocked sequence whose blocks are full (those of the tick's residue:
        the blocks of each fill every ``block_size`` ticks) its next block, in one
        allocation: exactly what ``allocate_slots(seq, 1)`` one sequence at a time does
        when every one succeeds.  False, giving none, when the pool cannot give them all
        (the step then goes sequence by sequence, preempting as it must)."""
        full = self._need[self._tick % self.block_size]
        return not full or self.kv_cache_manager.grant_blocks(((full, 1),), now, stepwise=True)

    # ---- batch building (one iteration) ------------------------------------------
    def _preempt(self, victim: Seq, now: float) -> None:
        """Preempt ``victim`` by recompute: free its blocks, requeue it at the head."""
        if victim._clk is not None:
            self._clock_out(victim)
        self._leave_running(victim)
        self._outstanding_tokens -= victim.remaining_tokens
        self._prefill_left -= max(0, victim.num_prefill_tokens - victim.num_computed_tokens)
        self.kv_cache_manager.free(victim, now)
        victim.reset_for_recompute()
        victim.preemptions += 1
        self.preemptions += 1
        self._outstanding_tokens += victim.remaining_tokens
        self._prefill_left += victim.num_prefill_tokens
        self.waiting.appendleft(victim)

    @staticmethod
    def _unschedule_prefill(seq: Seq, prefills: list[tuple[Seq, int]]) -> int:
        """Remove ``seq``'s chunk from the batch being built; returns its tokens."""
        for j, (s, chunk) in enumerate(prefills):
            if s is seq:
                del prefills[j]
                return chunk
        return 0

    def _build_batch(self, now: float) -> tuple[int, list[tuple[Seq, int]], bool]:
        """The step's number of decodes (the first of ``running``: the clocked ones), its
        prefill chunks ``(seq, tokens)``, and whether building it preempted a sequence."""
        budget = self._token_budget(now)
        prefills: list[tuple[Seq, int]] = []
        if self.policy.preemptive and self.waiting and self.running:
            self._displace(now, budget)
        # 1. running sequences, in admission order; preempt from the back when out of memory
        budget, preempted, ndec = self._schedule_running(now, budget, prefills)
        # the full prompt blocks this step computes become prefix-cache entries now, as
        # vLLM v1 caches them when it schedules the chunk (each layer writes the step's
        # KV before attending, so a call admitted below may already hit them); only
        # after the loop above, which may still take a scheduled sequence out again
        cache_blocks = self.kv_cache_manager.cache_blocks
        for seq, chunk in prefills:
            stored = cache_blocks(seq, seq.num_computed_tokens + chunk)
            if stored:
                self._stored_to_host(stored)
        # 2. admit waiting sequences in policy order; none in a step that preempted
        # (vLLM v1's scheduler schedules waiting requests only when it preempted none)
        if (
            not preempted
            and self.waiting
            and budget > 0
            and len(self.running) < self.cfg.max_num_seqs
        ):
            self._schedule_waiting(now, budget, prefills)
        return ndec, prefills, preempted

    def _displace(self, now: float, budget: int) -> None:
        """Priority preemption for a ``preemptive`` batch policy (Autellix): while the
        policy's first waiting call cannot be admitted (``max_num_seqs`` reached, or its
        first chunk does not fit in KV memory) and it ``outranks`` the policy's
        preemption victim, preempt that victim (by recompute, as ``_preempt``).  Each
        pass removes one running call, so the loop ends."""
        policy = self.policy
        head = cast("Seq", policy.order(list(self.waiting), now)[0])
        kvm = self.kv_cache_manager
        while self.running:
            if len(self.running) < self.cfg.max_num_seqs:
                computed = kvm.get_computed_blocks(head)
                chunk = min(head.num_prefill_tokens - computed.num_computed_tokens, budget)
                if kvm.can_allocate(head, chunk, computed, now):
                    return
            victim = self.running[policy.preempt_victim(self.running, now)]
            if not policy.outranks(head, victim, now):
                return
            self._preempt(victim, now)

    def _schedule_running(
        self, now: float, budget: int, prefills: list[tuple[Seq, int]]
    ) -> tuple[int, bool, int]:
        """Schedule the running sequences (a token each for decodes, a chunk for
        prefills, into ``prefills``), preempting the batch policy's victims while the KV
        cache cannot give a sequence its slots.  Returns the budget left, whether it
        preempted, and the number of decodes.

        The decodes are counted, not listed: the decoding sequences are the clocked
        ones, which come first in ``running``, so the step's decodes are always its
        first ``ndec`` (copying them would touch every running sequence each step)."""
        running = self.running
        i = 0
        ndec = 0
        n = self._n_clocked
        if n and self._decode_blocks(now):
            # the decoding (clocked) sequences come first, each with a slot for its
            # token now: all of them in one go; then those still prefilling, in order
            ndec = n
            budget -= n
            i = n
        kvm = self.kv_cache_manager
        allocate_slots = kvm.allocate_slots
        ready = kvm.num_decodes_with_slots
        preempted = False
        while i < len(running) and budget > 0:
            # a run of decodes whose next token has a slot already: nothing to allocate
            n = ready(running, i, budget)
            if n:
                ndec += n
                budget -= n
                i += n
                continue
            seq = running[i]
            kvt = seq.num_computed_tokens
            decode = kvt >= seq.num_prefill_tokens
            chunk = 1 if decode else min(seq.num_prefill_tokens - kvt, budget)
            while not allocate_slots(seq, chunk, now):
                victim_i = self.policy.preempt_victim(running, now)
                victim = running[victim_i]
                if victim_i < i:  # already in this batch: take it out again
                    i -= 1
                    if victim._clk is not None:  # a decode (clocked until preempted)
                        ndec -= 1
                        budget += 1
                    else:
                        budget += self._unschedule_prefill(victim, prefills)
                self._preempt(victim, now)
                preempted = True
                if victim is seq:
                    break
            else:
                if decode:
                    ndec += 1
                else:
                    prefills.append((seq, chunk))
                budget -= chunk
                i += 1
            # (seq itself preempted: the loop index now points at its successor)
        return budget, preempted, ndec

    def _schedule_waiting(self, now: float, budget: int, prefills: list[tuple[Seq, int]]) -> None:
        """Admit waiting sequences in the batch policy's order while the token budget,
        ``max_num_seqs`` and the KV cache allow; the first that cannot be admitted stops
        the rest (head-of-line blocking, as vLLM)."""
        # batch policies return the engine's own Seq objects, reordered
        order = cast(
            "Iterable[Seq]",
            self.policy.order(list(self.waiting), now) if self.policy.reorders else self.waiting,
        )
        admitted: list[Seq] = []
        for seq in order:
            if budget <= 0 or len(self.running) >= self.cfg.max_num_seqs:
                break
            chunk = self._admit(seq, budget, now)
            if not chunk:
                break
            admitted.append(seq)
            prefills.append((seq, chunk))
            budget -= chunk
        if admitted:
            if self.policy.reorders:
                ids = {id(s) for s in admitted}
                self.waiting = deque(s for s in self.waiting if id(s) not in ids)
            else:
                for _ in admitted:
                    self.waiting.popleft()

    def _admit(self, seq: Seq, budget: int, now: float) -> int:
        """Admit ``seq`` (still in the queue) with ``budget`` tokens left: its cached
        prefix is referenced, its first chunk scheduled and cached.  Returns the chunk
        (tokens), or 0 when the KV cache cannot take it now."""
        kvm = self.kv_cache_manager
        computed = kvm.get_computed_blocks(seq)
        start = computed.num_computed_tokens
        chunk = min(seq.num_prefill_tokens - start, budget)
        if not kvm.allocate_slots(seq, chunk, now, computed, self._reserve(seq, now)):
            return 0
        if computed.num_host_blocks:
            t = self._swap_blocks_time(computed.num_host_blocks)
            self._swap_in_pending_s += t
            self.swap_in_s += t
        if self._inflight:  # a prefetch of this prompt still copying: the step waits
            # for the last such copy (one copy engine: the waits overlap, not add up)
            w = self._prefetch_wait(seq, computed.num_hits, now)
            self._prefetch_pending_s = max(self._prefetch_pending_s, w)
        seq.num_computed_tokens = start
        self._outstanding_tokens -= start
        self._prefill_left -= start
        if math.isnan(seq.admit_s):  # its first admission
            seq.num_cached_tokens = computed.num_hit_tokens
            seq.admit_s = now
            self.prompt_tokens += seq.num_prompt_tokens
            self.hit_tokens += computed.num_hit_tokens
        seq._ord = self._next_ord
        self._next_ord += 1
        self.running.append(seq)
        stored = kvm.cache_blocks(seq, start + chunk)
        if stored:
            self._stored_to_host(stored)
        return chunk

    def _finish_iteration(self, now: float) -> None:
        assert self._pending is not None
        ndec, prefills = self._pending
        self._pending = None
        done: list[Seq] = []
        if ndec:  # every clocked sequence decoded a token: the tick advances
            self._tick += 1
            self._outstanding_tokens -= ndec
            done = self._finished_decodes()
        for seq, chunk in prefills:  # (prefilling: not clocked)
            seq._nct += chunk
            self._outstanding_tokens -= chunk
            self._prefill_left -= chunk
            if seq._nct >= seq.num_prefill_tokens:
                self._complete_prefill(seq, now)
                if seq._nout >= seq.max_tokens:
                    done.append(seq)
                else:
                    self._clock_in(seq)
        for seq in done:
            self._finish(seq, now)

    def _stored_to_host(self, blocks: int) -> None:
        """Prompt blocks the KV cache also wrote to the CPU offload tier when caching
        them: a copy on the copy engine (counted in ``swap_out_s``, delaying nothing)."""
        self.swap_out_s += self._swap_blocks_time(blocks)

    def _complete_prefill(self, seq: Seq, now: float) -> None:
        # the prompt's full blocks are shared prefix entries (all computed now)
        stored = self.kv_cache_manager.cache_blocks(seq, None)
        if stored:
            self._stored_to_host(stored)
        seq._nout += 1  # (not clocked yet)
        self._outstanding_tokens -= 1
        if seq._nout == 1:
            seq.first_token_s = now
        self.policy.on_tokens(seq.call, seq.num_prefill_tokens, now)

    def _finish(self, seq: Seq, now: float) -> None:
        if seq._clk is not None:
            self._clock_out(seq)
        self._leave_running(seq)
        decision: list[RetentionDecision] = []

        def decide() -> RetentionDecision:
            d = self.retention.on_call_finished(seq.call, seq.has_successor, now, self)
            decision.append(d)
            return d

        hashes = seq.kv_blocks.block_hashes
        freed = self.kv_cache_manager.free(seq, now, decide)
        if freed.num_to_host:
            t = self._swap_blocks_time(freed.num_to_host)
            self.swap_out_s += t
            after = decision[0].upload_after_s
            if after is not None:
                self._schedule_upload(hashes, max(0.0, after), t)
        if self.retention.prefetches:  # memory freed: the session's next steps may load
            self._prefetch(seq.call)
        self.policy.on_tokens(seq.call, max(0, seq.max_tokens - 1), now)
        self.on_finish(self, seq, now)

    def _schedule_upload(self, hashes: tuple[int, ...], after_s: float, copy_s: float) -> None:
        """A predictive upload (``RetentionDecision.upload_after_s``): the copy of a
        swapped-out prefix back to HBM starts ``after_s`` from now on the copy engine
        (overlapped with compute: it delays no iteration) and lands ``copy_s`` later.
        Landing while an iteration or span is in flight, it takes its blocks at the next
        boundary (the blocks that work planned stay its own); on an idle or stalled
        replica at once (a decode span is cut after the iteration in flight, as for an
        arrival, so fast-forward stays exact).  A call that needed the prefix earlier
        loaded it itself (the upload then finds nothing left in the host tier)."""
        self.upload_s += copy_s

        def land(_: simpy.Event) -> None:
            if self._busy and not self._stalled:
                self._uploads.append(hashes)
                if self._span_k > 1:  # as step by step: at the end of this iteration
                    self._cut_span()
            else:
                self.kv_cache_manager.upload(hashes, self.env.now)

        self.env.timeout(after_s + copy_s).callbacks.append(land)

    # ---- decode spans (exact fast-forward) ---------------------------------------
    def _token_budget(self, now: float) -> int:
        """The step's token budget: the batch policy's, within [max_num_seqs,
        max_num_batched_tokens] (default: max_num_batched_tokens)."""
        cap = self.cfg.max_num_batched_tokens
        b = self.policy.token_budget(cap, now)
        return cap if b >= cap else max(self.cfg.max_num_seqs, b)

    def _can_span(self, now: float) -> bool:
        """Pure decode, and no waiting call could join the batch before it changes."""
        if len(self.running) > self._n_clocked:  # some still prefill (not clocked)
            return False
        if not self.waiting:
            return True
        if self.policy.preemptive:  # a waiting call may displace a running one any step
            return False
        if len(self.running) >= self.cfg.max_num_seqs:
            return True
        step_budget = self._token_budget(now)
        if self.policy.reorders or step_budget <= len(self.running):
            return False
        # the head of the queue cannot be admitted now, and free memory only shrinks
        # during a span, so it cannot be admitted before the span ends either (the
        # check leaves the LRU order as it was: no attempts are made during a span)
        budget = step_budget - len(self.running)
        head = self.waiting[0]
        kvm = self.kv_cache_manager
        computed = kvm.get_computed_blocks(head)
        chunk = min(head.num_prefill_tokens - computed.num_computed_tokens, budget)
        return not kvm.can_allocate(head, chunk, computed, now, self._reserve(head, now))

    def _reserve(self, seq: Seq, now: float) -> int:
        """Blocks the batch policy keeps available beyond ``seq``'s admission
        (``BatchPolicy.admission_reserve``; 0 unless it ``reserves``, and 0 into an
        empty replica, so a reserve never stalls the engine)."""
        if not self.policy.reserves or not self.running:
            return 0
        kvm = self.kv_cache_manager
        tokens = self.policy.admission_reserve(
            seq, self.running, kvm.capacity * self.block_size, now
        )
        return kvm.num_blocks(tokens) if tokens > 0 else 0

    def _start_span(self, now: float, k: int) -> None:
        n = len(self.running)
        ctx0 = self._ctx_base + n * self._tick  # (pure decode: every one is clocked)
        if k <= SHORT_SPAN:
            # most spans are cut by an arrival after a few iterations: scalar times
            # beat the fixed cost of numpy calls (accumulate sums in order, as cumsum)
            dt = self.cost.decode_time
            cum = list(accumulate(dt(n, ctx0 + n * i) for i in range(1, k + 1)))
        else:
            sums: np.ndarray = ctx0 + n * np.arange(1, k + 1, dtype=np.int64)
            cum = np.cumsum(self.cost.decode_times(n, sums)).tolist()
        if self.waiting and self.kv_cache_manager.pinned_blocks:
            # an expiring pin frees memory a waiting call may need: end the span at the
            # first iteration boundary at or after the expiry (the step-by-step engine
            # would admit there)
            expiry = self.kv_cache_manager.next_pin_expiry()
            if expiry is not None and now + cum[-1] > expiry:
                k = bisect_left(cum, expiry - now) + 1
                cum = cum[:k]
        self._span_start = now
        self._span_cum = cum
        self._span_k = k
        self._pending = None
        self._gen += 1
        ev = self.env.timeout(cum[-1])
        ev.callbacks.append(self._make_cb(self._gen))

    def _finish_span(self, now: float) -> None:
        m = self._span_k
        cum = self._span_cum
        assert cum is not None
        self._span_k = 0
        self._span_cum = None
        self.busy_s += cum[m - 1]
        self.iterations += m
        self._tick += m  # every running sequence (all clocked) decoded m tokens
        done = self._finished_decodes()
        # the blocks the span's tokens filled, in one allocation: a sequence whose
        # blocks filled at the span's d-th tick took ceil((m - d) / block_size) more
        t0, bs = self._tick - m, self.block_size
        need = self._need
        grants = [(need[(t0 + d) % bs], -(-(m - d) // bs)) for d in range(min(m, bs))]
        ok = self.kv_cache_manager.grant_blocks(grants, now)
        assert ok, "span planned beyond free blocks"
        self._outstanding_tokens -= m * len(self.running)
        for seq in done:
            self._finish(seq, now)
