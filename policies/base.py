"""Policy interfaces and the read-only views of cluster state that policies receive.

Policies never mutate the engine: they read a view and return a decision, and keep
their own state if they need it.  The engine (``sim/``) implements the view protocols.
Units: seconds, tokens, KV blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sim.workload.calls import Call


class ReplicaView(Protocol):
    """What a policy may read about one replica (a model on a TP group of GPUs)."""

    @property
    def replica_id(self) -> int: ...
    @property
    def model(self) -> str: ...
    @property
    def node(self) -> int:
        """Index of the node holding the replica's first GPU."""
        ...

    @property
    def gpus(self) -> tuple[int, ...]: ...
    @property
    def ready(self) -> bool:
        """True when the replica serves requests (loaded, not failed)."""
        ...

    @property
    def num_running(self) -> int: ...
    @property
    def num_waiting(self) -> int: ...
    @property
    def outstanding_requests(self) -> int:
        """Running plus waiting calls."""
        ...

    @property
    def outstanding_tokens(self) -> int:
        """Prefill tokens not yet computed plus output tokens not yet generated."""
        ...

    @property
    def kv_capacity_blocks(self) -> int: ...
    @property
    def kv_used_blocks(self) -> int:
        """Blocks allocated to sequences or holding cached prefixes."""
        ...

    @property
    def active_blocks(self) -> int:
        """Blocks referenced by running sequences (what decode reads)."""
        ...

    @property
    def block_size(self) -> int: ...
    @property
    def busy_s(self) -> float:
        """Seconds the replica's engine has spent iterating so far (GPU busy time)."""
        ...

    @property
    def pending_prefill_tokens(self) -> int:
        """Prompt tokens of queued and running calls whose KV is not computed yet."""
        ...

    def cached_prefix_tokens(self, call: Call) -> int:
        """Tokens of ``call``'s prompt whose KV is cached on this replica (prefix match)."""
        ...


class ReplicaWatch(Protocol):
    """Changes a router subscribed to (``ClusterView.watch_replicas``)."""

    def drain(self) -> Sequence[ReplicaView]:
        """The replicas whose load, queue, KV cache or readiness may have changed since
        the previous ``drain`` (the first one: every replica); any model, ready or not."""
        ...


class ClusterView(Protocol):
    """A read-only view of the whole cluster at the current simulated time."""

    @property
    def now(self) -> float: ...
    def replicas(self, model: str | None = None) -> Sequence[ReplicaView]:
        """All replicas (of ``model``), ready or not, in replica-id order."""
        ...

    def ready_replicas(self, model: str | None = None) -> Sequence[ReplicaView]:
        """Replicas of ``model`` that accept calls now, in replica-id order."""
        ...

    def models(self) -> Sequence[str]:
        """The deployed models (also those scaled to zero replicas)."""
        ...

    def live_replicas(self, model: str) -> Sequence[ReplicaView]:
        """Replicas of ``model`` that are serving or starting (not retiring or stopped)."""
        ...

    def pending_calls(self, model: str) -> int:
        """Calls of ``model`` held by the cluster because no replica of it is ready."""
        ...

    def prefix_holders(self, call: Call, model: str) -> Sequence[tuple[ReplicaView, int]]:
        """Every ready replica of ``model`` that caches part of ``call``'s prompt in HBM,
        in replica-id order, with its ``cached_prefix_tokens(call)`` (> 0); every other
        ready replica caches none of it.  The engine answers from an index of which
        replicas hold which prompt roots, so the cost does not grow with the replica
        count (the routers' way to ask all replicas at once)."""
        ...

    def watch_replicas(self) -> ReplicaWatch:
        """Subscribe to replica changes: a router that keeps its own ordered structure of
        candidates (a heap of loads) refreshes only the replicas a ``drain`` returns."""
        ...


