"""Wire a workload, a cluster and policies together and run the simulation.

The workload driver is closed loop: root calls are issued at their recorded times
(divided by ``load_scale``); any other call is issued ``gap_s`` after its last parent
finishes.  Tool calls take ``tool_duration_s`` of wall time and no GPU.  A call whose
parent failed fails too (reason ``parent_failed``): every call ends exactly once.
"""

from __future__ import annotations

import gc
import math
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import simpy

from policies import registry
from policies.base import PoolPlanner, Router
from sim.cluster.cluster import Cluster
from sim.cluster.config import ClusterConfig
from sim.cluster.disagg import Disaggregation
from sim.cluster.faults import FaultInjector, FaultSchedule
from sim.common import native
from sim.common.errors import ConfigError
from sim.costmodel.base import CostModel
from sim.costmodel.loader import resolve_cost_model
from sim.engine.replica import Seq
from sim.metrics.recorder import CallRecord, Recorder, percentiles, session_frame, summarize
from sim.workload.calls import AnyWorkload, Call, LazyWorkload, Workload

TIMELINE_COLUMNS = ["time_s", "replica", "running", "waiting", "kv_used_blocks", "kv_active_blocks"]


@dataclass
class SimResult:
    """Everything a run produces (see :mod:`sim.report.results` for how it is written)."""

    summary: dict[str, Any]
    calls: pd.DataFrame
    sessions: pd.DataFrame
    timeline: pd.DataFrame
    replicas: pd.DataFrame
    config: dict[str, Any]
    perf: dict[str, float | str] = field(default_factory=dict)
    #: KV transfers per directed link of a disaggregated run (``kv_links.csv``; empty
    #: otherwise): ``link`` ("from->to"), ``type``, ``transfers``, ``bytes``.
    links: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass(slots=True, eq=False)
class _Session:
    """A chunk of the workload the driver holds: one session of a lazy workload (the
    whole trace of one in memory) and how many of its calls have not ended.  It does
    not hold its calls: a call's node is dropped when the call ends."""

    serial: int
    left: int


@dataclass(slots=True, eq=False)
class _Node:
    """One call the driver holds: the calls that wait for it and how many parents it
    still waits for."""

    call: Call
    session: _Session
    children: list[_Node]
    waiting: int
    issued_s: float = math.nan
    ended: bool = False


