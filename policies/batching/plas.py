"""Autellix PLAS: program-level attained service with discretised priority queues."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from policies.base import BatchPolicy, SeqView
from policies.registry import register
from sim.common.errors import PolicyError
from sim.workload.calls import Call


@dataclass
class Program:
    """One program's entry in the process table (seconds)."""

    service_s: float = 0.0  # PLAS: total model time of completed calls; ATLAS: critical path
    wait_s: float = 0.0  # total queueing time of its completed calls


@register("batching", "plas")
class PLAS(BatchPolicy):
    """Autellix PLAS: admit calls of the programs with the least attained service first.

    Rule (Autellix Algorithm 1): a program is an agent session; the process table keeps
    its *service* (the summed model time of its completed calls: first admission to
    finish, seconds) and its *wait* (the summed queueing time of those calls).  A call
    takes its program's service when it arrives, ``p``, and joins queue
    ``0`` if ``p < quantum_s``, else ``min(num_queues - 1, floor(log2(p / quantum_s)) + 1)``
    (K queues whose ranges double).  Calls are admitted queue by queue, first come
    first served within a queue.  Anti-starvation: a waiting call is promoted to
    queue 0 (at its tail) once ``(W_p + W_c) / T_p >= beta``, with ``W_p``/``T_p`` the
    program's wait and service and ``W_c`` the call's own wait so far.  A running
    call that has run for its queue's quantum (the width of the queue's range:
    ``quantum_s``, then ``quantum_s * 2**(i-1)`` for queue i) is demoted one queue.
    Preemption: when the first waiting call cannot be admitted (``max_num_seqs`` or KV
    memory) and ranks above the running call of the lowest queue (latest entry), that
    call is preempted (``preemptive``); the same victim is chosen when memory runs out.
    Parameters: ``num_queues`` (int, 8), ``quantum_s`` (float, 1.0 s: upper bound of
    queue 0), ``beta`` (float, 10.0, wait-to-service ratio).  The paper publishes
    neither K, the queue bounds nor beta; these are agentsim's choices.
    Differences: preemption recomputes the victim's KV (its prompt blocks usually
    stay in the prefix cache) instead of Autellix's swap to CPU; a call's quantum is
    counted from its first admission (time preempted included); a promoted call stays
    in queue 0; no multi-step scheduling; the process table is per replica, not global.
    Reference: Luo et al., "Autellix: An Efficient Serving Engine for LLM Agents as
    General Programs", arXiv 2502.13965 (2025), Section 4.2, Algorithm 1.
    """

    reorders = True
    preemptive = True

    def __init__(self, num_queues: int = 8, quantum_s: float = 1.0, beta: float = 10.0) -> None:
        if num_queues < 1 or not quantum_s > 0 or not beta > 0:
            raise PolicyError(
                f"{self.policy_name}: num_queues must be >= 1, quantum_s and beta > 0"
            )
        self.num_queues = num_queues
        self.quantum_s = quantum_s
        self.beta = beta
        self.table: dict[str, Program] = {}  # program (session) -> process-table entry
        self._prio: dict[str, float] = {}  # call -> its program's service at arrival
        self._seqs: dict[str, SeqView] = {}  # call -> its queued/running sequence
        self._promoted: dict[str, float] = {}  # call -> when it was promoted to queue 0
        self._demoted: dict[str, int] = {}  # call -> queue it was demoted to while running

    def level(self, service_s: float) -> int:
        """Queue of a call whose program has attained ``service_s`` seconds."""
        if service_s < self.quantum_s:
            return 0
        return min(self.num_queues - 1, int(math.log2(service_s / self.quantum_s)) + 1)

    def attained(self, call: Call) -> float:
        """The service (s) that decides ``call``'s queue: its program's at arrival."""
        p = self._prio.get(call.call_id)
        if p is None:
            prog = self.table.get(call.session_id)
            p = prog.service_s if prog else 0.0
        return p

    def quantum(self, level: int) -> float:
        """Seconds a call may run in queue ``level`` before it is demoted (the width of
        the queue's service range; the last queue has no bound)."""
        if level >= self.num_queues - 1:
            return math.inf
        return self.quantum_s * 2.0 ** max(0, level - 1)

    def _queue(self, seq: SeqView, now: float, running: bool) -> int:
        """The call's queue: its program's level at arrival, demoted one queue each
        time a running call uses up its queue's quantum (kept when it is preempted)."""
        cid = seq.call.call_id
        level = self._demoted.get(cid)
        if level is None:
            level = self.level(self.attained(seq.call))
        if running and math.isfinite(seq.admit_s):
            used = now - seq.admit_s
            lvl = self.level(self.attained(seq.call))
            while used >= self.quantum(lvl):
                used -= self.quantum(lvl)
                lvl += 1
            if lvl > level:
                self._demoted[cid] = level = lvl
        return level

    def _key(self, seq: SeqView, now: float, running: bool) -> tuple[int, float]:
        cid = seq.call.call_id
        promoted = self._promoted.get(cid)
        if promoted is not None:
            return 0, promoted
        prog = self.table.get(seq.call.session_id)
        if (
            not running
            and prog is not None
            and prog.service_s > 0
            and (prog.wait_s + now - seq.arrival_s) / prog.service_s >= self.beta
        ):
            self._promoted[cid] = now
            return 0, now
        return self._queue(seq, now, running), seq.arrival_s

    def order(self, waiting: list[SeqView], now: float) -> list[SeqView]:
        return sorted(waiting, key=lambda s: self._key(s, now, False))

    def preempt_victim(self, running: Sequence[SeqView], now: float) -> int:
        return max(range(len(running)), key=lambda i: self._key(running[i], now, True))

    def outranks(self, waiting: SeqView, running: SeqView, now: float) -> bool:
        return self._key(waiting, now, False) < self._key(running, now, True)

    def on_arrival(self, seq: SeqView, waiting: Sequence[SeqView], now: float) -> None:
        cid = seq.call.call_id
        self._seqs[cid] = seq
        if cid not in self._prio:  # a preempted call keeps its priority
            prog = self.table.get(seq.call.session_id)
            self._prio[cid] = prog.service_s if prog else 0.0

    def on_tokens(self, call: Call, tokens: int, now: float) -> None:
        seq = self._seqs.get(call.call_id)
        if seq is None or seq.generated_tokens < call.output_tokens:
            return  # a prefill completed; the call has not finished
        del self._seqs[call.call_id]
        self._promoted.pop(call.call_id, None)
        self._demoted.pop(call.call_id, None)
        prio = self._prio.pop(call.call_id, 0.0)
        admit = seq.admit_s if math.isfinite(seq.admit_s) else now
        prog = self.table.setdefault(call.session_id, Program())
        prog.wait_s += max(0.0, admit - seq.arrival_s)
        self.update_service(prog, prio, max(0.0, now - admit))

    def update_service(self, prog: Program, prio_s: float, model_s: float) -> None:
        """Process-table update when a call finishes (Algorithm 1, line 4): PLAS sums
        the program's model time."""
        prog.service_s += model_s
