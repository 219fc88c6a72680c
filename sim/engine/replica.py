"""One replica's serving engine: iteration-level continuous batching on a SimPy clock.

Each iteration the scheduler (vLLM-like, see ``policies.base.BatchPolicy``) builds a
batch: every running sequence in its decode phase contributes one token, running
sequences still prefilling contribute a chunk, and waiting sequences are admitted in
the batch policy's order while the token budget (``max_num_batched_tokens``), the
sequence limit (``max_num_seqs``) and KV memory allow (chunked prefill).  When a
decode needs a new KV block and none is free, the lowest-priority running sequence is
preempted and later recomputed; as in vLLM v1, a step that preempted admits no waiting
call.  The full prompt blocks a step's prefill chunks compute become prefix-cache
entries when the step is scheduled (vLLM v1's ``allocate_slots`` caches them then), so
a call admitted later in the same step, or in any later one, hits them.  The cost
model prices the iteration; at its end tokens advance and finished calls are reported.

Exact fast-forward: when the batch is pure decode and nothing can join it (no waiting
call can be admitted), the composition cannot change before the earliest completion,
the next arrival, or the moment memory runs out.  The engine then schedules a *span*
of ``k`` identical-shape iterations as one SimPy event, with the iteration times from
the cost model (``decode_time`` per iteration for short spans, the vectorised
``decode_times`` for long ones).  An arrival during a span cuts it at the
end of the iteration in flight, so every timestamp equals the step-by-step result
(``fast_forward=False``) up to float rounding.  No SimPy event per token.

Host-DRAM KV tier (``host_kv_blocks`` > 0): when the retention policy swaps a
finished call's prefix to host memory, the copy runs on the GPU's copy engine
alongside compute (as InferCept's pipelined swap-out), so it frees HBM at once and
delays nothing; its time is counted in ``swap_out_s``.  When an admitted call's
prefix continues into the host tier, those blocks are swapped back into fresh HBM
blocks and the copy time over the GPU's PCIe path to its CPU (``host_bandwidth``,
``host_latency``; each GPU of the TP group copies its shard in parallel) is *added
to the admitting iteration* (vLLM swaps in before the forward pass of the step).
With ``cpu_offload`` the tier is vLLM's CPU KV offload: written through (every
registered prompt block is also stored there, on the copy engine) and loads copy.

Pins (TTL retention): a call that cannot be admitted because pinned blocks hold the
memory waits for the earliest pin to expire (or for the next arrival); a decode
span ends at the first iteration boundary after that expiry, so fast-forward stays
exact.

Units: seconds, tokens, KV blocks.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, cast

import numpy as np
import simpy

from sim.costmodel.base import BatchShape, IterationModel, kv_transfer_time
from sim.engine.kvcache import KVCache, effective_hashes

if TYPE_CHECKING:
    from policies.base import BatchPolicy, RetentionPolicy
    from sim.workload.calls import Call

#: Decode spans of at most this many iterations are priced with scalar
#: ``decode_time`` calls; longer ones with the vectorised ``decode_times``.
SHORT_SPAN = 16


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Scheduler limits of a replica (vLLM names and meanings)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    fast_forward: bool = True
    check_invariants: bool = False  # assert KV/token accounting at every boundary (tests)


class Seq:
    """Compact per-call state inside a replica (tokens, blocks, timestamps)."""

    __slots__ = (
        "call",
        "arrival_s",
        "prompt",
        "out",
        "hashes",
        "entry_blocks",
        "hash_tokens",
        "nref",
        "registered",
        "kv",
        "target",
        "gen",
        "private",
        "first_token_s",
        "admit_s",
        "cached_tokens",
        "preemptions",
        "hit_counted",
        "has_successor",
        "replica_id",
        "restored",
        "failovers",
    )

    def __init__(self, call: Call, arrival_s: float, block_size: int, has_successor: bool) -> None:
        self.call = call
        self.arrival_s = arrival_s
        self.prompt = call.input_tokens
        self.out = call.output_tokens
        self.hashes, self.hash_tokens, self.entry_blocks = effective_hashes(
            call.prefix_hashes, call.block_size, block_size
        )
        self.nref = 0  # leading hashes referenced (cache hits + registered)
        self.registered = False
        self.kv = 0  # tokens whose KV is computed
        self.target = call.input_tokens  # tokens to have in KV before the next sample
        self.gen = 0  # output tokens generated
        self.private = 0  # blocks held outside prefix entries
        self.first_token_s = math.nan
        self.admit_s = math.nan
        self.cached_tokens = 0
        self.preemptions = 0
        self.hit_counted = False
        self.has_successor = has_successor
        self.replica_id = -1
        self.restored = 0  # prompt tokens whose KV was loaded from a saved copy (faults)
        self.failovers = 0  # times the call moved off a failed replica

    # SeqView protocol (read by batch policies)
    @property
    def computed_tokens(self) -> int:
        return self.kv

    @property
    def generated_tokens(self) -> int:
        return self.gen

    @property
    def remaining_tokens(self) -> int:
        """Prefill tokens still to compute plus output tokens still to generate."""
        return max(0, self.target - self.kv) + (self.out - self.gen)


FinishHook = Callable[["Replica", Seq, float], None]


class Replica:
    """A model served on a TP group of GPUs.  Implements ``policies.base.ReplicaView``."""

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
        host_bandwidth: float = float("inf"),
        host_latency: float = 0.0,
        kv_block_bytes: int = 0,
        cpu_offload: bool = False,
    ) -> None:
        """``host_kv_blocks``: blocks of the host-DRAM tier; ``host_bandwidth`` (bytes/s)
        and ``host_latency`` (s): the GPU-to-CPU path; ``kv_block_bytes``: bytes of one
        KV block on one GPU of the group (what each GPU copies); ``cpu_offload``: the
        host tier is vLLM's CPU KV offload (write-through: every computed prompt block
        is stored there too, and loads copy)."""
        self.env = env
        self.replica_id = replica_id
        self.model = model
        self.gpus = gpus
        self.node = node
        self.cost = cost
        self.cfg = config
        self.block_size = config.block_size
        self.kv = KVCache(kv_capacity_blocks, config.block_size, host_kv_blocks)
        self.host_bandwidth = host_bandwidth
        self.host_latency = host_latency
        self.kv_block_bytes = kv_block_bytes
        self.cpu_offload = cpu_offload and host_kv_blocks > 0
        self.policy = batch_policy
        self.retention = retention
        self.on_finish = on_finish
        self.ready = False
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []
        self._outstanding_tokens = 0
        self._prefill_left = 0  # sum over queued/running calls of max(0, target - kv)
        self._n_prefilling = 0  # running sequences whose prefill is not complete
        self._stalled = False  # waiting for a pin to expire
        self._swap_in_pending_s = 0.0  # swap-in time charged to the next iteration
        # in-flight work: either idle, one mixed iteration, or a decode span
        self._busy = False
        self._gen = 0  # generation id; a boundary event with an old id is stale
        self._span_start = 0.0
        self._span_cum: list[float] | None = None  # cumulative iteration times (s)
        self._span_k = 0
        self._pending: tuple[list[Seq], list[tuple[Seq, int]]] | None = None
        # statistics
        self.iterations = 0
        self.busy_s = 0.0
        self.preemptions = 0
        self.prompt_tokens = 0
        self.hit_tokens = 0
        self.swap_in_s = 0.0
        self.swap_out_s = 0.0
        self.timeline: list[tuple[float, int, int, int, int]] = []

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
        return self.kv.capacity

    @property
    def kv_used_blocks(self) -> int:
        return self.kv.used

    @property
    def active_blocks(self) -> int:
        return self.kv.active_blocks

    @property
    def pending_prefill_tokens(self) -> int:
        return self._prefill_left

    # ---- KVCostView (read by retention policies) ----------------------------------
    @property
    def host_capacity_blocks(self) -> int:
        return self.kv.host_capacity

    def recompute_time(self, tokens: int) -> float:
        """Seconds to prefill ``tokens`` tokens alone, in budget-sized chunks."""
        step = self.cfg.max_num_batched_tokens
        return sum(
            self.cost.iteration_time(BatchShape((min(step, tokens - c),), (c,)))
            for c in range(0, max(0, tokens), step)
        )

    def swap_time(self, tokens: int) -> float:
        """Seconds to copy ``tokens`` tokens of KV one way over the GPU-CPU path."""
        return self._swap_blocks_time(-(-tokens // self.block_size))

    def _swap_blocks_time(self, blocks: int) -> float:
        return kv_transfer_time(
            blocks * self.kv_block_bytes, self.host_bandwidth, self.host_latency
        )

    def cached_prefix_tokens(self, call: Call) -> int:
        if not call.prefix_hashes:
            return 0
        hashes, tokens, _ = effective_hashes(call.prefix_hashes, call.block_size, self.block_size)
        return min(self.kv.match(hashes) * tokens, call.input_tokens)

    # ---- admission of new work -----------------------------------------------------
    def fits(self, call: Call) -> bool:
        """Whether the call's whole context can ever fit in this replica's KV memory."""
        total = call.input_tokens + call.output_tokens
        return -(-total // self.block_size) <= self.kv.capacity

    def submit(self, seq: Seq) -> None:
        """Queue a call (arriving now)."""
        seq.replica_id = self.replica_id
        self.policy.on_arrival(seq, self.waiting, self.env.now)
        self.waiting.append(seq)
        self._outstanding_tokens += seq.remaining_tokens
        self._prefill_left += max(0, seq.target - seq.kv)
        self.retention.on_call_arrived(seq.call, self.env.now)
        if not self._busy or self._stalled:
            self._stalled = False
            self._busy = True
            self._gen += 1
            ev = self.env.timeout(0.0)
            ev.callbacks.append(self._make_cb(self._gen))
        elif self._span_k > 1:
            self._cut_span()

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
        lost = [(s, s.kv) for s in self.running]
        lost += [(s, s.kv) for s in self.waiting]
        for seq, _ in lost:
            seq.kv = 0
            seq.nref = 0
            seq.private = 0
            seq.registered = False
            seq.restored = 0
            seq.target = seq.prompt + seq.gen
        self.running = []
        self.waiting = deque()
        self._outstanding_tokens = 0
        self._prefill_left = 0
        self._n_prefilling = 0
        self._stalled = False
        self._swap_in_pending_s = 0.0
        self._busy = False
        self._gen += 1
        self._span_k = 0
        self._span_cum = None
        self._pending = None
        self.ready = False
        self.kv = KVCache(self.kv.capacity, self.block_size, self.kv.host_capacity)
        self.timeline.append((now, 0, 0, 0, 0))
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
        if self._pending is not None:
            self._finish_iteration(now)
        elif self._span_k:
            self._finish_span(now)
        self._schedule(now)

    def check(self) -> None:
        """Assert the replica's accounting invariants (used when ``check_invariants``)."""
        self.kv.check()
        assert self.kv.used <= self.kv.capacity
        private = sum(s.private for s in self.running)
        assert private + self.kv.entry_blocks() == self.kv.used, "block leak"
        assert self._outstanding_tokens == sum(s.remaining_tokens for s in self.running) + sum(
            s.remaining_tokens for s in self.waiting
        ), "outstanding token accounting"
        assert self._n_prefilling == sum(1 for s in self.running if s.kv < s.target)
        assert self._prefill_left == sum(
            max(0, s.target - s.kv) for s in (*self.running, *self.waiting)
        ), "pending prefill accounting"
        for s in self.running:
            assert s.gen <= s.out and s.kv <= s.target + s.out
            assert s.private >= self._blocks_for(s, s.kv), (
                "sequence holds fewer blocks than its KV needs"
            )

    def _schedule(self, now: float) -> None:
        self._stalled = False
        if self.cfg.check_invariants:
            self.check()
        running = self.running
        self.timeline.append(
            (now, len(running), len(self.waiting), self.kv.used, self.kv.active_blocks)
        )
        if not running and not self.waiting:
            self._busy = False
            return
        if self.cfg.fast_forward and running and self._can_span(now):
            k = self._span_length()
            if k >= 2:
                self._start_span(now, k)
                return
        decodes, prefills, preempted = self._build_batch(now)
        if not decodes and not prefills and preempted:
            # everything running was preempted and nothing was admitted in this step:
            # the next step (at once) admits from the queue
            self._gen += 1
            ev = self.env.timeout(0.0)
            ev.callbacks.append(self._make_cb(self._gen))
            return
        if not decodes and not prefills:
            # Nothing can run: only pinned blocks can hold the memory a call that fits
            # needs (a call that fits can always run once the running set drains).
            expiry = self.kv.next_pin_expiry()
            if expiry is None:
                raise RuntimeError(f"replica {self.replica_id}: scheduler stalled")
            self._stalled = True
            self._gen += 1
            ev = self.env.timeout(max(0.0, expiry - now))
            ev.callbacks.append(self._make_cb(self._gen))
            return
        shape = BatchShape(
            prefill_tokens=tuple(c for _, c in prefills),
            prefill_context=tuple(s.kv for s, _ in prefills),
            num_decode=len(decodes),
            decode_context_sum=sum(s.kv for s in decodes) + len(decodes),
        )
        dt = self.cost.iteration_time(shape)
        if self._swap_in_pending_s:
            dt += self._swap_in_pending_s
            self._swap_in_pending_s = 0.0
        self._pending = (decodes, prefills)
        self._span_k = 0
        self.busy_s += dt
        self.iterations += 1
        self._gen += 1
        ev = self.env.timeout(dt)
        ev.callbacks.append(self._make_cb(self._gen))

    # ---- batch building (one iteration) ------------------------------------------
    def _blocks_for(self, seq: Seq, tokens: int) -> int:
        """Private blocks ``seq`` needs to hold ``tokens`` tokens of KV."""
        return max(0, -(-tokens // self.block_size) - seq.nref * seq.entry_blocks)

    def _preempt(self, victim: Seq, now: float) -> None:
        self.running.remove(victim)
        if victim.kv < victim.target:
            self._n_prefilling -= 1
        self._outstanding_tokens -= victim.remaining_tokens
        self._prefill_left -= max(0, victim.target - victim.kv)
        self.kv.release(victim.private)
        self.kv.unref(victim.hashes, victim.nref, now)
        victim.private = 0
        victim.nref = 0
        victim.registered = False
        victim.kv = 0
        victim.target = victim.prompt + victim.gen
        victim.restored = 0
        victim.preemptions += 1
        self.preemptions += 1
        self._outstanding_tokens += victim.remaining_tokens
        self._prefill_left += victim.target
        self.waiting.appendleft(victim)

    @staticmethod
    def _unschedule(seq: Seq, decodes: list[Seq], prefills: list[tuple[Seq, int]]) -> int:
        """Remove ``seq`` from the batch being built; returns the tokens it had taken."""
        if seq in decodes:
            decodes.remove(seq)
            return 1
        for j, (s, chunk) in enumerate(prefills):
            if s is seq:
                del prefills[j]
                return chunk
        return 0

    def _build_batch(self, now: float) -> tuple[list[Seq], list[tuple[Seq, int]], bool]:
        """The step's decodes, its prefill chunks ``(seq, tokens)``, and whether building
        it preempted a sequence."""
        budget = self._token_budget(now)
        kv = self.kv
        decodes: list[Seq] = []
        prefills: list[tuple[Seq, int]] = []
        preempted = False
        # 1. running sequences, in admission order; preempt from the back when out of memory
        running = self.running
        bs = self.block_size
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            kvt = seq.kv
            if kvt >= seq.target:
                # decode: one token, and a new block only when the held blocks are full
                if kvt < (seq.nref * seq.entry_blocks + seq.private) * bs:
                    decodes.append(seq)
                    budget -= 1
                    i += 1
                    continue
                chunk = 1
            else:
                chunk = min(seq.target - kvt, budget)
            need = self._blocks_for(seq, kvt + chunk) - seq.private
            while need > 0 and not kv.allocate(need, now):
                victim_i = self.policy.preempt_victim(self.running, now)
                victim = self.running[victim_i]
                if victim_i < i:  # already in this batch: take it out again
                    i -= 1
                    budget += self._unschedule(victim, decodes, prefills)
                self._preempt(victim, now)
                preempted = True
                if victim is seq:
                    break
            else:
                seq.private += max(0, need)
                if chunk == 1 and seq.kv >= seq.target:
                    decodes.append(seq)
                else:
                    prefills.append((seq, chunk))
                budget -= chunk
                i += 1
                continue
            # seq itself was preempted: the loop index now points at its successor
        # the full prompt blocks this step computes become prefix-cache entries now, as
        # vLLM v1 caches them when it schedules the chunk (each layer writes the step's
        # KV before attending, so a call admitted below may already hit them); only
        # after the loop above, which may still take a scheduled sequence out again
        for seq, chunk in prefills:
            if seq.hashes and not seq.registered:
                self._register_computed(
                    seq, min(len(seq.hashes), (seq.kv + chunk) // seq.hash_tokens)
                )
        # 2. admit waiting sequences in policy order; none in a step that preempted
        # (vLLM v1's scheduler schedules waiting requests only when it preempted none)
        if (
            not preempted
            and self.waiting
            and budget > 0
            and len(self.running) < self.cfg.max_num_seqs
        ):
            # batch policies return the engine's own Seq objects, reordered
            order = cast(
                "Iterable[Seq]",
                self.policy.order(list(self.waiting), now)
                if self.policy.reorders
                else self.waiting,
            )
            admitted: list[Seq] = []
            for seq in order:
                if budget <= 0 or len(self.running) >= self.cfg.max_num_seqs:
                    break
                plan = self._admission(seq, budget, now)
                if plan is None:
                    break  # head-of-line blocking, as vLLM
                n, m, hit_tokens, start, chunk, need, swap = plan
                kv.ref(seq.hashes, n)
                seq.nref = n + m
                ok = kv.allocate(need + swap, now)
                assert ok, "admission planned beyond available blocks"
                if m:
                    kv.swap_in(seq.hashes, n, m, keep=self.cpu_offload)
                    t = self._swap_blocks_time(swap)
                    self._swap_in_pending_s += t
                    self.swap_in_s += t
                seq.private = need
                seq.kv = start
                self._outstanding_tokens -= start
                self._prefill_left -= start
                if not seq.hit_counted:
                    seq.hit_counted = True
                    seq.cached_tokens = hit_tokens
                    seq.admit_s = now
                    self.prompt_tokens += seq.prompt
                    self.hit_tokens += hit_tokens
                self.running.append(seq)
                self._n_prefilling += 1
                admitted.append(seq)
                prefills.append((seq, chunk))
                budget -= chunk
                if seq.hashes:
                    self._register_computed(
                        seq, min(len(seq.hashes), (start + chunk) // seq.hash_tokens)
                    )
            if admitted:
                if self.policy.reorders:
                    ids = {id(s) for s in admitted}
                    self.waiting = deque(s for s in self.waiting if id(s) not in ids)
                else:
                    for _ in admitted:
                        self.waiting.popleft()
        return decodes, prefills, preempted

    def _finish_iteration(self, now: float) -> None:
        assert self._pending is not None
        decodes, prefills = self._pending
        self._pending = None
        done: list[Seq] = []
        for seq in decodes:
            seq.kv += 1
            g = seq.gen = seq.gen + 1
            if g >= seq.out:
                done.append(seq)
        self._outstanding_tokens -= len(decodes)
        for seq, chunk in prefills:
            seq.kv += chunk
            self._outstanding_tokens -= chunk
            self._prefill_left -= chunk
            if seq.kv >= seq.target:
                self._n_prefilling -= 1
                self._complete_prefill(seq, now)
                if seq.gen >= seq.out:
                    done.append(seq)
        for seq in done:
            self._finish(seq, now)

    def _register_computed(self, seq: Seq, upto: int) -> None:
        """Make ``seq.hashes[nref:upto]`` (blocks computed by the end of the step being
        built) shared prefix entries; with the CPU offload tier, store them there too
        (a copy on the copy engine)."""
        start = seq.nref
        if upto <= start:
            return
        self.kv.register(seq.hashes, start, seq.entry_blocks, upto)
        seq.private -= (upto - start) * seq.entry_blocks
        seq.nref = upto
        if self.cpu_offload:
            self.kv.host_store(seq.hashes, start, upto, seq.entry_blocks)
            self.swap_out_s += self._swap_blocks_time((upto - start) * seq.entry_blocks)

    def _complete_prefill(self, seq: Seq, now: float) -> None:
        if not seq.registered and seq.hashes:
            # the prompt's full blocks are shared prefix entries (all computed now)
            self._register_computed(seq, len(seq.hashes))
        seq.registered = True
        seq.gen += 1
        self._outstanding_tokens -= 1
        if seq.gen == 1:
            seq.first_token_s = now
        self.policy.on_tokens(seq.call, seq.target, now)

    def _finish(self, seq: Seq, now: float) -> None:
        self.running.remove(seq)
        self.kv.release(seq.private)
        seq.private = 0
        decision = self.retention.on_call_finished(seq.call, seq.has_successor, now, self)
        moved = self.kv.unref(
            seq.hashes,
            seq.nref,
            now,
            pin_until=now + decision.pin_s if decision.pin_s > 0 else 0.0,
            discard=decision.discard,
            to_host=decision.swap_to_host,
        )
        if moved:
            self.swap_out_s += self._swap_blocks_time(moved)
        seq.nref = 0
        self.policy.on_tokens(seq.call, max(0, seq.out - 1), now)
        self.on_finish(self, seq, now)

    # ---- decode spans (exact fast-forward) ---------------------------------------
    def _token_budget(self, now: float) -> int:
        """The step's token budget: the batch policy's, within [max_num_seqs,
        max_num_batched_tokens] (default: max_num_batched_tokens)."""
        cap = self.cfg.max_num_batched_tokens
        b = self.policy.token_budget(cap, now)
        return cap if b >= cap else max(self.cfg.max_num_seqs, b)

    def _can_span(self, now: float) -> bool:
        """Pure decode, and no waiting call could join the batch before it changes."""
        if self._n_prefilling:
            return False
        if not self.waiting or len(self.running) >= self.cfg.max_num_seqs:
            return True
        step_budget = self._token_budget(now)
        if self.policy.reorders or step_budget <= len(self.running):
            return False
        # the head of the queue cannot be admitted now, and free memory only shrinks
        # during a span, so it cannot be admitted before the span ends either
        budget = step_budget - len(self.running)
        return self._admission(self.waiting[0], budget, now) is None

    def _admission(
        self, seq: Seq, budget: int, now: float
    ) -> tuple[int, int, int, int, int, int, int] | None:
        """Plan admitting ``seq`` with ``budget`` tokens left, without touching the cache.

        Returns ``(hits, host_hits, hit_tokens, start, chunk, private_blocks,
        swap_blocks)``, or None when its memory cannot be had now.  The check comes
        before any cache reference, so a failed attempt leaves the LRU order as it
        was (the fast-forward path makes no attempts during a span; vLLM also checks
        before it allocates).
        """
        kv = self.kv
        n = kv.match(seq.hashes) if seq.hashes else 0
        # the prefix may continue in the host tier: those entries are swapped in
        m = kv.host_match(seq.hashes, n) if kv.host_used and seq.hashes else 0
        hit_tokens = min((n + m) * seq.hash_tokens, seq.target - 1)
        start = max(hit_tokens, min(seq.restored, seq.target - 1))
        chunk = min(seq.target - start, budget)
        need = max(0, -(-(start + chunk) // self.block_size) - (n + m) * seq.entry_blocks)
        swap = m * seq.entry_blocks
        avail = kv.available(now)
        if need + swap > avail:
            return None
        # referencing the hit entries takes them out of the evictable pool (at most
        # n * entry_blocks blocks: count them only when that bound could matter)
        if (
            n
            and need + swap > avail - n * seq.entry_blocks
            and need + swap > avail - kv.evictable_among(seq.hashes, n)
        ):
            return None
        return n, m, hit_tokens, start, chunk, need, swap

    def _span_length(self) -> int:
        """Iterations until the first completion, capped where free blocks run out."""
        bs = self.block_size
        k = min(s.out - s.gen for s in self.running)
        free = self.kv.free
        if free >= len(self.running) * -(-k // bs):
            return k  # no sequence can need more than ceil(k / bs) new blocks in k steps
        slacks = sorted((s.nref * s.entry_blocks + s.private) * bs - s.kv for s in self.running)
        n = len(slacks)
        if slacks[-1] < bs:
            # Sequence i needs a new block at steps slack_i + 1 + t * bs (t = 0, 1, ...);
            # with every slack below bs, round t of these crossings lies in
            # (t * bs, (t + 1) * bs], so the sorted crossings are the sorted slacks
            # repeated every bs steps.  The span ends just before crossing number
            # ``free`` (0-based), the first one free blocks cannot pay for.
            first_short = slacks[free % n] + 1 + (free // n) * bs
            return min(k, first_short - 1)

        def extra(j: int) -> int:
            return sum((j - sl + bs - 1) // bs for sl in slacks if j > sl)

        if extra(k) <= free:
            return k
        lo, hi = 0, k  # extra(lo) <= free < extra(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if extra(mid) <= free:
                lo = mid
            else:
                hi = mid
        return lo

    def _start_span(self, now: float, k: int) -> None:
        n = len(self.running)
        ctx0 = sum(s.kv for s in self.running)
        if k <= SHORT_SPAN:
            # most spans are cut by an arrival after a few iterations: scalar times
            # beat the fixed cost of numpy calls (accumulate sums in order, as cumsum)
            dt = self.cost.decode_time
            cum = list(accumulate(dt(n, ctx0 + n * i) for i in range(1, k + 1)))
        else:
            sums = ctx0 + n * np.arange(1, k + 1, dtype=np.int64)
            cum = np.cumsum(self.cost.decode_times(n, sums)).tolist()
        if self.waiting and self.kv.pinned_blocks:
            # an expiring pin frees memory a waiting call may need: end the span at the
            # first iteration boundary at or after the expiry (the step-by-step engine
            # would admit there)
            expiry = self.kv.next_pin_expiry()
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
        bs = self.block_size
        done: list[Seq] = []
        taken = 0
        for seq in self.running:
            kvt = seq.kv = seq.kv + m
            g = seq.gen = seq.gen + m
            held = (seq.nref * seq.entry_blocks + seq.private) * bs
            if kvt > held:
                add = (kvt - held + bs - 1) // bs
                seq.private += add
                taken += add
            if g >= seq.out:
                done.append(seq)
        if taken:
            ok = self.kv.allocate(taken, now)
            assert ok, "span planned beyond free blocks"
        self._outstanding_tokens -= m * len(self.running)
        for seq in done:
            self._finish(seq, now)
