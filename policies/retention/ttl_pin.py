"""Continuum: pin a session's KV cache across a tool call for a cost-benefit TTL."""

from __future__ import annotations

import math

import numpy as np

from policies.base import KVCostView, RetentionDecision
from policies.registry import register
from policies.retention._waits import WaitLearningRetention, WaitStats
from sim.common.errors import PolicyError
from sim.workload.calls import Call

#: Points of the exponential's quantile grid that stand for the tool-call distribution
#: before ``min_samples`` waits have been observed.
_COLD_POINTS = 64


@register("retention", "ttl_pin")
class TTLPin(WaitLearningRetention):
    """Continuum's KV time-to-live: pin a paused session's KV only when it pays, for the TTL
    that maximizes the expected benefit minus the memory cost.

    Rule: when a call with a successor in its session finishes (the session goes off
    to a tool call), with ``D`` the session's wait (end of the call to the arrival of
    its next call; its distribution is the observed waits, or an exponential of mean
    ``default_wait_s`` until ``min_samples`` are seen), ``n`` the call's context tokens
    (prompt + output), ``c`` their KV blocks, ``K`` the replica's KV blocks and ``N``
    its outstanding calls:

    - benefit if the session returns within the pin, ``B = t_prefill(n) +
      t_prefill(pending)`` (seconds): the reload it saves plus the queueing delay it
      saves, estimated as prefilling the prompt tokens queued on the replica now;
    - cost of a pin of length ``tau``, ``C(tau) = E[min(D, tau)] * N * c / K``
      (seconds): while pinned, ``c`` of ``K`` blocks serve none of the ``N`` other
      calls;
    - ``TTL = argmax_tau P(D <= tau) * B - C(tau)`` over the distribution's support,
      capped at ``max_ttl_s``; no pin when the best value is not positive.

    A pinned prefix cannot be evicted by an admission (the call waits for the pin);
    a running call that needs a block releases pins early instead of being preempted
    (the engine's unpinning under memory pressure); the session's next call
    re-references the blocks, and an expired pin is the oldest LRU entry.  The last
    call of a session is cached as plain LRU.  Pair with ``--batching program_fcfs``
    (Continuum's program-level FCFS).
    Parameters: ``ttl_s`` (float, 0 = Continuum's TTL; > 0 pins every paused session
    for this fixed TTL, a static-TTL variant), ``default_wait_s`` (float, 2 s: mean of
    the cold-start exponential; 2 s is the pin threshold of the authors' preview code),
    ``min_samples`` (int, 16 waits), ``max_ttl_s`` (float, 300 s, a safety cap).
    Reference: Li et al., "Continuum: Efficient and Robust Multi-Turn LLM Agent
    Scheduling with KV Cache Time-to-Live", arXiv 2511.02230 (v2: the TTL maximizes
    P(tool done within TTL) x benefit(reload + queueing) - cost(TTL) over the empirical
    tool-call CDF, exponential cold start, unpinning under memory pressure).  The
    cost's form (memory-time in seconds of other calls' progress) is this
    implementation's reading of it.
    """

    def __init__(
        self,
        ttl_s: float = 0.0,
        default_wait_s: float = 2.0,
        min_samples: int = 16,
        max_ttl_s: float = 300.0,
    ) -> None:
        if ttl_s < 0 or default_wait_s <= 0 or min_samples < 1 or max_ttl_s <= 0:
            raise PolicyError(
                "ttl_pin: ttl_s >= 0, default_wait_s > 0, min_samples >= 1, max_ttl_s > 0"
            )
        self.ttl_s = ttl_s
        self.default_wait_s = default_wait_s
        self.min_samples = min_samples
        self.max_ttl_s = max_ttl_s
        self.waits = WaitStats()
        self._cold = _Dist.exponential(default_wait_s)
        self._src: list[float] | None = None
        self._dist = self._cold
        self.pinned = 0  # decisions that pinned
        self.declined = 0  # decisions that did not (value not positive)

    def distribution(self) -> _Dist:
        """The wait distribution the TTL is chosen from now."""
        if len(self.waits) < self.min_samples:
            return self._cold
        xs = self.waits.sorted_waits()
        if xs is not self._src:
            self._src = xs
            self._dist = _Dist.empirical(xs)
        return self._dist

    def ttl(self, call: Call, replica: KVCostView) -> float:
        """The TTL (seconds, 0: no pin) for ``call``'s KV on ``replica`` now."""
        if self.ttl_s > 0:
            return self.ttl_s
        n = call.input_tokens + call.output_tokens
        blocks = -(-n // replica.block_size)
        benefit = replica.recompute_time(n) + replica.recompute_time(replica.pending_prefill_tokens)
        rate = max(1, replica.outstanding_requests) * blocks / max(1, replica.kv_capacity_blocks)
        return min(self.distribution().best_ttl(benefit, rate), self.max_ttl_s)

    def decide(self, call: Call, now: float, replica: KVCostView) -> RetentionDecision:
        ttl = self.ttl(call, replica)
        if ttl <= 0:
            self.declined += 1
            return RetentionDecision()
        self.pinned += 1
        return RetentionDecision(pin_s=ttl)


class _Dist:
    """A wait distribution as its support points ``tau`` (ascending), the CDF at each and
    ``E[min(D, tau)]`` at each (seconds)."""

    def __init__(self, tau: np.ndarray, cdf: np.ndarray, held: np.ndarray) -> None:
        self.tau, self.cdf, self.held = tau, cdf, held

    @classmethod
    def empirical(cls, xs: list[float]) -> _Dist:
        x = np.asarray(xs, dtype=float)
        m = len(x)
        k = np.arange(1, m + 1)
        # E[min(D, x_k)] = (x_1 + ... + x_k + (m - k) x_k) / m
        return cls(x, k / m, (np.cumsum(x) + (m - k) * x) / m)

    @classmethod
    def exponential(cls, mean: float) -> _Dist:
        p = (np.arange(1, _COLD_POINTS + 1) - 0.5) / _COLD_POINTS
        tau = -mean * np.log1p(-p)
        return cls(tau, p, mean * p)  # E[min(D, tau)] = mean * (1 - exp(-tau / mean))

    def best_ttl(self, benefit: float, rate: float) -> float:
        """``argmax_tau P(D <= tau) * benefit - rate * E[min(D, tau)]``, 0 when no
        ``tau`` has a positive value."""
        value = self.cdf * benefit - rate * self.held
        i = int(np.argmax(value))
        if not value[i] > 0 or not math.isfinite(float(self.tau[i])):
            return 0.0
        return float(self.tau[i])
