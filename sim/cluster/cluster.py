"""The cluster: GPUs on a topology, replicas placed on them, routing and scaling.

The cluster owns nodes, GPUs and replicas.  A placement policy picks each replica's
GPUs; the replica's KV capacity follows from GPU memory minus weights and vLLM's
profiling reserve; its cost model is built for the bottleneck link of its TP group.
LLM calls are dispatched to a replica chosen by the router among the ready replicas
of the call's model.  An autoscaler may add replicas (paying a cold start) or retire
them.  The cluster implements ``policies.base.ClusterView`` for the policies.

KV migration (routers with ``migrate_kv``): after the router picks replica B for a
call, if another ready replica A of the model caches a longer prefix of the call
(by at least one block), the cluster compares moving the extra ``n`` tokens of KV
A -> B over the topology path between the replicas' first GPUs (each GPU of the TP
group sends its shard in parallel: ``n x KV bytes per token per GPU / bottleneck
bandwidth + latency``; NVLink inside a node, the NICs across nodes) with
recomputing them on B (``B.recompute_time``).  If the move is faster, the call
reaches B after the transfer with those tokens already in KV (``Seq.num_external_computed_tokens``);
the tokens count as migrated, not as cache hits.

Host-DRAM KV tier: each replica gets ``host_kv_gib`` of its node's DRAM for swapped
KV blocks, reached over the PCIe path from its GPUs to the node's CPU.  With
``cpu_offload_gib`` > 0 the tier is instead vLLM's CPU KV offload: that many GiB per
GPU, written through with every computed prompt block (``sim/engine/replica.py``).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import simpy

from policies.base import (
    Autoscaler,
    BatchPolicy,
    PlacementPolicy,
    PlacementRequest,
    PoolPlanner,
    RetentionPolicy,
    Router,
)
from sim.cluster.config import ClusterConfig, Deployment, max_model_len
from sim.cluster.disagg import Disaggregation
from sim.cluster.kvstore import KVStore, store_tiers
from sim.cluster.mesh import HopModel, MeshOverhead
from sim.common.errors import ConfigError, PolicyError
from sim.costmodel.base import CostModel, ReplicaHardware, kv_transfer_time, load_time
from sim.engine.kvcache import PrefixIndex, root_hash
from sim.engine.replica import EngineConfig, Replica, Seq
from sim.specs.hardware import GiB, GPUSpec, get_gpu
from sim.specs.models import ModelSpec, get_model
from sim.specs.topology import Topology, build_topology
from sim.workload.calls import Call


class FaultHooks(Protocol):
    """What the cluster calls at the points where faults change its behaviour.

    Implemented by ``sim.cluster.faults.FaultInjector`` (attached with
    :meth:`Cluster.attach_faults`); the cluster never imports the fault module.
    """

    def deliver(self, rep: Replica, seq: Seq) -> None:
        """Submit ``seq`` to ``rep``, first reloading any surviving KV copy it can use."""
        ...

    def on_completed(self, rep: Replica, seq: Seq, now: float) -> None:
        """A call completed on ``rep`` (its session's context now lives there)."""
        ...


# ---- the memory plan (vLLM v1's profiling, as vLLM v0.15 computes it) ----------------
#: Memory the CUDA driver reports as the GPU's total (``torch.cuda.mem_get_info``, what
#: vLLM multiplies by ``gpu_memory_utilization``) where it differs from the preset's
#: ``memory_bytes``: an H100 SXM 80GB reports 79.18 GiB (vLLM v0.11 log "Free memory on
#: device (.../79.18 GiB)", H100, published with per-model profiles in the
#: llm-d capacity-planner notes).  Other GPUs: ``memory_bytes``.
DRIVER_TOTAL_BYTES: dict[str, int] = {"h100-80gb": int(79.18 * GiB)}
#: Non-torch memory a worker gains while it loads and profiles (CUDA module images of
#: the kernels it runs, cuBLAS/attention workspaces): vLLM's ``non_torch_increase``.
NON_TORCH_BYTES = int(0.34 * GiB)
#: Extra non-torch memory of a tensor-parallel worker (NCCL communicators, custom
#: all-reduce buffers).
TP_COMM_BYTES = int(0.17 * GiB)
#: Peak bytes the profiling sampler run allocates per logit (one request x one
#: vocabulary entry): the logits in the compute dtype and in float32, top-k/top-p sort
#: values and int64 indices, softmax, cumulative sums and masks, the scattered logits,
#: probabilities and the exponential draws.
SAMPLER_BYTES_PER_LOGIT = 51
#: Copies of the profiling batch's hidden states alive while the sampler runs.
RESIDENT_HIDDEN_COPIES = 2
#: CUDA-graph memory subtracted from the KV budget: vLLM v0.15 captures its graphs after
#: the KV cache is allocated and does not count them (the ``1 - gpu_memory_utilization``
#: headroom holds them), so 0.
CUDA_GRAPH_BYTES = 0


def driver_total_bytes(gpu: GPUSpec) -> int:
    """The GPU memory (bytes) vLLM sees as the device total."""
    return DRIVER_TOTAL_BYTES.get(gpu.name, gpu.memory_bytes)


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Per-GPU memory of one replica, in bytes, and the KV blocks it leaves.

    ``total``: the device total the driver reports; ``usable``: ``total x
    gpu_memory_utilization`` (vLLM's requested memory); ``weights``: the weight shard of
    one GPU; ``activations``: the torch peak of the profiling run; ``non_torch``: CUDA
    context growth, workspaces and communicators; ``cuda_graphs``: graph memory counted
    against KV (0 for vLLM v0.15); ``kv``: what is left for the KV cache; ``kv_blocks``:
    the replica's KV capacity in blocks; ``kv_blocks_from_memory``: the blocks ``kv``
    holds (different from ``kv_blocks`` when ``num_gpu_blocks_override`` is set).
    """

    usable: int
    weights: int
    activations: int
    kv: int
    kv_blocks: int
    total: int = 0
    non_torch: int = 0
    cuda_graphs: int = 0
    kv_blocks_from_memory: int = 0
    kv_bytes_per_block: int = 0


def profile_activation_bytes(model: ModelSpec, dep: Deployment) -> int:
    """Torch peak memory of vLLM's profiling run on one GPU (bytes).

    vLLM runs one forward pass of ``max_num_batched_tokens`` tokens split over
    ``min(max_num_seqs, max_num_batched_tokens)`` dummy requests, then its sampler on
    one logit row per request.  The peak is the larger of the forward pass's widest
    layer (hidden state and residual plus the MLP's gate/up and activation outputs,
    sharded by TP; an MoE layer holds them for every routed copy of a token) and the
    sampler phase (its per-logit buffers over the whole vocabulary, with the batch's
    hidden states still alive).
    """
    tokens = dep.max_num_batched_tokens
    reqs = min(dep.max_num_seqs, tokens)
    act = model.dtype_bytes
    h = model.hidden_size
    inter = model.intermediate_size * max(1, model.experts_per_token)
    inter += model.shared_expert_intermediate if model.num_experts > 1 else 0
    forward = tokens * (2 * h + 3 * inter // dep.tp) * act
    sampler = (
        RESIDENT_HIDDEN_COPIES * tokens * h * act
        + SAMPLER_BYTES_PER_LOGIT * reqs * model.vocab_size
    )
    return max(forward, sampler)


def plan_memory(model: ModelSpec, gpu_memory: int, dep: Deployment) -> MemoryPlan:
    """KV blocks of one replica as vLLM v1 sizes them (``determine_available_memory``).

    vLLM profiles each worker: KV bytes = ``gpu_memory`` (the device total the driver
    reports, :func:`driver_total_bytes`) x ``gpu_memory_utilization`` - (the weight
    shard + the torch peak of a profiling pass, :func:`profile_activation_bytes` + the
    non-torch growth, ``NON_TORCH_BYTES`` plus ``TP_COMM_BYTES`` under TP + CUDA-graph
    memory, 0 in v0.15); blocks = KV bytes // (``block_size`` x the GPU's KV bytes per
    token over its layers).  The constants were fitted to the block counts of measured
    vLLM v0.15.1 runs on H100 (``docs/ARCHITECTURE.md``, Memory): dense models from 7B
    to 70B at TP 1-4 within 1%.  ``num_gpu_blocks_override`` (> 0) replaces the count,
    as vLLM's flag of that name.  Raises ConfigError naming the shortfall when the
    weights and profiling reserve leave no KV block.
    """
    shards = dep.tp * dep.pp
    usable = int(gpu_memory * dep.gpu_memory_utilization)
    weights = -(-model.weight_bytes // shards)
    act = profile_activation_bytes(model, dep)
    non_torch = NON_TORCH_BYTES + (TP_COMM_BYTES if dep.tp > 1 else 0)
    kv = usable - weights - act - non_torch - CUDA_GRAPH_BYTES
    block_bytes = kv_bytes_per_token_per_gpu(model, dep) * dep.block_size
    from_memory = kv // block_bytes if kv > 0 else 0
    blocks = from_memory
    if dep.num_gpu_blocks_override > 0 and kv > 0:
        blocks = dep.num_gpu_blocks_override
    if blocks < 1:
        reserve = act + non_torch + CUDA_GRAPH_BYTES
        short = (weights + reserve + block_bytes - usable) / GiB
        raise ConfigError(
            f"model {model.name} does not fit on {shards} GPU(s) of {gpu_memory / GiB:.1f} GiB at "
            f"gpu_memory_utilization={dep.gpu_memory_utilization}: weights {weights / GiB:.1f} GiB + "
            f"profiling reserve {reserve / GiB:.1f} GiB per GPU leave no KV cache (short by "
            f"{short:.1f} GiB per GPU); raise tp/pp or use larger GPUs"
        )
    return MemoryPlan(
        usable,
        weights,
        act,
        kv,
        int(blocks),
        total=gpu_memory,
        non_torch=non_torch,
        cuda_graphs=CUDA_GRAPH_BYTES,
        kv_blocks_from_memory=int(from_memory),
        kv_bytes_per_block=block_bytes,
    )


def kv_bytes_per_token_per_gpu(model: ModelSpec, dep: Deployment) -> int:
    """KV bytes one token occupies on each GPU of a TP x PP group (layers / pp, heads / tp)."""
    kv_heads_per_gpu = max(1, model.num_kv_heads // dep.tp)
    return (
        2
        * (model.num_layers // dep.pp)
        * kv_heads_per_gpu
        * model.head_dim
        * model.kv_bytes_per_element
    )


@dataclass
class ReplicaLife:
    """Billing record of one replica: GPUs held from ``start_s`` to ``stop_s``."""

    replica_id: int
    model: str
    gpus: tuple[int, ...]
    # (float | int: a compiled dataclass would store the 0 of a replica started at time 0,
    # SimPy's int start, as 0.0, and replicas.csv would print it so)
    start_s: float | int
    ready_s: float | int
    stop_s: float | int | None = None
    cold_start_s: float = 0.0


CallDone = Callable[[Call, float, str, str, Seq | None], None]


class ReplicaWatch:
    """Replica ids a router has not yet seen change (``Cluster.watch_replicas``)."""

    __slots__ = ("changed", "_reps")

    def __init__(self, reps: list[Replica]) -> None:
        self._reps = reps  # the cluster's replicas, indexed by id
        self.changed: set[int] = set(range(len(reps)))

    def drain(self) -> list[Replica]:
        changed, self.changed = self.changed, set()
        reps = self._reps
        return [reps[i] for i in changed]


class Cluster:
    """Replicas on a topology, with routing, placement and autoscaling policies."""

    def __init__(  # long: the cluster's state, one attribute per line
        self,
        env: simpy.Environment,
        cfg: ClusterConfig,
        cost_model: CostModel,
        router: Router,
        batch_policy_factory: Callable[[], BatchPolicy],
        retention: RetentionPolicy,
        placement: PlacementPolicy,
        autoscaler: Autoscaler,
        on_call_done: CallDone,
        check_invariants: bool = False,
        seed: int = 0,
        prefill_router: Router | None = None,
    ) -> None:
        """``seed``: mesh samples; ``prefill_router``: the pools' prefill-side router."""
        self.env = env
        self.cfg = cfg
        self.gpu = get_gpu(cfg.gpu)
        self.topology: Topology = build_topology(cfg.node_list(), cfg.gpu)
        self.cost_model = cost_model
        self.router = router
        self.batch_policy_factory = batch_policy_factory
        self.retention = retention
        self.placement = placement
        self.autoscaler = autoscaler
        self.on_call_done = on_call_done
        self.check_invariants = check_invariants
        self.free_gpus: set[int] = set(range(self.topology.num_gpus))
        self.all_replicas: list[Replica] = []
        self.lives: list[ReplicaLife] = []
        self._by_model: dict[str, list[Replica]] = defaultdict(list)
        self._ready: dict[str, list[Replica]] = defaultdict(list)
        self._retiring: set[int] = set()
        self._pending: dict[str, deque[tuple[Call, float, bool, Seq | None]]] = defaultdict(deque)
        # routing indexes (prefix_holders, watch_replicas): the pools keep the root
        # index; replicas report state changes in _touched, handed to watchers
        self.prefix_index = PrefixIndex()
        self._touched: set[int] = set()
        self._watches: list[ReplicaWatch] = []
        # faults (attach_faults): hooks, replica epochs (a restart or failure bumps the
        # epoch so stale ready-events are ignored), replicas lost for good and why
        self.faults: FaultHooks | None = None
        self._epoch: dict[int, int] = defaultdict(int)
        self._dead: set[int] = set()
        self._dead_reason: dict[str, str] = {}
        self._hw: dict[int, ReplicaHardware] = {}
        self.deployments: dict[str, Deployment] = {}
        self.specs: dict[str, ModelSpec] = {}
        self.memory: dict[str, MemoryPlan] = {}
        self.cold_starts = 0
        self.cold_start_s = 0.0
        self.migrations = 0
        self.migrated_tokens = 0
        self.migration_s = 0.0
        # request length limits, checked as calls arrive (dispatch): model -> tokens
        self.max_model_len: dict[str, int] = {}
        self.rejected_too_long = 0
        self.truncated_calls = 0
        self.truncated_prompt_tokens = 0
        self.truncated_output_tokens = 0
        for dep in cfg.deployments:
            spec = get_model(dep.model).with_dtype(dep.dtype, dep.kv_cache_dtype)
            if spec.name in self.deployments:
                raise ConfigError(f"{cfg.source}: deployments: model {spec.name} is deployed twice")
            self.deployments[spec.name] = dep
            self.specs[spec.name] = spec
            self.memory[spec.name] = plan_memory(spec, driver_total_bytes(self.gpu), dep)
            self.max_model_len[spec.name] = max_model_len(dep)
        self.default_model = get_model(cfg.default_model).name
        # Kubernetes plumbing: mesh overhead per call (the response half waits in
        # _mesh_return until the call completes) and when each node has the image
        hops = {
            name: HopModel.from_percentiles(
                d.mesh_hops, d.mesh_hop_p90_s, d.mesh_hop_p99_s, d.mesh_hop_cpu_s
            )
            for name, d in self.deployments.items()
            if d.mesh_hops > 0
        }
        self.mesh: MeshOverhead | None = MeshOverhead(hops, seed) if hops else None
        self._mesh_return: dict[str, float] = {}
        self._image_ready: dict[int, float] = {}  # node -> time its image pull ends
        self._rep_dep: dict[int, Deployment] = {}  # pool replica -> its deployment
        self.disagg = self._disaggregation(prefill_router) if cfg.pools else None
        self._start_replicas()

    def _disaggregation(self, prefill_router: Router | None) -> Disaggregation:
        """The calls of the models served by pools (``sim/cluster/disagg.py``)."""
        cfg, env = self.cfg, self.env
        d = Disaggregation(
            env,
            self.topology,
            self,
            self.router,
            prefill_router or self.router,
            self.specs,
            self._deliver,
            lambda call, reason, seq: self.on_call_done(call, env.now, "failed", reason, seq),
            layerwise=cfg.kv_transfer.layerwise,
        )
        d.models = {get_model(p.model or cfg.default_model).name for p in cfg.pools}
        return d

    def _start_replicas(self) -> None:
        """Create the shared KV store (``[[kv_store]]``); start the deployments'
        replicas, then every ``[[pools]]`` instance (at its pool's TP, its role
        recorded); a model with pools is served by them only."""
        self.kv_store = KVStore(store_tiers(self.cfg)) if self.cfg.kv_store else None
        self._moving: set[int] = set()  # pool instances draining to change role
        for dep in self.cfg.deployments:
            if self.disagg is not None and get_model(dep.model).name in self.disagg.models:
                continue
            for _ in range(dep.replicas):
                self.start_replica(get_model(dep.model).name, cold=dep.cold_start, at_start=True)
        for pool in self.cfg.pools:
            pdep = self.cfg.pool_deployment(pool)
            for _ in range(pool.count):
                name = get_model(pdep.model).name
                rep = self.start_replica(name, cold=pdep.cold_start, at_start=True, dep=pdep)
                assert rep is not None and self.disagg is not None
                self.disagg.roles[rep.replica_id] = pool.role

    # ---- ClusterView ---------------------------------------------------------------
    @property
    def now(self) -> float:
        return self.env.now

    def replicas(self, model: str | None = None) -> Sequence[Replica]:
        return self.all_replicas if model is None else self._by_model.get(model, [])

    def ready_replicas(self, model: str | None = None) -> Sequence[Replica]:
        if model is None:
            return [r for rs in self._ready.values() for r in rs]
        return self._ready.get(model, [])

    def models(self) -> Sequence[str]:
        return list(self.deployments)

    def live_replicas(self, model: str) -> Sequence[Replica]:
        return [
            r
            for r in self._by_model.get(model, ())
            if r.replica_id not in self._retiring and self.lives[r.replica_id].stop_s is None
        ]

    def pending_calls(self, model: str) -> int:
        return len(self._pending.get(model, ()))

    def prefix_holders(self, call: Call, model: str) -> list[tuple[Replica, int]]:
        """Every ready replica of ``model`` that caches part of ``call``'s prompt in HBM,
        in replica-id order, with its ``cached_prefix_tokens(call)`` (> 0); every other
        replica caches none of it.  One root-index lookup (``PrefixIndex``): the cost
        follows the replicas holding the prompt's first block, not the replica count."""
        if not call.prefix_hashes or call.input_tokens <= 0:
            return []
        ready = self._ready.get(model)
        if not ready:
            return []
        root = root_hash(call.prefix_hashes, call.block_size, ready[0].block_size)
        holders = self.prefix_index.holders.get(root) if root is not None else None
        if not holders:
            return []
        out = []
        reps = self.all_replicas
        for rid in sorted(holders):
            rep = reps[rid]
            if rep.ready and rep.model == model:
                tokens = rep.cached_prefix_tokens(call)
                if tokens > 0:
                    out.append((rep, tokens))
        return out

    def watch_replicas(self) -> ReplicaWatch:
        """A router's subscription to replica changes: before each routing decision the
        cluster adds the ids of the replicas whose load, queue, KV cache or readiness
        may have changed (replicas report themselves when they handle an event);
        ``drain`` returns them and starts over.  The first drain returns every replica."""
        w = ReplicaWatch(self.all_replicas)
        self._watches.append(w)
        return w

    # ---- replicas ------------------------------------------------------------------
    def resolve_model(self, name: str | None) -> str:
        """The deployed model name serving calls that name ``name`` (None: default)."""
        if name is None:
            return self.default_model
        if name in self.deployments:
            return name
        try:
            canon = get_model(name).name
        except ConfigError:
            canon = name
        if canon not in self.deployments:
            raise ConfigError(
                f"the trace uses model {name!r}, but the cluster deploys only {', '.join(self.deployments)}"
            )
        return canon

    def start_replica(  # long: placement, memory plan and engine wiring of one replica
        self, model: str, cold: bool, at_start: bool = False, dep: Deployment | None = None
    ) -> Replica | None:
        """Place and start a replica of ``model``; None when no GPUs fit it.  ``dep``:
        a pool's deployment (its TP) instead of the model's."""
        pooled = dep is not None
        dep = dep or self.deployments[model]
        spec = self.specs[model]
        req = PlacementRequest(spec.name, dep.tp, dep.pp, len(self._by_model[model]))
        free = sorted(self.free_gpus)
        gpus = self.placement.place(req, self.topology, free)
        if gpus is None:
            if at_start:
                raise ConfigError(
                    f"{self.cfg.source}: placement policy could not place replica {req.replica_index} of "
                    f"{model} (needs {dep.gpus_per_replica} GPUs, {len(free)} free)"
                )
            return None
        if (
            len(gpus) != dep.gpus_per_replica
            or len(set(gpus)) != len(gpus)
            or not set(gpus) <= self.free_gpus
        ):
            raise PolicyError(
                f"placement returned invalid GPUs {gpus} for {dep.gpus_per_replica} free GPUs"
            )
        self.free_gpus -= set(gpus)
        hw = self.replica_hardware(spec, dep, tuple(gpus))
        block_bytes = kv_bytes_per_token_per_gpu(spec, dep) * dep.block_size
        host_path = min(
            (
                self.topology.path(self.topology.gpu_names[g], f"n{self.topology.gpu_node[g]}/cpu0")
                for g in gpus
            ),
            key=lambda p: (p.bandwidth, -p.latency),
        )
        if dep.cpu_offload_gib > 0:
            # vLLM's CPU offload tier: cpu_offload_gib of host memory per GPU
            host_blocks = int(dep.cpu_offload_gib * GiB) // block_bytes
        else:
            host_blocks = int(dep.host_kv_gib * GiB) // (block_bytes * dep.gpus_per_replica)
        rid = len(self.all_replicas)
        self._hw[rid] = hw
        plan = self.memory[model]
        if pooled:
            self._rep_dep[rid] = dep
            plan = plan_memory(spec, driver_total_bytes(self.gpu), dep)
        rep = Replica(
            self.env,
            rid,
            model,
            tuple(gpus),
            self.topology.gpu_node[gpus[0]],
            self.cost_model.for_replica(hw),
            plan.kv_blocks,
            EngineConfig(
                dep.max_num_seqs,
                dep.max_num_batched_tokens,
                dep.block_size,
                self.cfg.fast_forward,
                self.check_invariants,
            ),
            self.batch_policy_factory(),
            self.retention,
            self._on_seq_finished,
            host_kv_blocks=host_blocks,
            host_path=host_path,
            kv_block_bytes=block_bytes,
            cpu_offload=dep.cpu_offload_gib > 0,
            prefix_index=self.prefix_index,
            touched=self._touched,
        )
        self.all_replicas.append(rep)
        self._by_model[model].append(rep)
        now = self.env.now
        if cold:
            t = self._cold_start_time(model, tuple(gpus))
            self.cold_starts += 1
            self.cold_start_s += t
            self.lives.append(ReplicaLife(rid, model, tuple(gpus), now, now + t, cold_start_s=t))
            self._ready_after(rep, t)
        else:
            self.lives.append(ReplicaLife(rid, model, tuple(gpus), now, now))
            for g in gpus:  # a replica that is up at the start has its image
                self._image_ready.setdefault(self.topology.gpu_node[g], now)
            self._make_ready(rep)
        return rep

    def _cold_start_time(
        self, model: str, gpus: tuple[int, ...], dep: Deployment | None = None
    ) -> float:
        """Seconds from now until a new pod of ``model`` on ``gpus`` is ready.

        The pod start-up phases of the deployment, in order: scheduling
        (``scheduling_s``), the image pull on every node of ``gpus`` that does not have
        the serving image yet (``image_pull_s``, once per node: a pod on a node where a
        pull is under way waits for that pull to end), the weight load over the slowest
        load path, and engine warm-up (``init_s``).
        """
        weights = self.memory[model].weights
        if dep is not None:  # a pool instance: its own weight shard
            weights = -(-self.specs[model].weight_bytes // dep.gpus_per_replica)
        dep = dep or self.deployments[model]
        path = min(
            (self.topology.load_path(g, dep.weight_source) for g in gpus),
            key=lambda p: p.bandwidth,
        )
        now = self.env.now
        pulled = now + dep.scheduling_s
        for node in sorted({self.topology.gpu_node[g] for g in gpus}):
            done = self._image_ready.setdefault(node, now + dep.scheduling_s + dep.image_pull_s)
            pulled = max(pulled, done)
        return pulled - now + load_time(weights, path, dep.init_s)

    def _ready_after(self, rep: Replica, delay_s: float) -> None:
        """Make ``rep`` ready in ``delay_s`` unless it fails (or fails again) meanwhile."""
        epoch = self._epoch[rep.replica_id]

        def ready(_: simpy.Event) -> None:
            rid = rep.replica_id
            if self._epoch[rid] == epoch and self.lives[rid].stop_s is None:
                self._make_ready(rep)

        ev = self.env.timeout(delay_s)
        ev.callbacks.append(ready)

    def replica_hardware(
        self, spec: ModelSpec, dep: Deployment, gpus: tuple[int, ...]
    ) -> ReplicaHardware:
        """Interconnect of a TP/PP group as the cost model sees it."""
        tp_paths = [
            self.topology.group_bottleneck(gpus[s * dep.tp : (s + 1) * dep.tp])
            for s in range(dep.pp)
        ]
        worst = min(tp_paths, key=lambda p: (p.bandwidth, -p.latency))
        pp_bw, pp_lat = float("inf"), 0.0
        for s in range(dep.pp - 1):
            p = self.topology.gpu_path(gpus[s * dep.tp], gpus[(s + 1) * dep.tp])
            if p.bandwidth < pp_bw:
                pp_bw, pp_lat = p.bandwidth, p.latency
        return ReplicaHardware(
            model=spec,
            gpu=self.gpu,
            tp=dep.tp,
            pp=dep.pp,
            allreduce_bandwidth=worst.bandwidth,
            allreduce_latency=worst.latency,
            link=worst.link,
            pp_bandwidth=pp_bw,
            pp_latency=pp_lat,
        )

    def _make_ready(self, rep: Replica) -> None:
        rep.ready = True
        self._touched.add(rep.replica_id)
        self._ready[rep.model].append(rep)
        self._ready[rep.model].sort(key=lambda r: r.replica_id)
        pending = self._pending.get(rep.model)
        while pending:
            call, issued, has_succ, seq = pending.popleft()
            self.dispatch(call, issued, has_succ, seq)

    def retire_replica(self, rep: Replica) -> None:
        """Stop routing to ``rep``; free its GPUs once its calls drain."""
        if rep.replica_id in self._retiring:
            return
        self._retiring.add(rep.replica_id)
        if rep.ready:
            rep.ready = False
            self._touched.add(rep.replica_id)
            self._ready[rep.model].remove(rep)
        self._maybe_release(rep)

    def _maybe_release(self, rep: Replica) -> None:
        if rep.replica_id in self._retiring and not rep.running and not rep.waiting:
            self._retiring.discard(rep.replica_id)
            self.free_gpus |= set(rep.gpus)
            life = self.lives[rep.replica_id]
            life.stop_s = self.env.now

    # ---- calls ---------------------------------------------------------------------
    def dispatch(
        self, call: Call, issued_s: float, has_successor: bool, seq: Seq | None = None
    ) -> None:
        """Route an LLM call (issued at ``issued_s``) to a replica of its model.

        ``seq``: the call's state when it fails over from a lost replica (it keeps its
        issue time, generated tokens and counters); None for a new call.
        """
        model = self.resolve_model(call.model)
        if seq is None and call.input_tokens + call.output_tokens > self.max_model_len[model]:
            fitted = self._fit_length(call, model)
            if fitted is None:
                self._mesh_return.pop(call.call_id, None)
                self.on_call_done(call, self.env.now, "failed", "exceeds_max_model_len", None)
                return
            call = fitted
        if self.disagg is not None and model in self.disagg.models:
            self.disagg.dispatch(call, issued_s, has_successor, self._ready.get(model, []))
            return
        candidates = self._ready.get(model)
        if not candidates:
            if not self._can_serve(model):
                reason = self._dead_reason.get(model, "no_replica")
                self.on_call_done(call, self.env.now, "failed", reason, seq)
            else:
                self._pending[model].append((call, issued_s, has_successor, seq))
            return
        if not candidates[0].fits(call):
            self.on_call_done(call, self.env.now, "failed", "exceeds_kv_capacity", seq)
            return
        touched = self._touched
        if touched:
            for w in self._watches:
                w.changed |= touched
            touched.clear()
        rid = self.router.route(call, candidates, self)
        rep = self.all_replicas[rid] if 0 <= rid < len(self.all_replicas) else None
        if rep is None or not rep.ready or rep.model != model:
            raise PolicyError(
                f"router {self.router.policy_name!r} returned replica {rid}, not a ready replica of {model}"
            )
        if seq is None:
            seq = Seq(call, issued_s, rep.block_size, has_successor)
        if self.router.migrate_kv and call.prefix_hashes:
            delay = self._migrate(call, rep, seq)
            if delay > 0:
                ev = self.env.timeout(delay)
                ev.callbacks.append(lambda _e: self._deliver(rep, seq))
                return
        self._deliver(rep, seq)

    def _fit_length(self, call: Call, model: str) -> Call | None:
        """A call longer than its model's ``max_model_len``, as the deployment's
        ``too_long`` says: None (``reject``), or the call truncated to fit
        (``truncate``: the output capped at ``limit - 1``, then the prompt's last
        ``limit - output`` tokens kept, without its prefix hashes)."""
        if self.deployments[model].too_long != "truncate":
            self.rejected_too_long += 1
            return None
        limit = self.max_model_len[model]
        out = min(call.output_tokens, limit - 1)
        inp = min(call.input_tokens, limit - out)
        self.truncated_calls += 1
        self.truncated_prompt_tokens += call.input_tokens - inp
        self.truncated_output_tokens += call.output_tokens - out
        hashes = call.prefix_hashes if inp == call.input_tokens else ()
        return replace(call, input_tokens=inp, output_tokens=out, prefix_hashes=hashes)

    def _migrate(self, call: Call, rep: Replica, seq: Seq) -> float:
        """Move ``call``'s cached prefix to ``rep`` if cheaper than recompute; the delay (s)."""
        mine = max(rep.cached_prefix_tokens(call), seq.num_external_computed_tokens)
        # the replica caching most of the prompt (lowest id on ties), from the prefix
        # index: a replica it does not name caches none, and so cannot be the source
        holders = self.prefix_holders(call, rep.model)
        if not holders:
            return 0.0
        src, theirs = max(holders, key=lambda h: (h[1], -h[0].replica_id))
        if src is rep or theirs - mine < rep.block_size:
            return 0.0
        moved = theirs - mine
        per_token = rep.kv_block_bytes / rep.block_size
        path = self.topology.gpu_path(src.gpus[0], rep.gpus[0])
        t_move = kv_transfer_time(moved * per_token, path)
        if t_move >= rep.recompute_time(theirs) - rep.recompute_time(mine):
            return 0.0
        seq.num_external_computed_tokens = theirs
        self.migrations += 1
        self.migrated_tokens += moved
        self.migration_s += t_move
        return t_move

    def _deliver(self, rep: Replica, seq: Seq, loaded: bool = False) -> None:
        """Hand ``seq`` to ``rep`` (re-dispatch if ``rep`` stopped serving meanwhile),
        after loading its prefix from the shared KV store when that is cheaper than
        recomputing it (``loaded``: done already)."""
        if self.kv_store is not None and not loaded and rep.ready:
            delay = self.kv_store.plan_load(rep, seq)
            if delay > 0:
                ev = self.env.timeout(delay)
                ev.callbacks.append(lambda _e: self._deliver(rep, seq, True))
                return
        if not rep.ready:
            self.dispatch(seq.call, seq.arrival_s, seq.has_successor, seq)
            return
        if self.faults is not None:
            self.faults.deliver(rep, seq)
        else:
            rep.submit(seq)

    def _can_serve(self, model: str) -> bool:
        """Whether a replica of ``model`` is, or may become, ready (else calls fail)."""
        if self.autoscaler.interval_s > 0:
            return True
        return any(r.replica_id not in self._dead for r in self._by_model.get(model, ()))

    def declare(self, calls: Sequence[Call]) -> None:
        """Calls the driver has taken from the workload, before any of them issues
        (the retention policy may plan with their DAG: ``on_workload``)."""
        self.retention.on_workload(calls)

    def issue(self, call: Call, issued_s: float, has_successor: bool) -> None:
        """A new LLM call from an agent.  It crosses the mesh (half of its sampled
        overhead, ``sim/cluster/mesh.py``) and waits the router's decision delay
        (``policies.router_delay_s``) before :meth:`dispatch` routes it; with neither
        it is dispatched at once."""
        delay = self.cfg.policies.router_delay_s
        if self.mesh is not None:
            overhead = self.mesh.sample(self.resolve_model(call.model))
            if overhead > 0:
                self._mesh_return[call.call_id] = overhead / 2
                delay += overhead / 2
        if delay > 0:
            ev = self.env.timeout(delay)
            ev.callbacks.append(lambda _e: self.dispatch(call, issued_s, has_successor))
        else:
            self.dispatch(call, issued_s, has_successor)

    def _on_seq_finished(self, rep: Replica, seq: Seq, now: float) -> None:
        if self.kv_store is not None:
            self.kv_store.save(rep, seq.call)  # written through to the store's tiers
        if self.disagg is not None:
            if self.disagg.on_finished(rep, seq, now):  # a prefill leg: its KV goes to D
                if self._moving:
                    self._restart_moved(rep)
                return
            self._finished(rep, seq, now)
            self.disagg.on_completed(seq, now)
            self.disagg.try_transfers(rep)  # the call's blocks are free on rep now
            if self._moving:
                self._restart_moved(rep)
            return
        self._finished(rep, seq, now)

    def _finished(self, rep: Replica, seq: Seq, now: float) -> None:
        """A call completed on ``rep``: report it (after the mesh's return half)."""
        if self.faults is not None:
            self.faults.on_completed(rep, seq, now)
        back = self._mesh_return.pop(seq.call.call_id, 0.0) if self._mesh_return else 0.0
        if back > 0:  # the response crosses the mesh back to the agent
            ev = self.env.timeout(back)
            ev.callbacks.append(
                lambda _e: self.on_call_done(seq.call, self.env.now, "completed", "", seq)
            )
        else:
            self.on_call_done(seq.call, now, "completed", "", seq)
        if self._retiring:
            self._maybe_release(rep)

    # ---- faults (driven by sim.cluster.faults.FaultInjector) --------------------------------
    def is_up(self, rep: Replica, epoch: int) -> bool:
        """Whether ``rep`` is ready and has not failed since ``epoch``."""
        return rep.ready and self._epoch[rep.replica_id] == epoch

    def epoch(self, rep: Replica) -> int:
        return self._epoch[rep.replica_id]

    def is_dead(self, rep: Replica) -> bool:
        return rep.replica_id in self._dead

    def fail_replica(
        self, rep: Replica, reason: str, restart_after_s: float | None
    ) -> list[tuple[Seq, int]]:
        """Lose ``rep``'s GPUs now: its calls and KV are dropped (see ``Replica.fail``).

        ``restart_after_s``: the replica comes back on the same GPUs after that many
        seconds plus a cold start (weight load + init); None: it is gone for good (its
        GPUs are neither billed nor reused from now on).  When the last replica of a
        model is gone for good, the calls the cluster held for it fail with ``reason``.
        Returns the lost sequences with the KV tokens each had computed; the caller
        re-dispatches them (``dispatch(..., seq=...)``).
        """
        rid = rep.replica_id
        now = self.env.now
        self._epoch[rid] += 1
        if rep.ready:
            self._ready[rep.model].remove(rep)
        lost = rep.fail(now)
        life = self.lives[rid]
        if restart_after_s is None or rid in self._retiring or life.stop_s is not None:
            self._retiring.discard(rid)
            self._dead.add(rid)
            if life.stop_s is None:
                life.stop_s = now
            self._dead_reason[rep.model] = reason
            if not self._can_serve(rep.model):
                pending = self._pending.pop(rep.model, deque())
                for call, _issued, _succ, seq in pending:
                    self.on_call_done(call, now, "failed", reason, seq)
        else:
            t = restart_after_s + self._cold_start_time(rep.model, rep.gpus)
            self.cold_starts += 1
            self.cold_start_s += t
            life.cold_start_s += t
            self._ready_after(rep, t)
        return lost

    def attach_faults(self, hooks: FaultHooks) -> None:
        """Call ``hooks`` when a call is delivered to a replica and when one completes."""
        self.faults = hooks

    def is_live(self, rep: Replica) -> bool:
        """Whether ``rep`` still holds its GPUs (it has not stopped or been lost)."""
        return self.lives[rep.replica_id].stop_s is None

    def lose_node_storage(self, node: int, drive: bool) -> None:
        """A node failure: the shared KV store loses that node's host DRAM tier, and
        its local NVMe tier too when ``drive`` (the instance is gone, as on a spot
        reclaim)."""
        if self.kv_store is not None:
            self.kv_store.lose_node(node, ("host", "nvme") if drive else ("host",))

    def take_gpus_offline(self, gpus: Iterable[int]) -> None:
        """Remove ``gpus`` from the free pool (placement cannot use them)."""
        for g in gpus:
            self.free_gpus.discard(g)

    def return_gpus(self, gpus: Iterable[int]) -> None:
        """Put repaired ``gpus`` back in the free pool, except those a live replica holds."""
        held = {g for r in self.all_replicas if self.is_live(r) for g in r.gpus}
        for g in gpus:
            if g not in held:
                self.free_gpus.add(g)

    def link_bandwidth(self, edge: tuple[str, str]) -> float:
        """The bandwidth of the topology link ``edge`` now."""
        bandwidth: float = self.topology.graph.edges[edge]["bandwidth"]
        return bandwidth

    def set_link_bandwidth(self, edge: tuple[str, str], bandwidth: float) -> None:
        """Set the topology link ``edge``'s bandwidth; the path cache is cleared and every
        live replica whose interconnect changed gets a new iteration model."""
        self.topology.graph.edges[edge]["bandwidth"] = bandwidth
        self.topology._path.cache_clear()
        for rep in self.all_replicas:
            if rep.replica_id in self._dead:
                continue
            dep = self._rep_dep.get(rep.replica_id) or self.deployments[rep.model]
            hw = self.replica_hardware(self.specs[rep.model], dep, rep.gpus)
            if hw != self._hw.get(rep.replica_id):
                self._hw[rep.replica_id] = hw
                rep.set_cost(self.cost_model.for_replica(hw))

    # ---- pool planners (PoolPlanner) ------------------------------------------------
    def move_role(self, rep: Replica, role: str) -> None:
        """Move a ready pool instance to ``role``: it stops taking calls, drains (its
        calls and the KV transfers coming to it), then restarts in the new role after
        a cold start (scheduling, weight load, engine warm-up)."""
        d = self.disagg
        if d is None or role not in ("prefill", "decode", "mixed"):
            raise PolicyError(f"planner moved replica {rep.replica_id} to role {role!r}")
        if not rep.ready or d.roles.get(rep.replica_id) in (None, role):
            return
        rep.ready = False
        self._ready[rep.model].remove(rep)
        d.roles[rep.replica_id] = role
        d.role_moves += 1
        self._moving.add(rep.replica_id)
        self._restart_moved(rep)

    def _restart_moved(self, rep: Replica) -> None:
        """Restart a moved instance once drained (its KV cache is dropped)."""
        if rep.replica_id not in self._moving or self.disagg is None:
            return
        if not self.disagg.drained(rep):
            return
        self._moving.discard(rep.replica_id)
        rep.fail(self.env.now)  # nothing left to lose: resets the engine and its KV
        dep = self._rep_dep.get(rep.replica_id)
        t = self._cold_start_time(rep.model, rep.gpus, dep)
        self.cold_starts += 1
        self.cold_start_s += t
        self.lives[rep.replica_id].cold_start_s += t
        self._ready_after(rep, t)

    # ---- autoscaling ---------------------------------------------------------------
    def start_autoscaler(self, until: Callable[[], bool]) -> None:
        """Call the autoscaler every ``interval_s`` until ``until()`` is true.

        A decision takes effect ``policies.autoscaler_delay_s`` after it is made (an
        external controller's reaction time); 0 applies it at once.
        """
        interval = self.autoscaler.interval_s
        if interval <= 0:
            return
        delay = self.cfg.policies.autoscaler_delay_s

        def act(desired: dict[str, int]) -> None:
            if until():
                return
            for model, want in desired.items():
                self._scale_to(model, max(0, int(want)))

        def tick(_: simpy.Event) -> None:
            if until():
                return
            if isinstance(self.autoscaler, PoolPlanner) and self.disagg is not None:
                for rid, role in self.autoscaler.plan(self.disagg.pool_view, self.env.now).items():
                    self.move_role(self.all_replicas[rid], role)
            desired = self.autoscaler.decide(self, self.env.now)
            if delay > 0 and desired:
                later = self.env.timeout(delay)
                later.callbacks.append(lambda _e: act(desired))
            else:
                act(desired)
            ev = self.env.timeout(interval)
            ev.callbacks.append(tick)

        ev = self.env.timeout(interval)
        ev.callbacks.append(tick)

    def _scale_to(self, model: str, want: int) -> None:
        if model not in self.deployments:
            raise PolicyError(f"autoscaler asked for unknown model {model!r}")
        live = list(self.live_replicas(model))
        while len(live) < want:
            rep = self.start_replica(model, cold=True)
            if rep is None:
                break
            live.append(rep)
        if len(live) > want:
            # retire the idlest ready replicas first
            for rep in sorted(live, key=lambda r: (r.outstanding_requests, -r.replica_id))[
                : len(live) - want
            ]:
                self.retire_replica(rep)
