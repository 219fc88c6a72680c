"""Autellix ATLAS: attained service along a multi-threaded program's critical path."""

from __future__ import annotations

from policies.batching.plas import PLAS, Program
from policies.registry import register


@register("batching", "atlas")
class ATLAS(PLAS):
    """Autellix ATLAS: like PLAS, but a program's service is its longest critical path.

    Rule (Autellix Algorithm 1, line 4): the process table keeps one scalar per
    program, the longest critical-path service observed so far (seconds).  A call
    takes that value when it arrives, ``p(c)``; when it finishes the table becomes
    ``max(service, p(c) + model time of c)``.  So parallel calls of one program share
    one priority (gang-scheduled), and a program's priority grows with the length of
    its critical path, not with its total work.  No dependency tracking is needed.
    Queues, admission order, anti-starvation (``beta``) and preemption victims are
    PLAS's.  Parameters: as ``plas`` (``num_queues`` 8, ``quantum_s`` 1.0 s, ``beta`` 10).
    Reference: Luo et al., "Autellix", arXiv 2502.13965 (2025), Section 4.2.1
    (multi-threaded programs) and Algorithm 1.
    """

    def update_service(self, prog: Program, prio_s: float, model_s: float) -> None:
        prog.service_s = max(prog.service_s, prio_s + model_s)
