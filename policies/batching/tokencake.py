"""Tokencake's space scheduler: critical agents first, with a reserved share of KV memory."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import BatchPolicy, SeqView
from policies.registry import register
from sim.common.errors import PolicyError
from sim.workload.calls import Call


def is_critical(call: Call) -> bool:
    """A call the rest of its agent graph waits on: a root (the application's first
    agent turn) or a join (a turn with two or more parents, e.g. an orchestrator
    collecting its sub-agents), on the graph's critical path.  Turns with one parent
    (a sub-agent's or a ReAct loop's next step) are not."""
    return len(call.parents) != 1


@register("batching", "tokencake")
class TokencakeSpace(BatchPolicy):
    """Tokencake's space scheduler: a dynamic partition of KV memory reserved for
    critical agents, so that other agents neither take their memory nor preempt them
    (no "critical inversion").

    Rule: a call is critical when the agent graph depends on it (``is_critical``: a
    root or a join of its session's DAG).  Waiting calls are admitted critical first,
    then first come first served.  A non-critical call is admitted only if it leaves
    ``R`` tokens of KV available, where ``R`` (the reserved partition, recomputed at
    every admission from the runtime state) is the KV the running critical calls will
    still grow into (their remaining output tokens) plus room for the next critical
    call (the mean context, prompt + output, of the critical calls seen so far),
    clamped to ``[reserve_min, reserve_max]`` of the replica's KV capacity (0 before
    any critical call was seen).  Critical calls may use the whole memory.  When
    memory runs out, the latest-admitted non-critical call is preempted (a critical
    one only when no other is running).  A reserve never blocks an admission into an
    empty replica.  Pair with ``--retention tokencake`` (the time scheduler).
    Parameters: ``reserve_min`` (float, 0.05 of KV capacity), ``reserve_max`` (float,
    0.30 of KV capacity): the bounds of the authors' dynamic reservation ratio.
    Reference: Bian et al., "Tokencake: A KV-Cache-centric Serving Framework for
    LLM-based Multi-Agent Applications", arXiv 2510.18586 (Space Scheduler: shared and
    reserved pools, reservation sized from the agents' priority, graph structure and
    KV usage); ratio bounds from the authors' code (github.com/pku-lemonade/TokenCake,
    ``scheduling.reserve_ratio_min/max``).  Criticality from the DAG's roots and joins
    is this implementation's reading of "critical-path agents" for graphs known only
    as calls arrive.
    """

    reorders = True
    reserves = True

    def __init__(self, reserve_min: float = 0.05, reserve_max: float = 0.30) -> None:
        if not 0 <= reserve_min <= reserve_max < 1:
            raise PolicyError("tokencake: 0 <= reserve_min <= reserve_max < 1")
        self.reserve_min = reserve_min
        self.reserve_max = reserve_max
        self._critical_tokens = 0  # context tokens of the critical calls seen
        self._critical_calls = 0

    @staticmethod
    def _key(seq: SeqView) -> tuple[bool, float]:
        return not is_critical(seq.call), seq.arrival_s

    def on_arrival(self, seq: SeqView, waiting: Sequence[SeqView], now: float) -> None:
        c = seq.call
        if is_critical(c):
            self._critical_tokens += c.input_tokens + c.output_tokens
            self._critical_calls += 1

    def order(self, waiting: list[SeqView], now: float) -> list[SeqView]:
        return sorted(waiting, key=self._key)

    def preempt_victim(self, running: Sequence[SeqView], now: float) -> int:
        for i in range(len(running) - 1, -1, -1):
            if not is_critical(running[i].call):
                return i
        return len(running) - 1

    def admission_reserve(
        self, seq: SeqView, running: Sequence[SeqView], capacity_tokens: int, now: float
    ) -> int:
        if is_critical(seq.call) or not self._critical_calls:
            return 0
        growth = sum(
            max(0, s.call.output_tokens - s.generated_tokens)
            for s in running
            if is_critical(s.call)
        )
        demand = growth + self._critical_tokens / self._critical_calls
        lo = self.reserve_min * capacity_tokens
        hi = self.reserve_max * capacity_tokens
        return int(min(hi, max(lo, demand)))