class Driver:
    """Issues a workload's calls into the cluster, closed loop.

    The workload comes in chunks: a :class:`Workload` is one chunk, a
    :class:`LazyWorkload` one per session.  A chunk is taken when the previous one's
    last root call has been issued (so a lazy workload's next session is generated
    when the one before it starts) and forgotten once all its calls have ended; each
    call's node is dropped as soon as the call ends (nothing refers to it afterwards:
    its parents have ended, its children are held by ``index``), so a session in
    flight holds only the calls still to end.
    """

    def __init__(
        self, env: simpy.Environment, workload: AnyWorkload, load_scale: float, recorder: Recorder
    ) -> None:
        if not (load_scale > 0 and math.isfinite(load_scale)):
            raise ConfigError(f"--load-scale must be a positive number, got {load_scale}")
        self.env = env
        self.load_scale = load_scale
        self.recorder = recorder
        self.source = workload.source or workload.name
        self._chunks: Iterator[list[Call]] = (
            workload.open_sessions()
            if isinstance(workload, LazyWorkload)
            else iter((workload.calls,))
        )
        self.index: dict[str, _Node] = {}  # call id -> node, for the calls not ended
        self.live: dict[int, _Session] = {}  # chunks with calls not ended, by serial
        self.roots: deque[_Node] = deque()  # root calls not issued yet, in issue order
        self.pulled = 0  # calls taken from the workload so far
        self.sessions = 0  # chunks taken that had calls
        self.done = 0
        self.exhausted = False
        self._last_root_s = -math.inf
        self.cluster: Cluster | None = None

    def start(self, cluster: Cluster) -> None:
        """Take the first chunk and schedule its first roots."""
        self.cluster = cluster
        self._pull()
        self._schedule_roots()

    def finished(self) -> bool:
        return self.exhausted and self.done == self.pulled

    def unfinished(self) -> list[str]:
        """Ids of the calls taken that have not ended."""
        return [n.call.call_id for n in self.index.values() if not n.ended]

    # ---- the workload, chunk by chunk -----------------------------------------------
    def _pull(self) -> None:
        """Take chunks until one has a root call to issue, or the workload is exhausted."""
        while not self.roots:
            calls = next(self._chunks, None)
            if calls is None:
                self.exhausted = True
                return
            if calls:
                self._take(calls)

    def _take(self, calls: list[Call]) -> None:
        chunk = _Session(self.sessions, len(calls))
        nodes: list[_Node] = []
        index = self.index
        for c in calls:
            node = _Node(c, chunk, [], len(c.parents))
            nodes.append(node)
            index[c.call_id] = node
        for node in nodes:
            for p in node.call.parents:
                parent = index.get(p)
                if parent is None:  # a lazy session must hold its calls' parents
                    raise ConfigError(
                        f"{self.source}: call {node.call.call_id!r}: parent {p!r} is not in "
                        "its session"
                    )
                parent.children.append(node)
        roots = sorted((n for n in nodes if not n.call.parents), key=_issue_time)
        if roots and roots[0].call.issue_time_s < self._last_root_s:
            raise ConfigError(
                f"{self.source}: session {roots[0].call.session_id!r} starts at "
                f"{roots[0].call.issue_time_s} s, before a session generated earlier "
                f"({self._last_root_s} s): a lazy workload's sessions must come in start order"
            )
        if roots:
            self._last_root_s = roots[-1].call.issue_time_s
        self.roots.extend(roots)
        self.live[self.sessions] = chunk
        self.pulled += len(calls)
        self.sessions += 1
        assert self.cluster is not None
        self.cluster.declare(calls)  # the step graph, before any of them issues

    def _forget(self, chunk: _Session) -> None:
        self.live.pop(chunk.serial, None)

    # ---- arrivals -------------------------------------------------------------------
    def _schedule_roots(self) -> None:
        if not self.roots:
            return
        t = self.roots[0].call.issue_time_s / self.load_scale
        ev = self.env.timeout(max(0.0, t - self.env.now))
        ev.callbacks.append(self._on_roots)

    def _on_roots(self, _: simpy.Event) -> None:
        roots = self.roots
        t = roots[0].call.issue_time_s
        while roots and roots[0].call.issue_time_s == t:
            self.issue(roots.popleft())
            if not roots:  # the next session may start at the same instant
                self._pull()
        self._schedule_roots()

    def _issue_cb(self, node: _Node, _: simpy.Event) -> None:
        self.issue(node)

    def issue(self, node: _Node) -> None:
        call = node.call
        now = self.env.now
        node.issued_s = now
        if call.kind == "tool":
            ev = self.env.timeout(call.tool_duration_s)
            ev.callbacks.append(lambda _e: self.end(node, "completed", "", None))
            return
        assert self.cluster is not None
        self.cluster.issue(call, now, bool(node.children))

    # ---- completions ----------------------------------------------------------------
    def on_call_done(
        self, call: Call, now: float, status: str, reason: str, seq: Seq | None
    ) -> None:
        self.end(self.index[call.call_id], status, reason, seq)

    def end(
        self, node: _Node, status: str, reason: str, seq: Seq | None, replica: int = -1
    ) -> None:
        if node.ended:
            raise RuntimeError(f"call {node.call.call_id} ended twice")
        node.ended = True
        self.done += 1
        chunk = node.session
        chunk.left -= 1
        call = node.call
        if self.index.get(call.call_id) is node:
            del self.index[call.call_id]
        now = self.env.now
        issue = node.issued_s
        if math.isnan(issue):
            issue = now  # never issued: a parent failed
        if seq is not None:
            self.recorder.add(
                CallRecord(
                    call.call_id,
                    call.session_id,
                    call.kind,
                    call.model,
                    seq.replica_id,
                    status,
                    reason,
                    issue,
                    seq.admit_s,
                    seq.first_token_s,
                    now,
                    seq.call.input_tokens,  # as served (truncated to max_model_len)
                    seq.call.output_tokens,
                    seq.num_cached_tokens,
                    seq.preemptions,
                    seq.num_output_tokens,
                    seq.failovers,
                )
            )
        else:
            first = now if (call.kind == "tool" and status == "completed") else math.nan
            fin = now if status == "completed" else math.nan
            self.recorder.add(
                CallRecord(
                    call_id=call.call_id,
                    session_id=call.session_id,
                    kind=call.kind,
                    model=call.model,
                    replica=replica,
                    status=status,
                    reason=reason,
                    issue_s=issue,
                    admit_s=math.nan,
                    first_token_s=first,
                    finish_s=fin,
                    input_tokens=call.input_tokens,
                    output_tokens=call.output_tokens,
                    cached_tokens=0,
                    preemptions=0,
                    generated_tokens=0,
                    failovers=0,
                )
            )
        call.forget_hashes()  # a deferred tuple: the KV cache keeps what it caches
        for child in node.children:
            if child.ended:
                continue
            if status != "completed":
                self.end(child, "failed", "parent_failed", None)
                continue
            child.waiting -= 1
            if child.waiting == 0:
                gap = child.call.gap_s
                if gap > 0:
                    ev = self.env.timeout(gap)
                    ev.callbacks.append(partial(self._issue_cb, child))
                else:
                    self.issue(child)
        if chunk.left == 0:
            self._forget(chunk)


