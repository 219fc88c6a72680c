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
    growing quanta, as Autellix's multi-level queues).  Anti-starvation: a call that
    has waited longer than ``starvation_s`` is promoted to queue 0.  Admission order
    is (queue, arrival time); when memory runs out the engine preempts the running
    call with the lowest priority (highest queue, latest arrival).
    Parameters: ``num_queues`` (int, 8), ``base_quantum`` (int, 2048 tokens),
    ``starvation_s`` (float, 30.0 seconds).
    Reference: Luo et al., "Autellix: An Efficient Serving Engine for LLM Agents as
    General Programs" (2025), Section 4 (PLAS, multi-level program queues).
    """

    reorders = True

    def __init__(
        self, num_queues: int = 8, base_quantum: int = 2048, starvation_s: float = 30.0
    ) -> None:
        if num_queues < 1 or base_quantum < 1 or starvation_s <= 0:
            raise PolicyError(
                f"{self.policy_name}: num_queues and base_quantum must be >= 1, starvation_s > 0"
            )
        self.num_queues = num_queues
        self.base_quantum = base_quantum
        self.starvation_s = starvation_s
        self.service: dict[str, int] = {}  # program -> tokens attained

    def level(self, service: float) -> int:
        """Queue of a program that has attained ``service`` tokens."""
        if service < self.base_quantum:
            return 0
        return min(self.num_queues - 1, int(math.log2(service / self.base_quantum)) + 1)

    def attained(self, call: Call) -> float:
        """The service that decides ``call``'s queue (program-level for PLAS)."""
        return self.service.get(call.session_id, 0)

    def _key(self, seq: SeqView, now: float) -> tuple[int, float]:
        if now - seq.arrival_s > self.starvation_s:
            return 0, seq.arrival_s
        return self.level(self.attained(seq.call)), seq.arrival_s

    def order(self, waiting: list[SeqView], now: float) -> list[SeqView]:
        return sorted(waiting, key=lambda s: self._key(s, now))

    def preempt_victim(self, running: Sequence[SeqView], now: float) -> int:
        return max(range(len(running)), key=lambda i: self._key(running[i], now))

    def on_tokens(self, call: Call, tokens: int, now: float) -> None:
        self.service[call.session_id] = self.service.get(call.session_id, 0) + tokens