class Router:
    """Chooses the replica that serves an LLM call.

    ``route`` receives the call and the ready replicas of the call's model (never
    empty, in replica-id order) and returns one of their ``replica_id``.  A router
    whose cost should not grow with the replica count asks the view's indexes instead of
    every candidate (``ClusterView.prefix_holders``, ``watch_replicas``; the contract is
    in ``docs/ARCHITECTURE.md``, "Routing at scale").  ``seed`` seeds any randomness.
    ``migrate_kv``: when True, the cluster may move the call's cached prefix from the
    replica holding most of it to the chosen one before the call starts, if the
    transfer over the topology is faster than recomputing it (see
    ``sim.cluster.cluster.Cluster.dispatch``).
    """

    policy_name = "router"
    migrate_kv = False
    #: True: ignore the view's indexes (``prefix_holders``, ``watch_replicas``) and score
    #: every candidate, the reference that ``tests/test_routing_index.py`` holds the
    #: indexed path to (decisions must be identical).
    full_scan = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        raise NotImplementedError


@dataclass(frozen=True)
class PairDecision:
    """A disaggregated router's answer for one call (replica ids).

    ``prefill == decode``: the decode instance prefills the call itself (local prefill,
    no KV transfer).  ``reject``: early rejection; the call fails at once with reason
    ``rejected_overload`` and uses no GPU time (``prefill``/``decode`` are ignored).
    """

    prefill: int
    decode: int
    reject: bool = False


class DisaggView(ClusterView, Protocol):
    """What a disaggregated router reads besides the cluster view (seconds, blocks)."""

    def prefill_time_s(self, replica: ReplicaView, tokens: int) -> float:
        """Seconds ``replica`` takes to prefill ``tokens`` tokens alone."""
        ...

    def transfer_time_s(self, call: Call, prefill: ReplicaView, decode: ReplicaView) -> float:
        """Seconds to send ``call``'s prompt KV from ``prefill`` to ``decode`` on idle links."""
        ...

    def decode_free_blocks(self, replica: ReplicaView) -> int:
        """KV blocks of ``replica`` neither held by running calls nor promised to
        transfers under way (what a new transfer could take)."""
        ...

    def decode_time_s(self, replica: ReplicaView, batch: int, context_tokens: int) -> float:
        """Seconds of one decode step of ``batch`` sequences holding ``context_tokens``."""
        ...


class PairRouter(Router):
    """Chooses the (prefill, decode) pair of a call on a disaggregated cluster.

    ``route_pair`` receives the call, the ready instances that may prefill it (prefill
    and mixed pools) and those that may decode it (decode and mixed pools; never empty),
    and returns a :class:`PairDecision`.  On a colocated cluster (no pools), ``route``
    is used as for any router: by default it picks the decode side alone.
    """

    def route_pair(
        self,
        call: Call,
        prefill: Sequence[ReplicaView],
        decode: Sequence[ReplicaView],
        view: DisaggView,
    ) -> PairDecision:
        raise NotImplementedError


class SeqView(Protocol):
    """What a batching policy may read about a queued or running call."""

    @property
    def call(self) -> Call: ...
    @property
    def arrival_s(self) -> float: ...
    @property
    def computed_tokens(self) -> int: ...
    @property
    def generated_tokens(self) -> int: ...
    @property
    def admit_s(self) -> float:
        """Time the call was first admitted to the running batch (NaN until then)."""
        ...