def _issue_time(node: _Node) -> float:
    return node.call.issue_time_s


#: Calls from which :func:`simulate` collects the engine's reference cycles before it
#: builds the output frames (below that the engine is small, and the cyclic GC frees it
#: in due course).
COLLECT_ENGINE_CALLS = 50_000


def simulate(
    workload: AnyWorkload,
    cfg: ClusterConfig,
    seed: int = 0,
    load_scale: float = 1.0,
    cost_model: CostModel | None = None,
    router: Router | None = None,
    progress: bool = False,
    check_invariants: bool = False,
    on_progress: Callable[[float, int, int], None] | None = None,
    progress_label: str = "simulating",
    faults: FaultSchedule | None = None,
) -> SimResult:
    """Run one simulation and return its results.

    Args:
        workload: the calls to replay.
        cfg: the cluster (nodes, deployments, policies by name).
        seed: seeds every policy's randomness; same seed, same result.
        load_scale: arrival-rate multiplier for root calls (2.0 doubles the load).
        cost_model: overrides the one named by ``cfg`` (default: the GPU's default,
            :data:`sim.costmodel.loader.DEFAULT_COSTMODEL_BY_GPU`).
        router: a router instance to use instead of ``cfg.policies.router``.
        progress: show a progress bar on stderr (only when it is a terminal): calls
            done, simulated time against the trace's span, events per second.
        check_invariants: assert KV and token accounting at every iteration (slow; tests).
        faults: a fault schedule to inject (``sim/cluster/faults.py``); session state survives
            faults as ``cfg.policies.persistence`` says.  With faults the run ends when
            the last call ends (faults and repairs scheduled later are not applied).
    """
    sim = build_simulation(
        workload, cfg, seed, load_scale, cost_model, router, check_invariants, faults
    )
    sim.run(progress, on_progress, progress_label)
    out = take_outputs(sim)
    # Release the engine (KV caches, prefix index, replicas, driver, events) before the
    # output frames are built: at scale it is the largest thing alive.  It holds
    # reference cycles (processes <-> environment, replicas <-> cluster), hence collect(),
    # in a run big enough for that to matter: a full collection costs tens of
    # milliseconds, which would triple the time of a small run (a sweep point, a test).
    del sim
    if out.recorder.spilled + len(out.recorder.rows) >= COLLECT_ENGINE_CALLS:
        gc.collect()
    return build_result(out)


