"""Online distribution of how long a session's KV sits idle between its LLM calls.

Shared by the retention policies that size pins from the tool-call distribution.
The wait of a session is measured from the end of one of its LLM calls to the
arrival of its next LLM call (tool time plus think time), in seconds.
"""

from __future__ import annotations

from collections import deque

from policies.base import KVCostView, RetentionDecision, RetentionPolicy
from sim.workload.calls import Call


class WaitStats:
    """A sliding window of the last ``window`` observed waits, with cached statistics."""

    def __init__(self, window: int = 2048, refresh: int = 32) -> None:
        self._last_end: dict[str, float] = {}
        self._waits: deque[float] = deque(maxlen=window)
        self._sorted: list[float] = []
        self._new = 0
        self._refresh = refresh

    def __len__(self) -> int:
        return len(self._waits)

    def finished(self, call: Call, now: float) -> None:
        self._last_end[call.session_id] = now

    def arrived(self, call: Call, now: float) -> None:
        end = self._last_end.pop(call.session_id, None)
        if end is not None:
            self._waits.append(now - end)
            self._new += 1

    def _sync(self) -> None:
        if self._new >= self._refresh or (self._new and len(self._sorted) != len(self._waits)):
            self._sorted = sorted(self._waits)
            self._new = 0

    def sorted_waits(self) -> list[float]:
        """The observed waits in the window, ascending (a list the caller must not change;
        a new list whenever the statistics are refreshed)."""
        self._sync()
        return self._sorted

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (nearest rank) of the observed waits; 0 if none."""
        self._sync()
        xs = self._sorted
        if not xs:
            return 0.0
        return xs[min(len(xs) - 1, max(0, int(q * len(xs))))]

    def mean(self) -> float:
        self._sync()
        xs = self._sorted
        return sum(xs) / len(xs) if xs else 0.0


class WaitLearningRetention(RetentionPolicy):
    """A retention policy that learns the sessions' waits between calls and decides
    only for a finished call whose session has another call coming.

    Subclasses set ``self.waits`` (a :class:`WaitStats`), ``default_wait_s`` and
    ``min_samples``, and implement :meth:`decide`; a call without a successor gets the
    default decision (an ordinary LRU cache entry).
    """

    waits: WaitStats
    default_wait_s: float
    min_samples: int

    def mean_wait(self) -> float:
        """The mean observed wait (seconds); ``default_wait_s`` until ``min_samples``
        waits have been seen."""
        if len(self.waits) < self.min_samples:
            return self.default_wait_s
        return self.waits.mean()

    def on_call_arrived(self, call: Call, now: float) -> None:
        self.waits.arrived(call, now)

    def on_call_finished(
        self, call: Call, has_successor: bool, now: float, replica: KVCostView
    ) -> RetentionDecision:
        self.waits.finished(call, now)
        if not has_successor:
            return RetentionDecision()
        return self.decide(call, now, replica)

    def decide(self, call: Call, now: float, replica: KVCostView) -> RetentionDecision:
        """The decision for ``call``, which has a successor in its session."""
        raise NotImplementedError