class BatchPolicy:
    """Orders the waiting queue of a replica (admission order and preemption victims).

    ``order`` returns the waiting sequences in the order the engine should try to
    admit them; the engine admits in that order until the token budget, the sequence
    limit or KV memory stops it (head-of-line blocking as in vLLM).  When memory runs
    out, the engine preempts the running sequence that ``preempt_victim`` names.
    ``on_iteration`` reports the tokens each sequence computed, for policies that
    track attained service.
    """

    policy_name = "batching"
    #: True when ``order`` may reorder the queue (the engine then calls it every step).
    reorders = False
    #: True when a waiting call may displace running ones: before each step, while the
    #: first call of ``order`` cannot be admitted and ``outranks`` the running call
    #: ``preempt_victim`` names, the engine preempts that call (priority preemption).
    preemptive = False

    def order(self, waiting: list[SeqView], now: float) -> list[SeqView]:
        return waiting

    def token_budget(self, max_num_batched_tokens: int, now: float) -> int:
        """Tokens (decodes + prefill chunks) the next step may schedule.  Default: the
        engine's ``max_num_batched_tokens`` (so results are unchanged).  The engine
        keeps the answer within ``[max_num_seqs, max_num_batched_tokens]`` so every
        running sequence can still decode (Sarathi-Serve-style budgets shape prefill
        chunks, never starve decodes)."""
        return max_num_batched_tokens

    def preempt_victim(self, running: Sequence[SeqView], now: float) -> int:
        """Index into ``running`` of the sequence to preempt (default: latest admitted)."""
        return len(running) - 1

    def outranks(self, waiting: SeqView, running: SeqView, now: float) -> bool:
        """Whether ``waiting`` should displace ``running`` (``preemptive`` policies only).
        Default: never."""
        return False

    #: True when ``admission_reserve`` may return more than 0 (the engine asks it then).
    reserves = False

    def admission_reserve(
        self, seq: SeqView, running: Sequence[SeqView], capacity_tokens: int, now: float
    ) -> int:
        """Tokens of KV memory that must stay available (free or evictable) after
        admitting ``seq`` while ``running`` run: a partition of the replica's KV
        capacity (``capacity_tokens``) that ``seq`` may not take (Tokencake's space
        scheduler reserves memory for critical agents this way).  Asked only when
        ``reserves``; never applied to an admission into an empty replica.  Default: 0."""
        return 0

    def on_tokens(self, call: Call, tokens: int, now: float) -> None:
        """Called with the tokens a call computed (prefill or decode) when it finishes
        a phase or the call ends.  Default: ignore."""

    def on_arrival(self, seq: SeqView, waiting: Sequence[SeqView], now: float) -> None:
        """Called when ``seq`` joins the replica's queue, before it is appended to
        ``waiting`` (the calls already queued).  Default: ignore."""


class KVCostView(Protocol):
    """What a retention policy may read about the replica where a call finished.

    Times in seconds, sizes in tokens and blocks.
    """

    @property
    def block_size(self) -> int: ...
    @property
    def active_blocks(self) -> int: ...
    @property
    def kv_capacity_blocks(self) -> int: ...
    @property
    def host_capacity_blocks(self) -> int:
        """Blocks of the replica's host-DRAM KV tier (0 when it has none; LRU when full)."""
        ...

    @property
    def num_waiting(self) -> int:
        """Calls queued on the replica, not admitted yet."""
        ...

    @property
    def outstanding_requests(self) -> int:
        """Running plus waiting calls on the replica."""
        ...

    @property
    def pending_prefill_tokens(self) -> int:
        """Prompt tokens of queued and running calls whose KV is not computed yet."""
        ...

    def recompute_time(self, tokens: int) -> float:
        """Seconds to prefill ``tokens`` tokens from scratch on this replica (alone)."""
        ...

    def swap_time(self, tokens: int) -> float:
        """Seconds to copy ``tokens`` tokens of KV one way between HBM and host DRAM."""
        ...


@dataclass(frozen=True, slots=True)
class RetentionDecision:
    """What to do with a finished call's KV blocks while its session waits.

    Attributes:
        pin_s: keep the session's cached prefix blocks from eviction for this many
            seconds (0: no pin, blocks are ordinary LRU cache entries).
        discard: drop the blocks now instead of caching them.
        swap_to_host: move the blocks to host DRAM (priced over PCIe) instead of HBM.
        upload_after_s: with ``swap_to_host``, start copying the blocks back into HBM
            this many seconds after the call finished (a predictive upload on the copy
            engine, overlapped with compute, so the session's next call finds them in
            HBM); None: they stay in host DRAM until a call needs them (loaded then).
    """

    pin_s: float = 0.0
    discard: bool = False
    swap_to_host: bool = False
    upload_after_s: float | None = None