@dataclass
class Simulation:
    """A built simulation: the SimPy environment with the workload driver, the cluster
    and (with a fault schedule) the fault injector wired together and started.
    :meth:`run` advances it until every call has ended; :func:`collect` reads the result."""

    env: simpy.Environment
    workload: AnyWorkload
    cfg: ClusterConfig
    seed: int
    load_scale: float
    cost_model: CostModel
    recorder: Recorder
    driver: Driver
    cluster: Cluster
    injector: FaultInjector | None
    t0: float  # perf_counter when building began (wall times are measured from it)
    events: int = 0
    sim_wall_s: float = 0.0

    def run(
        self,
        progress: bool = False,
        on_progress: Callable[[float, int, int], None] | None = None,
        progress_label: str = "simulating",
    ) -> None:
        """Step the environment until every call has ended (see :func:`simulate`)."""
        env, driver, injector = self.env, self.driver, self.injector
        events = 0
        bar = None
        if progress:
            from sim.common.progress import ProgressBar

            wl = self.workload
            if isinstance(wl, LazyWorkload):  # not generated yet: no total, no span
                bar = ProgressBar(None, math.nan, progress_label)
            else:
                span = max((c.issue_time_s for c in wl.calls if not c.parents), default=0.0)
                bar = ProgressBar(len(wl.calls), span / self.load_scale, progress_label)
        step = env.step
        # The loop allocates millions of small long-lived objects (KV entries, call state)
        # and creates no garbage cycles; the cyclic GC would rescan them all at every full
        # collection (about a third of the loop's time at 100k calls).  Reference counting
        # still frees everything as usual; the GC state is restored afterwards.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            while True:
                if injector is not None and driver.finished():
                    break
                step()
                events += 1
                if not events & 0xFF:
                    if bar is not None:
                        bar.update(env.now, driver.done, events)
                    if on_progress is not None and not events & 0x3FFF:
                        on_progress(env.now, driver.done, events)
        except simpy.core.EmptySchedule:
            pass
        finally:
            if gc_was_enabled:
                gc.enable()
            if bar is not None:
                bar.close()
        self.events = events
        self.sim_wall_s = time.perf_counter() - self.t0
        if not driver.finished():
            stuck = driver.unfinished()
            raise RuntimeError(
                f"simulation ended with {driver.pulled - driver.done} calls unfinished, "
                f"e.g. {stuck[:5]}"
            )


def build_simulation(
    workload: AnyWorkload,
    cfg: ClusterConfig,
    seed: int = 0,
    load_scale: float = 1.0,
    cost_model: CostModel | None = None,
    router: Router | None = None,
    check_invariants: bool = False,
    faults: FaultSchedule | None = None,
) -> Simulation:
    """Create the policies, the cluster, the driver and the fault injector (arguments as
    for :func:`simulate`) and schedule their first events; nothing has run yet."""
    t0 = time.perf_counter()
    env = simpy.Environment()
    recorder = Recorder()
    driver = Driver(env, workload, load_scale, recorder)
    cm = cost_model or resolve_cost_model(cfg.costmodel, gpu=cfg.gpu)
    registry.load_plugins(cfg.plugins)  # a no-op where loaded (not in a sweep worker)
    pol = cfg.policies
    prefill_router = None
    if cfg.pools:
        _check_pools_supported(cfg, faults)
        prefill_router = registry.create("routing", pol.router, seed=seed)
    cluster = Cluster(
        env,
        cfg,
        cm,
        router or registry.create("routing", pol.router, seed=seed),
        lambda: registry.create("batching", pol.batching),
        registry.create("retention", pol.retention),
        registry.create("placement", pol.placement),
        registry.create("autoscaling", pol.autoscaler),
        driver.on_call_done,
        check_invariants=check_invariants,
        seed=seed,
        prefill_router=prefill_router,
    )
    for m in workload.models():
        cluster.resolve_model(m)  # fail before simulating when a model is not deployed
    persistence = registry.create("persistence", pol.persistence)
    injector = None
    if faults is not None:
        injector = FaultInjector(env, cluster, faults, persistence)
        injector.start()
    driver.start(cluster)
    if not driver.pulled:
        raise ConfigError(f"{workload.source or workload.name}: the trace has no calls")
    cluster.start_autoscaler(driver.finished)
    return Simulation(
        env, workload, cfg, seed, load_scale, cm, recorder, driver, cluster, injector, t0
    )


def _check_pools_supported(cfg: ClusterConfig, faults: FaultSchedule | None) -> None:
    """Disaggregated pools run with the static autoscaler and without faults (neither
    moves a call between its prefill and decode legs yet)."""
    if faults is not None:
        raise ConfigError(f"{cfg.source}: pools: fault injection is not supported with [[pools]]")
    scaler = registry.create("autoscaling", cfg.policies.autoscaler)
    if (
        not isinstance(scaler, PoolPlanner)
        and registry.parse_spec(cfg.policies.autoscaler)[0] != "static"
    ):
        raise ConfigError(
            f"{cfg.source}: pools: autoscaler {cfg.policies.autoscaler!r} does not move "
            "instances between pools; use static or a pool planner (pd_planner) with [[pools]]"
        )


