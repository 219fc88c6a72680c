"""Autellix PLAS: program-level attained service with multi-level queues."""

from __future__ import annotations

import math
from collections.abc import Sequence

from policies.base import BatchPolicy, SeqView
from policies.registry import register
from sim.common.errors import PolicyError
from sim.workload.calls import Call


@register("batching", "plas")
class PLAS(BatchPolicy):
    """Autellix PLAS: admit calls of programs with the least attained service first.

    Rule: a program is an agent session; its attained service is the tokens its
    calls have computed so far (prefill tokens when a prefill completes, generated
    tokens when a call ends).  A waiting call sits in queue
    ``level = 0`` if service < ``base_quantum``, else
    ``min(num_queues - 1, floor(log2(service / base_quantum)) + 1)`` (exponentially
    growing quanta, as Autellix's multi-level queues).  Anti-starvation is the
    paper's program-level ratio: a waiting call is promoted to queue 0 when
    ``(W_p + W_c) / max(T_p, min_service_s) >= beta``, where ``W_c`` is how long the
    call has waited, ``W_p`` the program's past waiting (each finished call's arrival
    to first token) and ``T_p`` its past service time (each call's first token to
    end), all in seconds.  A fixed wait would promote every call once the engine is
    overloaded and turn PLAS back into FCFS; the ratio keeps long programs behind
    short ones while bounding how long any program waits relative to its service.
    Admission order is (queue, arrival time); when memory runs out the engine
    preempts the running call with the lowest priority (highest queue, latest arrival).
    Parameters: ``num_queues`` (int, 8), ``base_quantum`` (int, 2048 tokens),
    ``beta`` (float, 8, wait-to-service ratio), ``min_service_s`` (float, 1 s, the
    service floor of the ratio).
    Not modelled: Autellix's per-call quantum demotion while a call runs and its
    proactive preemption of running calls by better-ranked waiting ones (agentsim's
    engine preempts only under memory pressure).
    Reference: Luo et al., "Autellix: An Efficient Serving Engine for LLM Agents as
    General Programs" (arXiv 2502.13965), Section 4 (PLAS, multi-level program
    queues, anti-starvation by the wait-to-service ratio).
    """

    reorders = True

    def __init__(
        self,
        num_queues: int = 8,
        base_quantum: int = 2048,
        beta: float = 8.0,
        min_service_s: float = 1.0,
    ) -> None:
        if num_queues < 1 or base_quantum < 1 or beta <= 0 or min_service_s <= 0:
            raise PolicyError(
                f"{self.policy_name}: num_queues and base_quantum must be >= 1, "
                "beta > 0, min_service_s > 0"
            )
        self.num_queues = num_queues
        self.base_quantum = base_quantum
        self.beta = beta
        self.min_service_s = min_service_s
        self.service: dict[str, int] = {}  # program -> tokens attained
        self.wait_s: dict[str, float] = {}  # program -> seconds its calls waited (W_p)
        self.service_s: dict[str, float] = {}  # program -> seconds of service (T_p)
        self._arrival_s: dict[str, float] = {}  # waiting call -> its arrival (s)
        self._first_token_s: dict[str, float] = {}  # call in flight -> first token time

    def level(self, service: float) -> int:
        """Queue of a program that has attained ``service`` tokens."""
        if service < self.base_quantum:
            return 0
        return min(self.num_queues - 1, int(math.log2(service / self.base_quantum)) + 1)

    def attained(self, call: Call) -> float:
        """The service that decides ``call``'s queue (program-level for PLAS)."""
        return self.service.get(call.session_id, 0)

    def starving(self, seq: SeqView, now: float) -> bool:
        """Whether ``seq``'s program has waited ``beta`` times its service (seconds)."""
        program = seq.call.session_id
        wait = self.wait_s.get(program, 0.0) + (now - seq.arrival_s)
        return wait >= self.beta * max(self.service_s.get(program, 0.0), self.min_service_s)

    def _key(self, seq: SeqView, now: float) -> tuple[int, float]:
        if self.starving(seq, now):
            return 0, seq.arrival_s
        return self.level(self.attained(seq.call)), seq.arrival_s

    def order(self, waiting: list[SeqView], now: float) -> list[SeqView]:
        return sorted(waiting, key=lambda s: self._key(s, now))

    def preempt_victim(self, running: Sequence[SeqView], now: float) -> int:
        return max(range(len(running)), key=lambda i: self._key(running[i], now))

    def on_arrival(self, seq: SeqView, waiting: Sequence[SeqView], now: float) -> None:
        self._arrival_s[seq.call.call_id] = seq.arrival_s

    def on_tokens(self, call: Call, tokens: int, now: float) -> None:
        program = call.session_id
        self.service[program] = self.service.get(program, 0) + tokens
        first = self._first_token_s.pop(call.call_id, None)
        if first is None:  # its prefill completed: the call's wait ends here
            arrived = self._arrival_s.pop(call.call_id, now)
            self.wait_s[program] = self.wait_s.get(program, 0.0) + (now - arrived)
            self._first_token_s[call.call_id] = now
        else:  # it ended: its service ran from the first token to now
            self.service_s[program] = self.service_s.get(program, 0.0) + (now - first)
