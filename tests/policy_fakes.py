"""Hand-set replica and cluster views for policy unit tests (no engine)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sim.workload.calls import Call


@dataclass
class FakeReplica:
    """A ``policies.base.ReplicaView`` whose every number is set by the test."""

    replica_id: int
    model: str = "m"
    node: int = 0
    gpus: tuple[int, ...] = (0,)
    ready: bool = True
    num_running: int = 0
    num_waiting: int = 0
    outstanding_tokens: int = 0
    kv_capacity_blocks: int = 1000
    kv_used_blocks: int = 0
    active_blocks: int = 0
    block_size: int = 16
    pending_prefill_tokens: int = 0
    cached: dict[str, int] = field(default_factory=dict)  # call_id -> cached tokens

    @property
    def outstanding_requests(self) -> int:
        return self.num_running + self.num_waiting

    def cached_prefix_tokens(self, call: Call) -> int:
        return self.cached.get(call.call_id, 0)


@dataclass
class FakeCluster:
    """A ``policies.base.ClusterView`` over fake replicas."""

    reps: list[FakeReplica]
    now: float = 0.0
    pending: dict[str, int] = field(default_factory=dict)

    def replicas(self, model: str | None = None) -> Sequence[FakeReplica]:
        return [r for r in self.reps if model is None or r.model == model]

    def ready_replicas(self, model: str | None = None) -> Sequence[FakeReplica]:
        return [r for r in self.replicas(model) if r.ready]

    def models(self) -> Sequence[str]:
        return sorted({r.model for r in self.reps})

    def live_replicas(self, model: str) -> Sequence[FakeReplica]:
        return self.replicas(model)

    def pending_calls(self, model: str) -> int:
        return self.pending.get(model, 0)
