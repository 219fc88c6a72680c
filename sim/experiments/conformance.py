"""Conformance checks that every registered policy (built-in or plugin) must pass.

:func:`check_policy` runs them on one policy and raises :class:`ConformanceError`
listing every failed check; ``tests/test_policy_conformance.py`` runs it on every
registered policy, and a plugin author runs it on theirs (``docs/policies.md``)::

    from policies import load_plugin
    from sim.experiments.conformance import check_policy

    (info,) = load_plugin("my_router.py")
    check_policy(info.kind, info.name)

The checks: the policy constructs from its defaults; ``describe()`` gives a line with a
description (the class docstring); its decisions on hand-set views are valid (a router
returns one of the offered replicas; a batching policy returns a permutation of the
queue, a victim index within the running list and a token budget >= 1; a retention
policy returns a :class:`~policies.base.RetentionDecision` with a finite pin >= 0 and
not both discard and swap); the same seed gives the same decisions; and a small
simulation under it ends every call exactly once, twice identically.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from policies import registry
from policies.base import RetentionDecision
from sim.cluster.config import ClusterConfig, Deployment, NodeGroup, PolicyConfig, validate
from sim.costmodel.base import RooflineCostModel
from sim.workload.calls import Call, Workload, topo_order

#: The cluster config field that names a policy of each kind.
FIELD = {
    "routing": "router",
    "batching": "batching",
    "retention": "retention",
    "placement": "placement",
    "autoscaling": "autoscaler",
    "persistence": "persistence",
}


class ConformanceError(AssertionError):
    """A policy failed one or more conformance checks (the message lists them)."""


@dataclass
class FakeReplica:
    """A hand-set :class:`~policies.base.ReplicaView` whose every number the caller sets
    (conformance checks and policy unit tests; no engine behind it)."""

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
    busy_s: float = 0.0
    cached: dict[str, int] = field(default_factory=dict)  # call_id -> cached tokens

    @property
    def outstanding_requests(self) -> int:
        return self.num_running + self.num_waiting

    def cached_prefix_tokens(self, call: Call) -> int:
        return self.cached.get(call.call_id, 0)


@dataclass
class FakeCluster:
    """A hand-set :class:`~policies.base.ClusterView` over :class:`FakeReplica` s."""

    reps: list[FakeReplica]
    now: float = 0.0
    pending: dict[str, int] = field(default_factory=dict)  # model -> queued calls

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

    def prefix_holders(self, call: Call, model: str) -> list[tuple[FakeReplica, int]]:
        out = []
        for r in self.ready_replicas(model):
            tokens = r.cached_prefix_tokens(call)
            if tokens > 0:
                out.append((r, tokens))
        return out

    def watch_replicas(self) -> _WatchAll:
        return _WatchAll(self)


@dataclass
class _WatchAll:
    """A hand-set view's replica watch: every replica may have changed (fakes are set
    by hand between calls, so none is tracked)."""

    cluster: FakeCluster

    def drain(self) -> list[FakeReplica]:
        return list(self.cluster.reps)


@dataclass
class FakeSeq:
    """A hand-set :class:`~policies.base.SeqView`."""

    call: Call
    arrival_s: float
    computed_tokens: int = 0
    generated_tokens: int = 0
    admit_s: float = math.nan


@dataclass
class _Cost:
    """A hand-set :class:`~policies.base.KVCostView` (times linear in tokens)."""

    block_size: int = 16
    active_blocks: int = 100
    kv_capacity_blocks: int = 1000
    host_capacity_blocks: int = 1000
    num_waiting: int = 2
    outstanding_requests: int = 6
    pending_prefill_tokens: int = 3000

    def recompute_time(self, tokens: int) -> float:
        return 1e-4 * tokens

    def swap_time(self, tokens: int) -> float:
        return 2e-5 * tokens


def _calls(n: int = 6) -> list[Call]:
    return [
        Call(f"c{i}", f"s{i % 3}", "llm", (), 0.1 * i, 0.0, None, 200 + 50 * i, 8, (), 16)
        for i in range(n)
    ]


def _check_router(make: Callable[[], Any]) -> list[str]:
    def decisions() -> list[int]:
        router = make()
        calls = _calls(12)
        reps = [
            FakeReplica(0, num_running=2, num_waiting=1, outstanding_tokens=900, kv_used_blocks=40),
            FakeReplica(1, cached={c.call_id: 160 for c in calls}),
            FakeReplica(2, num_running=1, num_waiting=3, outstanding_tokens=4000),
        ]
        view = FakeCluster(reps)
        out = []
        for k, call in enumerate(calls):
            offered = reps if k % 3 else reps[1:]
            out.append(router.route(call, offered, view))
            ids = {r.replica_id for r in offered}
            if out[-1] not in ids:
                raise ConformanceError(f"route returned {out[-1]!r}, not one of {sorted(ids)}")
        return out

    try:
        first = decisions()
    except ConformanceError as e:
        return [str(e)]
    return (
        [] if decisions() == first else ["routing decisions differ between two runs with one seed"]
    )


def _check_batching(make: Callable[[], Any]) -> list[str]:
    pol = make()
    problems = []
    seqs = [FakeSeq(c, c.issue_time_s, 16 * i, i) for i, c in enumerate(_calls())]
    for s in seqs[:3]:
        pol.on_arrival(s, seqs[: seqs.index(s)], s.arrival_s)
    got = list(pol.order(list(seqs), 1.0))
    if sorted(map(id, got)) != sorted(map(id, seqs)):
        problems.append("order() did not return a permutation of the waiting sequences")
    v = pol.preempt_victim(seqs[:4], 1.0)
    if not (isinstance(v, int) and 0 <= v < 4):
        problems.append(f"preempt_victim returned {v!r}, not an index in [0, 4)")
    b = pol.token_budget(4096, 1.0)
    if not (isinstance(b, int) and b >= 1):
        problems.append(f"token_budget returned {b!r}, not an integer >= 1")
    return problems


def _check_retention(make: Callable[[], Any]) -> list[str]:
    pol = make()
    problems = []
    for k, call in enumerate(_calls()):
        pol.on_call_arrived(call, call.issue_time_s)
        d = pol.on_call_finished(call, k % 2 == 0, call.issue_time_s + 1.0, _Cost())
        if not isinstance(d, RetentionDecision):
            problems.append(f"on_call_finished returned {d!r}, not a RetentionDecision")
        elif not (math.isfinite(d.pin_s) and d.pin_s >= 0) or (d.discard and d.swap_to_host):
            problems.append(f"illegal retention decision {d!r}")
    return problems[:1]


_DECISIONS: dict[str, Callable[[Callable[[], Any]], list[str]]] = {
    "routing": _check_router,
    "batching": _check_batching,
    "retention": _check_retention,
}


def small_cluster(kind: str, name: str) -> ClusterConfig:
    """Two Llama-2-7B replicas (TP=1) on one node under ``name`` for ``kind``."""
    cfg = ClusterConfig(
        name="conformance",
        nodes=(NodeGroup("dgx-a100", 1, 8),),
        deployments=(
            Deployment(model="llama-2-7b", tp=1, replicas=2, max_num_seqs=4, max_model_len=8192),
        ),
        source="<conformance>",
    )
    fields: dict[str, Any] = {FIELD[kind]: name}
    return validate(replace(cfg, policies=replace(PolicyConfig(), **fields)))


def _simulate_checks(kind: str, name: str, seed: int) -> list[str]:
    from sim.simulation import simulate

    calls = []
    for s in range(4):
        prev: tuple[str, ...] = ()
        for k in range(3):
            cid = f"s{s}-{k}"
            calls.append(Call(cid, f"s{s}", "llm", prev, 0.05 * s, 0.2 * bool(prev), None,
                              300 + 400 * k, 12, (), 16))  # fmt: skip
            prev = (cid,)
    wl = Workload(topo_order(calls), name="conformance")
    cfg = small_cluster(kind, name)
    try:
        runs = [
            simulate(
                wl, cfg, seed=seed, cost_model=RooflineCostModel(), check_invariants=True
            ).calls
            for _ in range(2)
        ]
    except Exception as e:  # the policy broke the simulation: report it as a failed check
        return [f"a small simulation under it failed: {type(e).__name__}: {e}"]
    problems = []
    ids = list(runs[0]["call_id"])
    if sorted(ids) != sorted(c.call_id for c in calls):
        problems.append(f"the simulation ended {len(ids)} calls, not each of {len(calls)} once")
    bad = runs[0][runs[0]["status"] != "completed"]
    if len(bad):
        problems.append(f"{len(bad)} calls did not complete (e.g. {bad.iloc[0]['call_id']})")
    if not runs[0].equals(runs[1]):
        problems.append("two simulations with one seed differ")
    return problems


def check_policy(kind: str, name: str, seed: int = 0) -> None:
    """Run every conformance check on the registered policy ``kind``/``name``; raises
    :class:`ConformanceError` naming each failed check."""
    info = registry.get_info(kind, name)
    problems: list[str] = []
    line = info.describe()
    if not info.description:
        problems.append("no description (give the class a docstring)")
    if not line.startswith(f"{kind} {name}"):
        problems.append(f"describe() gave {line!r}")
    extra: dict[str, Any] = {"seed": seed}

    def make() -> Any:
        return registry.create(kind, name, **extra)

    try:
        make()
    except Exception as e:
        raise ConformanceError(f"{kind} {name}: does not construct from its defaults: {e}") from e
    if kind in _DECISIONS:
        problems += _DECISIONS[kind](make)
    problems += _simulate_checks(kind, name, seed)
    if problems:
        raise ConformanceError(f"{kind} {name}: " + "; ".join(problems))
