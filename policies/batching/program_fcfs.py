"""Continuum's program-level first come, first served admission."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import BatchPolicy, SeqView
from policies.registry import register


@register("batching", "program_fcfs")
class ProgramFCFS(BatchPolicy):
    """Program-level FCFS: admit the calls of the program (agent session) that arrived
    first, first; preempt the call of the latest-arriving program.

    Rule: a program's arrival is when its first call reached this replica; waiting
    calls are admitted in order of (program arrival, call arrival), so a multi-turn
    agent's later turns go ahead of programs that started after it instead of queueing
    behind them at every turn; when memory runs out the engine preempts the running
    call of the latest-arriving program.  No parameters.
    Reference: Li et al., "Continuum: Efficient and Robust Multi-Turn LLM Agent
    Scheduling with KV Cache Time-to-Live", arXiv 2511.02230 (program-level
    first-come-first-serve, used together with the KV time-to-live).
    """

    reorders = True

    def __init__(self) -> None:
        self.program_arrival: dict[str, float] = {}  # session id -> first arrival (s)

    def _key(self, seq: SeqView) -> tuple[float, float]:
        return self.program_arrival.get(seq.call.session_id, seq.arrival_s), seq.arrival_s

    def on_arrival(self, seq: SeqView, waiting: Sequence[SeqView], now: float) -> None:
        self.program_arrival.setdefault(seq.call.session_id, seq.arrival_s)

    def order(self, waiting: list[SeqView], now: float) -> list[SeqView]:
        return sorted(waiting, key=self._key)

    def preempt_victim(self, running: Sequence[SeqView], now: float) -> int:
        return max(range(len(running)), key=lambda i: self._key(running[i]))
