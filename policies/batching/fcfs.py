"""First come, first served admission (vLLM's default)."""

from __future__ import annotations

from policies.base import BatchPolicy
from policies.registry import register


@register("batching", "fcfs")
class FCFS(BatchPolicy):
    """Admit waiting calls in arrival order; preempt the latest admitted when out of memory.

    Rule: vLLM's scheduler: running decodes first, then waiting prefills in arrival
    order within the token budget; a preempted call returns to the queue head.
    No parameters.  Reference: vLLM ``core/scheduler.py`` (FCFS policy).
    """
