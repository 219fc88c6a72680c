"""InferCept: per call, preserve, discard or swap the KV cache by memory-time waste."""

from __future__ import annotations

import math

from policies.base import KVCostView, RetentionDecision
from policies.registry import register
from policies.retention._waits import WaitLearningRetention, WaitStats
from sim.common.errors import PolicyError
from sim.workload.calls import Call


@register("retention", "infercept")
class InferCept(WaitLearningRetention):
    """InferCept: choose preserve / discard / swap for each paused call by least waste.

    Rule: when a call with a successor finishes (its session is intercepted by a
    tool call), with ``C`` = the call's context blocks, ``T`` = the expected
    interception time (mean observed wait; ``default_wait_s`` until ``min_samples``
    waits are seen), ``B`` = blocks of the running batch on the replica, the
    memory x time waste of each option (block-seconds) is

    - preserve: ``T * C`` (the blocks sit idle in HBM);
    - discard:  ``t_recompute(C) * (C + B)`` (recomputing the context later stalls
      the running batch, whose memory waits with it);
    - swap:     ``2 * t_swap(C) * C`` (the blocks are held while copied out and
      back over PCIe; the copies overlap compute), only when the replica has a host
      tier that can hold them (it evicts its least recently swapped blocks).

    The smallest wins.  Preserve pins the blocks for the ``pin_quantile`` of the
    observed waits; discard frees them now; swap moves them to host DRAM.  A
    session's last call is cached as plain LRU.  ``t_recompute`` and ``t_swap``
    come from the replica's cost model and topology (``KVCostView``).  InferCept
    schedules a resumed request by its original arrival: pair with
    ``--batching program_fcfs``.  Recomputation of a discarded context is chunked by
    the engine's token budget (chunked prefill); swap-outs overlap compute on the copy
    engine, swap-ins are priced whole before the admitting step (not layer-pipelined).
    Parameters: ``default_wait_s`` (float, 5 s), ``min_samples`` (int, 16),
    ``pin_quantile`` (float, 0.9).
    Reference: Abhyankar et al., "InferCept: Efficient Intercept Support for
    Augmented Large Language Model Inference", ICML 2024 (Section 4, waste equations).
    """

    def __init__(
        self, default_wait_s: float = 5.0, min_samples: int = 16, pin_quantile: float = 0.9
    ) -> None:
        if default_wait_s < 0 or not 0 < pin_quantile <= 1:
            raise PolicyError("infercept: default_wait_s >= 0 and 0 < pin_quantile <= 1")
        self.default_wait_s = default_wait_s
        self.min_samples = min_samples
        self.pin_quantile = pin_quantile
        self.waits = WaitStats()
        self.choices = {"preserve": 0, "discard": 0, "swap": 0}

    def expected_wait(self) -> float:
        return self.mean_wait()

    def waste(self, call: Call, replica: KVCostView) -> dict[str, float]:
        """Memory-time waste (block-seconds) of each option for ``call`` on ``replica``."""
        tokens = call.input_tokens + call.output_tokens
        c = -(-tokens // replica.block_size)
        out = {
            "preserve": self.expected_wait() * c,
            "discard": replica.recompute_time(tokens) * (c + replica.active_blocks),
            "swap": math.inf,
        }
        if replica.host_capacity_blocks >= c:
            out["swap"] = 2.0 * replica.swap_time(tokens) * c
        return out

    def decide(self, call: Call, now: float, replica: KVCostView) -> RetentionDecision:
        w = self.waste(call, replica)
        choice = min(w, key=lambda k: (w[k], k))
        self.choices[choice] += 1
        if choice == "discard":
            return RetentionDecision(discard=True)
        if choice == "swap":
            return RetentionDecision(swap_to_host=True)
        pin = self.waits.quantile(self.pin_quantile) if len(self.waits) >= self.min_samples else 0.0
        return RetentionDecision(pin_s=pin or self.default_wait_s)
