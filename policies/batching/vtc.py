"""Virtual token counter fairness across sessions (VTC)."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import BatchPolicy, SeqView
from policies.registry import register
from sim.common.errors import PolicyError
from sim.workload.calls import Call


@register("batching", "vtc")
class VTC(BatchPolicy):
    """Virtual token counter: admit the backlogged session that has received least service.

    Rule: each client (agent session) has a counter of weighted tokens served:
    ``input_weight`` per prompt token when its prefill completes and
    ``output_weight`` per generated token when the call ends.  Admission order is
    (client counter, arrival time).  Counter lift: when a call arrives from a client
    with no call in the replica's queue, its counter is raised to at least the
    smallest counter of the clients in the queue (or, with an empty queue, the
    counter of the client served last), so idle time earns no credit.  When memory
    runs out the engine preempts the running call of the client with the largest
    counter.
    Parameters: ``input_weight`` (float, 1.0), ``output_weight`` (float, 2.0) per token.
    Counters advance per phase rather than per token; a prefill recomputed after a
    preemption is charged again.
    Reference: Sheng et al., "Fairness in Serving Large Language Models", OSDI 2024
    (Algorithm 2, VTC with counter lift).
    """

    reorders = True

    def __init__(self, input_weight: float = 1.0, output_weight: float = 2.0) -> None:
        if input_weight < 0 or output_weight < 0:
            raise PolicyError("vtc: weights must be >= 0")
        self.input_weight = input_weight
        self.output_weight = output_weight
        self.counter: dict[str, float] = {}
        self._last_served: str | None = None
        self._prefilled: set[str] = set()

    def on_arrival(self, seq: SeqView, waiting: Sequence[SeqView], now: float) -> None:
        counter = self.counter
        client = seq.call.session_id
        queued = {s.call.session_id for s in waiting}
        if client in queued:
            return
        if queued:
            floor = min(counter.get(c, 0.0) for c in queued)
        elif self._last_served is not None:
            floor = counter.get(self._last_served, 0.0)
        else:
            return
        if counter.get(client, 0.0) < floor:
            counter[client] = floor

    def order(self, waiting: list[SeqView], now: float) -> list[SeqView]:
        counter = self.counter
        return sorted(waiting, key=lambda s: (counter.get(s.call.session_id, 0.0), s.arrival_s))

    def preempt_victim(self, running: Sequence[SeqView], now: float) -> int:
        counter = self.counter
        return max(
            range(len(running)),
            key=lambda i: (counter.get(running[i].call.session_id, 0.0), running[i].arrival_s),
        )

    def on_tokens(self, call: Call, tokens: int, now: float) -> None:
        if call.call_id in self._prefilled:
            self._prefilled.discard(call.call_id)
            w = self.output_weight
        else:
            self._prefilled.add(call.call_id)
            w = self.input_weight
        self.counter[call.session_id] = self.counter.get(call.session_id, 0.0) + w * tokens
        self._last_served = call.session_id