class RetentionPolicy:
    """Decides what happens to a call's KV cache when the call finishes.

    ``on_call_arrived`` tells the policy that a call reached a replica (so a policy
    can learn how long sessions stay away between calls); ``on_call_finished``
    returns the decision for the finished call's blocks.  ``replica`` describes the
    replica for cost estimates.
    """

    policy_name = "retention"
    #: True: the engine evicts cached prefix blocks in the order of
    #: :meth:`eviction_rank` (highest first, least recently used among equals)
    #: instead of plain LRU.
    ranks_eviction = False
    #: True: on every arrival the engine asks :meth:`prefetch` which calls' prompts to
    #: load from the host tier into HBM ahead of time.
    prefetches = False

    def on_workload(self, calls: Sequence[Call]) -> None:
        """Calls of the workload with their session DAGs (``Call.parents``): the
        workflow's declared step graph, handed over before any of them is issued.  A
        workload in memory comes in one batch before replay; a generated one
        (:class:`~sim.workload.calls.LazyWorkload`) one session at a time, when the
        session comes due.  Parents come before children.  Default: ignore."""

    def on_call_arrived(self, call: Call, now: float) -> None:
        """A call was submitted to a replica at ``now``.  Default: ignore."""

    def eviction_rank(self, block_hash: int) -> int:
        """Eviction rank of the cached prefix entry ``block_hash`` (a chain hash of
        some prompt; a prefix-tree node): higher is evicted first.  Read only when
        ``ranks_eviction``.  Default: 0 (every entry equal: LRU)."""
        return 0

    def prefetch(self, call: Call, now: float) -> Sequence[Call]:
        """Calls whose prompts the replica that ``call`` just reached should load from
        its host tier into HBM now, the copy overlapped with compute.  Read only when
        ``prefetches``.  Default: none."""
        return ()

    def on_call_finished(
        self, call: Call, has_successor: bool, now: float, replica: KVCostView
    ) -> RetentionDecision:
        return RetentionDecision()


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """One replica to place: ``pp`` stages of ``tp`` GPUs each."""

    model: str
    tp: int
    pp: int
    replica_index: int


class TopologyView(Protocol):
    """What placement policies may read about the interconnect (``sim.specs.topology.Topology``)."""

    @property
    def num_gpus(self) -> int: ...
    @property
    def gpu_node(self) -> list[int]: ...
    def nvlink_islands(self) -> list[list[int]]: ...
    def gpu_path(self, a: int, b: int) -> Any: ...
    def group_bottleneck(self, gpus: tuple[int, ...]) -> Any: ...


class PlacementPolicy:
    """Chooses the GPUs of a new replica.

    ``place`` returns ``tp * pp`` distinct GPU indices from ``free`` (stage-major: the
    first ``tp`` form stage 0), or ``None`` when the replica cannot be placed.
    """

    policy_name = "placement"

    def place(
        self, request: PlacementRequest, topology: TopologyView, free: Sequence[int]
    ) -> tuple[int, ...] | None:
        raise NotImplementedError


class Autoscaler:
    """Decides how many replicas each model should have.

    Every ``interval_s`` seconds of simulated time (never when 0) the cluster calls
    ``decide`` with the read-only view; it returns the desired replica count per
    model (models left out keep their count).  Scaling up places a replica that pays
    a cold start (weight load + engine init) before it serves; scaling down stops
    routing to a replica and frees its GPUs once its calls drain.
    """

    policy_name = "autoscaler"
    interval_s: float = 0.0

    def decide(self, view: ClusterView, now: float) -> dict[str, int]:
        return {}


class PoolView(ClusterView, Protocol):
    """What a prefill/decode planner reads besides the cluster view."""

    def roles(self) -> dict[int, str]:
        """Pool role of every ready instance (replica id -> prefill / decode / mixed)."""
        ...

    def recent_latency(self, since_s: float) -> tuple[list[float], list[float]]:
        """TTFT and TPOT (s) of the pooled calls that completed since ``since_s``."""
        ...


class PoolPlanner(Autoscaler):
    """Moves instances between the prefill and decode pools (``[[pools]]``).

    Every ``interval_s`` the cluster calls ``plan`` with a :class:`PoolView`; it returns
    the role each moved instance takes (replica id -> role).  A moved instance stops
    taking calls, drains, and restarts in its new role, paying a cold start.
    """

    def plan(self, view: PoolView, now: float) -> dict[int, str]:
        raise NotImplementedError