def _pool_summary(cluster: Cluster, makespan: float) -> dict[str, Any]:
    """Summary fields of a disaggregated run: the KV transfers, and each role's
    ``pool_utilization`` (busy GPU time / held GPU time of its instances)."""
    d = cluster.disagg
    if d is None:
        return {}
    busy: dict[str, float] = {}
    held: dict[str, float] = {}
    for life in cluster.lives:
        role = d.roles.get(life.replica_id, "mixed")
        stop = life.stop_s if life.stop_s is not None else makespan
        rep = cluster.all_replicas[life.replica_id]
        busy[role] = busy.get(role, 0.0) + rep.busy_s
        held[role] = held.get(role, 0.0) + max(0.0, stop - life.ready_s)
    util = {r: round(busy[r] / held[r], 12) if held[r] > 0 else 0.0 for r in sorted(held)}
    counts, dur, wait = d.summary()
    return {
        "kv_transfer_bytes": counts["kv_transfer_bytes"],
        "kv_transfer_s": percentiles(dur),
        "kv_transfer_wait_s": percentiles(wait),
        **{k: v for k, v in counts.items() if k != "kv_transfer_bytes"},
        "role_moves": d.role_moves,
        "pool_utilization": util,
        "kv_transfer_busiest_links": _busiest_links(d),
    }


def _store_summary(cluster: Cluster) -> dict[str, Any]:
    """Summary fields of a run with a shared KV store: ``kv_store_hit_rate`` by tier
    (fraction of delivered prompt tokens from the serving instance's HBM cache and
    loaded from each store tier), loads and their total time, peak bytes per tier."""
    store = cluster.kv_store
    if store is None:
        return {}
    hbm = sum(r.hit_tokens for r in cluster.all_replicas)
    return {
        "kv_store_hit_rate": store.hit_rates(hbm),
        "kv_store_loads": store.loads,
        "kv_store_load_s": round(store.load_s, 12),
        "kv_store_peak_bytes": {k: int(v) for k, v in store.occupancy().items()},
    }


def _busiest_links(d: Disaggregation) -> dict[str, dict[str, Any]]:
    """Per link type (nvlink, pcie, network): the directed link that carried the most
    KV (``"from->to"``, ties by name), its bytes, and how many links of the type
    carried any."""
    out: dict[str, dict[str, Any]] = {}
    for (u, v), st in sorted(d.links.stats.items()):
        cur = out.get(st.link_type)
        if cur is None:
            out[st.link_type] = {"link": f"{u}->{v}", "bytes": int(st.nbytes), "links": 1}
            continue
        cur["links"] += 1
        if st.nbytes > cur["bytes"]:
            cur["link"], cur["bytes"] = f"{u}->{v}", int(st.nbytes)
    return dict(sorted(out.items()))


KV_LINK_COLUMNS = ["link", "type", "transfers", "bytes"]


def _link_frame(cluster: Cluster) -> pd.DataFrame:
    """One row per directed link that carried KV in a disaggregated run, most bytes
    first (ties by name); empty for a colocated run."""
    d = cluster.disagg
    if d is None:
        return pd.DataFrame()
    rows = [
        (f"{u}->{v}", st.link_type, st.flows, int(st.nbytes))
        for (u, v), st in sorted(d.links.stats.items())
    ]
    rows.sort(key=lambda r: (-r[3], r[0]))
    return pd.DataFrame(rows, columns=KV_LINK_COLUMNS)


@dataclass
class EngineOutputs:
    """What :func:`collect` reads from a simulation that has run, taken before any
    output frame is built so that the engine (cluster, KV caches, prefix index, driver,
    event queue) can be released first, as :func:`simulate` does: the call records,
    the replicas' timeline buffers and every figure of the summary and configuration.
    """

    recorder: Recorder
    #: (replica id, its samples: five doubles each), in replica order; emptied by
    #: :func:`build_result` as it copies them into the timeline frame
    timelines: list[tuple[int, array[float]]]
    replicas: pd.DataFrame
    summary_args: dict[str, Any]  # keyword arguments of summarize() besides the frames
    summary_tail: dict[str, Any]  # mesh, pool and store fields, after summarize()'s
    links: pd.DataFrame
    config: dict[str, Any]
    perf: dict[str, float | str]  # wall_s is added when the result is built
    t0: float  # perf_counter when building the simulation began


