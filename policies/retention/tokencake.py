"""Tokencake's time scheduler: offload a tool-waiting agent's KV, upload it predictively."""

from __future__ import annotations

from policies.base import KVCostView, RetentionDecision
from policies.registry import register
from policies.retention._waits import WaitLearningRetention, WaitStats
from sim.common.errors import PolicyError
from sim.workload.calls import Call


@register("retention", "tokencake")
class TokencakeTime(WaitLearningRetention):
    """Tokencake's time scheduler: during a function call, the waiting agent's KV goes
    to CPU memory when the stall is long enough to pay for the round trip, and comes
    back to the GPU just before the call is predicted to return.

    Rule: when a call with a successor in its session finishes (the agent goes off to
    a function/tool call), with ``T`` the predicted stall (the mean observed wait from
    the end of a call to its session's next call; ``default_wait_s`` until
    ``min_samples`` waits are seen) and ``t`` the one-way copy time of the call's
    context (prompt + output tokens) over the GPU's PCIe path:

    - if the replica has a host tier that can hold the context and
      ``T >= offload_factor * t`` (the copy out and the copy back fit in the stall),
      the KV is offloaded now (``swap_to_host``; the copy overlaps compute) and its
      upload starts at ``max(0, T - t)`` so that it lands at the predicted return
      (``upload_after_s``; the engine copies it back on the copy engine, evicting
      LRU cache for room, and a call returning earlier loads it itself);
    - otherwise the KV stays in the GPU's prefix cache (LRU), as in vLLM.

    The last call of a session is cached as plain LRU.  Pair with ``--batching
    tokencake`` (the space scheduler: critical agents first, with reserved KV).
    Parameters: ``default_wait_s`` (float, 1 s: the prediction of the authors' code
    when no estimate or history exists), ``min_samples`` (int, 16 waits),
    ``offload_factor`` (float, 2: the stall must cover the copy out and back).
    Reference: Bian et al., "Tokencake: A KV-Cache-centric Serving Framework for
    LLM-based Multi-Agent Applications", arXiv 2510.18586 (Time Scheduler: proactive
    offload during function-call stalls, predictive upload before the predicted return,
    only when the expected gain beats the transfer cost).  The prediction from history
    (no developer ``predict_time``: calls carry no estimate here) follows the authors'
    code (github.com/pku-lemonade/TokenCake, docs/features/tokencake.md).
    """

    def __init__(
        self, default_wait_s: float = 1.0, min_samples: int = 16, offload_factor: float = 2.0
    ) -> None:
        if default_wait_s <= 0 or min_samples < 1 or offload_factor < 1:
            raise PolicyError(
                "tokencake: default_wait_s > 0, min_samples >= 1 and offload_factor >= 1"
            )
        self.default_wait_s = default_wait_s
        self.min_samples = min_samples
        self.offload_factor = offload_factor
        self.waits = WaitStats()
        self.offloaded = 0  # decisions that offloaded (with an upload)
        self.kept = 0  # decisions that kept the KV in the GPU's LRU cache

    def predicted_wait(self) -> float:
        """The predicted stall of a session between two calls (seconds)."""
        return self.mean_wait()

    def decide(self, call: Call, now: float, replica: KVCostView) -> RetentionDecision:
        tokens = call.input_tokens + call.output_tokens
        blocks = -(-tokens // replica.block_size)
        stall = self.predicted_wait()
        copy = replica.swap_time(tokens)
        if replica.host_capacity_blocks < blocks or stall < self.offload_factor * copy:
            self.kept += 1
            return RetentionDecision()
        self.offloaded += 1
        return RetentionDecision(swap_to_host=True, upload_after_s=max(0.0, stall - copy))
