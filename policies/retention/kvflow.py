"""KVFlow: evict cached prefixes by steps-to-execution on the workflow's step graph."""

from __future__ import annotations

from collections.abc import Sequence

from policies.base import KVCostView, RetentionDecision, RetentionPolicy
from policies.registry import register
from sim.common.errors import PolicyError
from sim.workload.calls import Call

#: Rank of an entry that no pending call needs (above any steps-to-execution).
_UNNEEDED = 1 << 30


@register("retention", "kvflow")
class KVFlow(RetentionPolicy):
    """KVFlow: workflow-aware prefix-cache eviction and overlapped prefetch.

    Rule.  The Agent Step Graph is the workload's session DAG (``Call.parents``, handed
    over once by ``on_workload``: the workflow declares its schedule, as KVFlow's
    frontend sends it with each request).  A call's *step* is the number of LLM calls
    on the longest path before it in its session (tool calls add none).  A session's
    current step is the largest step among its calls that reached a replica.  The
    *steps-to-execution* of a call is its step minus its session's current step (0
    from its arrival until it finishes).  A cached prefix entry (a chain hash: a node
    of the prefix tree) is needed by every unfinished call whose prompt contains it;
    its eviction rank is the minimum steps-to-execution over those calls (a node shared
    by several agents is kept for the one that runs soonest), capped at ``max_steps``
    when that is set; an entry no unfinished call needs ranks above every needed one.
    When HBM must free blocks, the engine evicts the highest rank first and, among
    equal ranks, the least recently used (``ranks_eviction``), instead of plain LRU.
    Prefetch: when a call reaches a replica or finishes there, the prompts of its
    session's pending calls within ``prefetch_steps`` steps are loaded from the
    replica's host tier into HBM, evicting only entries needed later than they are,
    the copy overlapped with compute (``prefetches``), so that their calls hit in HBM
    instead of stalling on the load.  A finished call's blocks stay cached (no pin, no
    discard); run with a host tier that holds evicted prefixes (``cpu_offload_gib`` >
    0, like SGLang HiCache's write-through hierarchy) for prefetch to have something
    to load.

    Parameters: ``max_steps`` (int, steps; 0 = no cap, the paper's rule; k > 0: ranks
    at or above k are equally far and evicted in LRU order, as the authors' code caps
    them at ``evict_pri_level - 1`` = 3), ``prefetch_steps`` (int, steps; 1: "agents
    scheduled in the next step"; 0 turns prefetch off).
    Reference: Pan et al., "KVFlow: Efficient Prefix Caching for Accelerating
    LLM-Based Multi-Agent Workflows", NeurIPS 2025, arXiv 2507.07400 (Agent Step Graph,
    steps-to-execution, node priority = min over the agents sharing it, fully
    overlapped CPU-to-GPU prefetch); code github.com/PanZaifeng/KVFlow.
    """

    ranks_eviction = True
    prefetches = True

    def __init__(self, max_steps: int = 0, prefetch_steps: int = 1) -> None:
        if max_steps < 0 or prefetch_steps < 0:
            raise PolicyError("kvflow: max_steps >= 0 and prefetch_steps >= 0")
        self.max_steps = max_steps
        self.prefetch_steps = prefetch_steps
        self._step: dict[str, int] = {}  # call id -> its step in its session
        self._frontier: dict[str, int] = {}  # session -> current step
        # session -> its pending LLM calls, ascending step
        self._pending: dict[str, list[Call]] = {}
        # chain hash -> session -> steps of that session's pending calls containing it
        self._needs: dict[int, dict[str, list[int]]] = {}
        self._arrived: set[str] = set()
        self._done: set[str] = set()

    def on_workload(self, calls: Sequence[Call]) -> None:
        step: dict[str, int] = {}
        after: dict[str, int] = {}  # call id -> step of a call that follows it
        for c in calls:  # parents come first (Workload's order)
            s = max((after[p] for p in c.parents if p in after), default=0)
            step[c.call_id] = s
            after[c.call_id] = s + 1 if c.is_llm else s
        sessions: set[str] = set()
        hashes: set[int] = set()
        for c in calls:
            if not c.is_llm:
                continue
            s = step[c.call_id]
            self._step[c.call_id] = s
            self._pending.setdefault(c.session_id, []).append(c)
            sessions.add(c.session_id)
            for h in c.prefix_hashes:
                self._needs.setdefault(h, {}).setdefault(c.session_id, []).append(s)
                hashes.add(h)
        for sid in sessions:  # only what these calls touched (sessions arrive in batches)
            self._pending[sid].sort(key=lambda c: self._step[c.call_id])
        for h in hashes:
            for sid in sessions & self._needs[h].keys():
                self._needs[h][sid].sort()

    def steps_to_execution(self, call: Call) -> int:
        """Steps until a pending ``call`` runs (0: its session's current step)."""
        return self._step[call.call_id] - self._frontier.get(call.session_id, 0)

    def on_call_arrived(self, call: Call, now: float) -> None:
        cid = call.call_id
        if cid not in self._step or cid in self._arrived:
            return  # not in the declared graph, or a retry
        self._arrived.add(cid)
        s = self._step[cid]
        sid = call.session_id
        self._frontier[sid] = max(self._frontier.get(sid, 0), s)
        self._pending[sid].remove(call)

    def on_call_finished(
        self, call: Call, has_successor: bool, now: float, replica: KVCostView
    ) -> RetentionDecision:
        cid = call.call_id
        if cid in self._arrived and cid not in self._done:
            self._done.add(cid)
            self._forget(call)
        return RetentionDecision()

    def _forget(self, call: Call) -> None:
        """``call`` no longer needs its prompt (it finished)."""
        s = self._step[call.call_id]
        sid = call.session_id
        for h in call.prefix_hashes:
            by_session = self._needs[h]
            steps = by_session[sid]
            steps.remove(s)
            if not steps:
                del by_session[sid]
                if not by_session:
                    del self._needs[h]

    def eviction_rank(self, block_hash: int) -> int:
        cap = self.max_steps or _UNNEEDED
        best = cap
        frontier = self._frontier
        for sid, steps in self._needs.get(block_hash, {}).items():
            d = steps[0] - frontier.get(sid, 0)
            if d < best:
                best = max(d, 0)
                if not best:
                    break
        return best

    def prefetch(self, call: Call, now: float) -> Sequence[Call]:
        if not self.prefetch_steps:
            return ()
        out = []
        for c in self._pending.get(call.session_id, ()):
            d = self.steps_to_execution(c)
            if d > self.prefetch_steps:
                break
            if d > 0:
                out.append(c)
        return out