def take_outputs(sim: Simulation) -> EngineOutputs:
    """Everything :func:`build_result` needs from ``sim`` (which has run); nothing in it
    refers back to the engine."""
    workload, cfg, cluster, injector = sim.workload, sim.cfg, sim.cluster, sim.injector
    pol = cfg.policies
    makespan = float(sim.env.now)
    replicas, gpu_hours = _replica_frame(cluster, makespan)
    reps = cluster.all_replicas
    summary_args: dict[str, Any] = dict(
        sessions=workload.num_sessions if isinstance(workload, Workload) else sim.driver.sessions,
        makespan_s=makespan,
        prompt_tokens=sum(r.prompt_tokens for r in reps),
        hit_tokens=sum(r.hit_tokens for r in reps),
        preemptions=sum(r.preemptions for r in reps),
        cold_starts=cluster.cold_starts,
        gpu_hours=gpu_hours,
        price_per_hour=cluster.gpu.price_per_hour,
        seed=sim.seed,
        policy=pol.router,
        extra={
            "failovers": injector.stats.failovers if injector else 0,
            "recomputed_tokens": injector.stats.recomputed_tokens if injector else 0,
            **({"faults": injector.stats.as_dict(pol.persistence)} if injector else {}),
            **_limits_summary(workload, sim.driver.pulled, cluster, injector, makespan),
        },
    )
    tail: dict[str, Any] = {}
    if cluster.mesh is not None:
        tail.update(cluster.mesh.summary())
    tail.update(_pool_summary(cluster, makespan))
    tail.update(_store_summary(cluster))
    sim_wall = sim.sim_wall_s
    return EngineOutputs(
        recorder=sim.recorder,
        timelines=[(r.replica_id, r.timeline) for r in reps],
        replicas=replicas,
        summary_args=summary_args,
        summary_tail=tail,
        links=_link_frame(cluster),
        config={
            "cluster": cfg.to_dict(),
            "trace": workload.source or workload.name,
            "trace_read": workload.meta.get("read", {}),
            "load_scale": sim.load_scale,
            "seed": sim.seed,
            "costmodel": sim.cost_model.describe(),
            "memory": {m: asdict(p) for m, p in cluster.memory.items()},
        },
        perf={
            "sim_wall_s": sim_wall,
            "events": sim.events,
            "events_per_s": sim.events / sim_wall if sim_wall > 0 else 0.0,
            "iterations": sum(r.iterations for r in reps),
            "native": native.state,  # the compiled event loop in use, or why not
        },
        t0=sim.t0,
    )


def build_result(out: EngineOutputs) -> SimResult:
    """The frames, summary and figures of a run from what :func:`take_outputs` took.
    The timeline is built first, consuming ``out.timelines`` (each buffer is dropped
    once copied), then the calls (read back from the recorder) and the sessions."""
    timeline = timeline_frame(out.timelines)
    calls = out.recorder.frame()
    sessions = session_frame(calls)
    summary = summarize(calls, sessions, **out.summary_args)
    summary.update(out.summary_tail)
    perf = dict(out.perf)
    perf["wall_s"] = time.perf_counter() - out.t0
    return SimResult(
        summary=summary,
        calls=calls,
        sessions=sessions,
        timeline=timeline,
        replicas=out.replicas,
        links=out.links,
        config=out.config,
        perf={
            k: perf[k]
            for k in ("sim_wall_s", "wall_s", "events", "events_per_s", "iterations", "native")
        },
    )


def collect(sim: Simulation) -> SimResult:
    """The results of a simulation that has run: per-call, per-session, per-replica
    frames, the timeline, the summary, the configuration and wall-clock figures
    (``sim`` stays usable; :func:`simulate` releases the engine before the frames)."""
    return build_result(take_outputs(sim))


