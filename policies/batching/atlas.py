"""Autellix ATLAS: attained service along the program DAG's critical path."""

from __future__ import annotations

from policies.batching.plas import PLAS
from policies.registry import register
from sim.workload.calls import Call


@register("batching", "atlas")
class ATLAS(PLAS):
    """Autellix ATLAS: like PLAS, but a call's priority is its critical-path service.

    Rule: for a multi-threaded program (a DAG of calls), a call's attained service is
    the largest service accumulated along any dependency path that leads to it:
    ``start(c) = max(end(p) for p in parents(c))`` and ``end(c) = start(c) +
    tokens computed by c``.  Parents the batch policy never sees (tool calls) stand
    for the longest path finished so far in the session.  Queues, quanta and
    anti-starvation (program-level wait-to-service ratio) are PLAS's.  Parameters: as
    ``plas`` (``num_queues`` 8, ``base_quantum`` 2048 tokens, ``beta`` 8,
    ``min_service_s`` 1 s).
    Reference: Luo et al., "Autellix" (2025), Section 4 (ATLAS for DAG programs).
    """

    def __init__(
        self,
        num_queues: int = 8,
        base_quantum: int = 2048,
        beta: float = 8.0,
        min_service_s: float = 1.0,
    ) -> None:
        super().__init__(num_queues, base_quantum, beta, min_service_s)
        self._start: dict[str, float] = {}  # call -> critical-path service before it
        self._end: dict[str, float] = {}  # call -> critical-path service after it
        self._session_end: dict[str, float] = {}  # session -> longest finished path

    def attained(self, call: Call) -> float:
        start = self._start.get(call.call_id)
        if start is None:
            ends = self._end
            start = 0.0
            for p in call.parents:
                e = ends.get(p)
                if e is None:
                    e = self._session_end.get(call.session_id, 0.0)
                start = max(start, e)
            self._start[call.call_id] = start
        return start

    def on_tokens(self, call: Call, tokens: int, now: float) -> None:
        super().on_tokens(call, tokens, now)
        end = self._end.get(call.call_id, self.attained(call)) + tokens
        self._end[call.call_id] = end
        if end > self._session_end.get(call.session_id, 0.0):
            self._session_end[call.session_id] = end