def _replica_frame(cluster: Cluster, makespan: float) -> tuple[pd.DataFrame, float]:
    """One row per replica life, and the GPU-hours they held (a live one until ``makespan``)."""
    gpu_hours = 0.0
    rep_rows = []
    for life in cluster.lives:
        stop = life.stop_s if life.stop_s is not None else makespan
        gpu_hours += len(life.gpus) * max(0.0, stop - life.start_s) / 3600.0
        rep = cluster.all_replicas[life.replica_id]
        rep_rows.append(
            {
                "replica": life.replica_id,
                "model": life.model,
                "gpus": ",".join(map(str, life.gpus)),
                "node": rep.node,
                "start_s": life.start_s,
                "ready_s": life.ready_s,
                "stop_s": stop,
                "cold_start_s": life.cold_start_s,
                "busy_s": rep.busy_s,
                "iterations": rep.iterations,
                "preemptions": rep.preemptions,
                "kv_capacity_blocks": rep.kv_capacity_blocks,
                "evictions": rep.kv_cache_manager.evictions,
                "prompt_tokens": rep.prompt_tokens,
                "hit_tokens": rep.hit_tokens,
            }
        )
    return pd.DataFrame(rep_rows), gpu_hours


def _limits_summary(
    workload: AnyWorkload,
    calls: int,
    cluster: Cluster,
    injector: FaultInjector | None,
    makespan: float,
) -> dict[str, Any]:
    """Summary fields of what the run did not simulate as recorded, each warned about
    once on stderr when non-zero: trace records the reader skipped, calls longer than
    ``max_model_len`` (rejected or truncated) and faults scheduled after the run ended."""
    read = workload.meta.get("read", {})
    skipped = read.get("skipped", {}) if isinstance(read, dict) else {}
    out: dict[str, Any] = {
        "trace_skipped_records": int(sum(skipped.values())),
        "max_model_len": dict(cluster.max_model_len),
        "rejected_too_long": cluster.rejected_too_long,
        "truncated_calls": cluster.truncated_calls,
        "truncated_prompt_tokens": cluster.truncated_prompt_tokens,
        "truncated_output_tokens": cluster.truncated_output_tokens,
    }
    limits = ", ".join(f"{m} {n:,}" for m, n in cluster.max_model_len.items())
    if cluster.rejected_too_long:
        _warn(
            f"{cluster.rejected_too_long:,} of {calls:,} calls are longer than "
            f"max_model_len ({limits} tokens) and were rejected (reason exceeds_max_model_len); "
            "--too-long truncate keeps them, --max-model-len raises the limit"
        )
    if cluster.truncated_calls:
        _warn(
            f"{cluster.truncated_calls:,} calls longer than max_model_len ({limits} tokens) were "
            f"truncated ({cluster.truncated_prompt_tokens:,} prompt and "
            f"{cluster.truncated_output_tokens:,} output tokens cut)"
        )
    if injector is not None:
        applied = sum(injector.stats.injected.values())
        late = [f.at_s for f in injector.faults][applied:]
        out["faults_ignored"] = len(late)
        if late:
            _warn(
                f"{len(late):,} fault(s) scheduled after the last call ended "
                f"(at {makespan:,.1f} s), first at {min(late):,.1f} s, were not applied "
                f"({injector.schedule.source})"
            )
    return out


def _warn(msg: str) -> None:
    print(f"agentsim: warning: {msg}", file=sys.stderr)


def timeline_frame(timelines: list[tuple[int, array[float]]]) -> pd.DataFrame:
    """Every replica's (time, running, waiting, KV used, KV active) samples, one row
    each, with the replica's id (columns :data:`TIMELINE_COLUMNS`), from the replicas'
    ``(id, samples)`` buffers of five doubles a sample, in order.

    The columns are filled buffer by buffer and the list is emptied as it goes (a
    buffer is freed once copied unless its replica still holds it): no copy of all the
    samples is made besides the frame's own columns."""
    n = sum(len(buf) for _, buf in timelines) // 5
    time_s: np.ndarray = np.empty(n, dtype=np.float64)
    ints: dict[str, np.ndarray] = {col: np.empty(n, dtype=np.int64) for col in TIMELINE_COLUMNS[1:]}
    at = 0
    timelines.reverse()  # pop from the end, in replica order
    while timelines:
        rid, buf = timelines.pop()
        rows = np.frombuffer(buf, dtype=np.float64).reshape(-1, 5)
        k = len(rows)
        time_s[at : at + k] = rows[:, 0]
        ints["replica"][at : at + k] = rid
        for j, col in enumerate(TIMELINE_COLUMNS[2:], start=1):
            ints[col][at : at + k] = rows[:, j]  # the samples are whole numbers: exact
        del rows, buf
        at += k
    return pd.DataFrame({"time_s": time_s, **ints}, columns=TIMELINE_COLUMNS, copy=False)
