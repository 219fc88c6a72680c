"""Cluster configuration: TOML files validated on load, plus quick overrides.

A cluster config names its nodes (topology builder, GPU type), its deployments
(model, tensor/pipeline parallelism, replica count, engine limits) and its policies.
See ``examples/clusters/*.toml`` and the README for the format.  Every problem raises
:class:`~sim.common.errors.ConfigError` naming the file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from sim.common.errors import ConfigError, InputError
from sim.common.io import read_toml
from sim.costmodel.transfer import ENGINE_INIT_S
from sim.specs.hardware import GPUS
from sim.specs.models import DEPLOY_DTYPES, get_model
from sim.specs.topology import BUILDERS


@dataclass(frozen=True)
class NodeGroup:
    """``count`` identical nodes built by ``builder`` with ``gpus`` GPUs each."""

    builder: str = "dgx-a100"
    count: int = 1
    gpus: int = 8


@dataclass(frozen=True)
class Deployment:
    """A model served by ``replicas`` replicas, each on ``tp`` x ``pp`` GPUs.

    Engine limits follow vLLM: ``max_num_seqs`` running sequences,
    ``max_num_batched_tokens`` tokens per iteration, ``block_size`` tokens per KV
    block, ``gpu_memory_utilization`` of GPU memory usable for weights + activations +
    KV.  ``cold_start``: replicas load their weights at t=0 (from ``weight_source``:
    ``nvme``, ``host`` or ``remote``) before serving; ``init_s`` is engine start-up
    time on top of the weight load (seconds).  ``max_model_len``: the longest sequence
    (prompt + output tokens) a replica serves; 0 (the default) means the model's
    context (``ModelSpec.max_context``, its HF ``max_position_embeddings``), as vLLM
    derives it.  A call longer than that is handled per ``too_long``: ``reject`` (the
    default, as vLLM's OpenAI server answers 400) fails it at arrival with reason
    ``exceeds_max_model_len``, using no GPU time; ``truncate`` keeps the last
    ``max_model_len - output`` prompt tokens (the output capped at ``max_model_len - 1``
    first when it alone does not fit; a truncated prompt keeps no prefix hashes, its
    start was cut).  ``num_gpu_blocks_override`` (> 0)
    fixes the KV capacity in blocks instead of deriving it from memory (as vLLM's
    flag of the same name).

    Pod start-up (``cold_start`` replicas and every replica an autoscaler adds), in
    order: ``scheduling_s`` (API server, scheduler and kubelet until the container
    starts; default 5 s, the Kubernetes pod-startup SLO: p99 <= 5 s excluding image
    pull, sig-scalability ``pod_startup_latency.md``), ``image_pull_s`` (the serving
    image, pulled once per node with ``imagePullPolicy: IfNotPresent``; a pod on a node
    where a pull is under way waits for it; default 90 s: the vllm/vllm-openai image
    is ~9 GB compressed (vllm-project/vllm#7609) at ~100 MB/s of download plus
    decompression), the weight load (weight bytes per GPU over the slowest path from
    ``weight_source``) and ``init_s`` (engine warm-up: profiling, KV allocation, CUDA
    graph capture).  Mesh: ``mesh_hops`` proxies (sidecars, gateways) on every call,
    each adding a log-normal round-trip latency with 90th/99th percentiles
    ``mesh_hop_p90_s`` / ``mesh_hop_p99_s`` and ``mesh_hop_cpu_s`` vCPU-seconds per
    call (defaults: Istio's published figures, see ``sim/cluster/mesh.py``).  ``host_kv_gib``: host DRAM (GiB) each replica may use
    as a KV tier for blocks swapped out of HBM (0: none); the default 128 GiB per
    replica fits a DGX A100 80GB (2 TiB DRAM) even with 8 single-GPU replicas.
    ``cpu_offload_gib`` (> 0): vLLM's CPU KV offload tier (``OffloadingConnector``), that
    many GiB of host DRAM per GPU of the group (``floor(GiB / KV bytes of one block on
    one GPU)`` blocks, as vLLM's ``cpu_kv_blocks``); it replaces the ``host_kv_gib``
    tier: every computed prompt block is also stored there, and a prefix that GPU
    memory evicted is loaded back over PCIe instead of recomputed (``sim/engine/replica.py``).
    """

    model: str = "llama-3.1-70b"
    tp: int = 4
    pp: int = 1
    replicas: int = 4
    max_num_seqs: int = 128
    max_num_batched_tokens: int = 4096
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    cold_start: bool = False
    weight_source: str = "nvme"
    init_s: float = ENGINE_INIT_S
    num_gpu_blocks_override: int = 0
    max_model_len: int = 0
    too_long: str = "reject"
    scheduling_s: float = 5.0
    image_pull_s: float = 90.0
    mesh_hops: int = 0
    mesh_hop_p90_s: float = 0.85e-3
    mesh_hop_p99_s: float = 1.35e-3
    mesh_hop_cpu_s: float = 2e-4
    host_kv_gib: float = 128.0
    cpu_offload_gib: float = 0.0
    allow_cross_node_tp: bool = False  # a TP group larger than a node must be allowed
    # precision (sim/specs/models.py ModelSpec.with_dtype): "" keeps the model's own;
    # "fp16" / "bf16" / "fp8" for weights (fp8 needs FP8 tensor cores), and the KV
    # cache ("" or "auto": follows dtype when given, else the model's own KV precision)
    dtype: str = ""
    kv_cache_dtype: str = ""

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp


#: The roles of an instance pool: ``prefill`` instances prefill calls and send their
#: KV to a ``decode`` instance; ``mixed`` instances do both (and may take either role).
POOL_ROLES = ("prefill", "decode", "mixed")


@dataclass(frozen=True)
class Pool:
    """``count`` instances of ``model`` at TP ``tp`` serving one ``role`` (disaggregated
    serving, ``[[pools]]`` in a cluster TOML).  ``model`` "" means the first deployment's;
    ``tp`` 0 means the deployment's.  The model's deployment gives the engine limits;
    a model with pools is served by its pools (its deployment's ``replicas`` is not used).
    """

    role: str = "mixed"
    model: str = ""
    tp: int = 0
    count: int = 1


@dataclass(frozen=True)
class KVTransfer:
    """How prefill instances send KV to decode instances (``[kv_transfer]``).

    ``layerwise``: the KV streams layer by layer while the prefill runs (as Mooncake's
    and NIXL-based connectors overlap them), at most as fast as the prefill produces it;
    otherwise the whole KV is sent after the prefill ends.
    """

    layerwise: bool = False


#: Store tiers (``[[kv_store]]``) and their defaults: capacity (GiB per location: a
#: node's, or the cluster's for ``remote``), bandwidth (GB/s per loading GPU), latency
#: (s).  host: pinned host-to-GPU copies over PCIe Gen4 reach ~25 GB/s (CUDA
#: bandwidthTest, sim/costmodel/transfer.py), 1 TiB of a DGX A100's 2 TiB DRAM; nvme: one
#: Gen4 drive's 6.8 GB/s sequential read shared by a node's 8 GPUs, 15 TB (DGX A100 data
#: RAID); remote: an RDMA pool (Mooncake Store) read at the HDR NIC's achieved ~23 GB/s
#: per GPU (perftest ib_write_bw), 50 us, 64 TiB.
KV_STORE_TIERS: dict[str, tuple[float, float, float]] = {
    "host": (1024.0, 25.0, 10e-6),
    "nvme": (15000.0, 0.85, 100e-6),
    "remote": (65536.0, 23.0, 50e-6),
}
KV_STORE_EVICTION = ("lru", "fifo")


@dataclass(frozen=True)
class KVStoreTier:
    """One tier of the shared KV store (``[[kv_store]]``, ``sim/cluster/kvstore.py``).

    ``tier``: host, nvme or remote; ``capacity_gib`` per location (a node's host DRAM
    or NVMe, or the one remote pool), ``bandwidth_gbs`` (GB/s per loading GPU),
    ``latency_s``; 0 means the tier's default (:data:`KV_STORE_TIERS`); ``eviction``:
    lru or fifo.
    """

    tier: str = "host"
    capacity_gib: float = 0.0
    bandwidth_gbs: float = 0.0
    latency_s: float = 0.0
    eviction: str = "lru"


@dataclass(frozen=True)
class PolicyConfig:
    """Policy specs per kind (``name`` or ``name:key=value,...``)."""

    router: str = "round_robin"
    batching: str = "fcfs"
    retention: str = "lru"
    placement: str = "first_fit"
    autoscaler: str = "static"
    # decision latency (s): between a call's issue and the router's dispatch (an
    # external scheduler), and between an autoscaler's decision and its action
    router_delay_s: float = 0.0
    autoscaler_delay_s: float = 0.0
    persistence: str = "none"  # session state under faults (sim/cluster/faults.py)


@dataclass(frozen=True)
class ClusterConfig:
    """The whole simulated cluster."""

    name: str = "2x DGX A100 80GB"
    gpu: str = "a100-80gb"
    nodes: tuple[NodeGroup, ...] = (NodeGroup("dgx-a100", 2, 8),)
    deployments: tuple[Deployment, ...] = (Deployment(),)
    policies: PolicyConfig = field(default_factory=PolicyConfig)
    costmodel: str | None = None  # path of a fitted cost model (None: the default)
    fast_forward: bool = True
    source: str = "<default>"
    #: policy plugins (``policies.registry.load_plugin`` references: absolute ``.py``
    #: paths or ``module:Class``), loaded before any policy spec is resolved
    plugins: tuple[str, ...] = ()
    #: prefill / decode / mixed instance pools (empty: every replica does both)
    pools: tuple[Pool, ...] = ()
    kv_transfer: KVTransfer = field(default_factory=KVTransfer)
    #: tiers of the shared KV store (empty: none)
    kv_store: tuple[KVStoreTier, ...] = ()

    @property
    def num_gpus(self) -> int:
        return sum(n.count * n.gpus for n in self.nodes)

    @property
    def default_model(self) -> str:
        return self.deployments[0].model

    def node_list(self) -> list[tuple[str, int]]:
        return [(n.builder, n.gpus) for n in self.nodes for _ in range(n.count)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["nodes"] = [asdict(n) for n in self.nodes]
        d["deployments"] = [asdict(x) for x in self.deployments]
        if self.plugins:
            d["plugins"] = list(self.plugins)
        else:  # configs without plugins keep their earlier form (and run ids)
            del d["plugins"]
        if self.kv_store:
            d["kv_store"] = [asdict(t) for t in self.kv_store]
        else:
            del d["kv_store"]
        if self.pools:
            d["pools"] = [asdict(p) for p in self.pools]
        else:  # colocated configs keep their earlier form (and run ids)
            del d["pools"]
            if self.kv_transfer == KVTransfer():
                del d["kv_transfer"]
        return d

    def pool_deployment(self, pool: Pool) -> Deployment:
        """The deployment a pool's instances run: its model's, at the pool's TP."""
        model = pool.model or self.deployments[0].model
        dep = next(
            (d for d in self.deployments if get_model(d.model).name == get_model(model).name),
            self.deployments[0],
        )
        return replace(dep, tp=pool.tp or dep.tp, replicas=pool.count)


#: What happens to a call longer than its deployment's ``max_model_len``.
TOO_LONG = ("reject", "truncate")


def max_model_len(d: Deployment) -> int:
    """The longest sequence (prompt + output tokens) ``d`` serves: its ``max_model_len``,
    or the model's context when that is 0."""
    return d.max_model_len or get_model(d.model).max_context


def _check(cond: bool, where: str, field_: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {field_}: {msg}")


#: Largest magnitude of any number in a cluster config (no count, token limit or
#: duration of a real cluster comes near it; beyond it arithmetic loses meaning).
MAX_CONFIG_NUMBER = 10**9


def _typed(where: str, field_: str, value: Any, default: Any) -> Any:
    """Check ``value`` has the type of ``default`` (ints accepted for floats); numbers
    must be finite and at most :data:`MAX_CONFIG_NUMBER` in magnitude."""
    if isinstance(default, bool):
        _check(isinstance(value, bool), where, field_, f"expected true/false, got {value!r}")
    elif isinstance(default, int):
        _check(
            isinstance(value, int) and not isinstance(value, bool),
            where,
            field_,
            f"expected an integer, got {value!r}",
        )
        _check(
            abs(value) <= MAX_CONFIG_NUMBER,
            where,
            field_,
            f"{value:.3g} is too large (at most {MAX_CONFIG_NUMBER:.0e})",
        )
    elif isinstance(default, float):
        _check(
            isinstance(value, int | float) and not isinstance(value, bool),
            where,
            field_,
            f"expected a number, got {value!r}",
        )
        value = float(value)
        _check(math.isfinite(value), where, field_, f"expected a finite number, got {value!r}")
        _check(
            abs(value) <= MAX_CONFIG_NUMBER,
            where,
            field_,
            f"{value:.3g} is too large (at most {MAX_CONFIG_NUMBER:.0e})",
        )
    elif isinstance(default, str):
        _check(isinstance(value, str), where, field_, f"expected a string, got {value!r}")
    return value


def _build(cls: type, raw: Any, where: str, prefix: str) -> Any:
    _check(isinstance(raw, dict), where, prefix, "expected a table")
    defaults = cls()
    known = {f for f in defaults.__dataclass_fields__}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: {prefix}.{key}: unknown field{hint}")
        kwargs[key] = _typed(where, f"{prefix}.{key}", value, getattr(defaults, key))
    return cls(**kwargs)


def _validate_nodes(cfg: ClusterConfig) -> None:
    """Check the GPU type and the node groups."""
    w = cfg.source
    _check(cfg.gpu in GPUS, w, "gpu", f"unknown GPU {cfg.gpu!r}; known: {', '.join(GPUS)}")
    _check(len(cfg.nodes) > 0, w, "nodes", "at least one node group is required")
    for i, n in enumerate(cfg.nodes):
        _check(
            n.builder in BUILDERS,
            w,
            f"nodes[{i}].builder",
            f"unknown builder {n.builder!r}; known: {', '.join(BUILDERS)}",
        )
        _check(n.count >= 1, w, f"nodes[{i}].count", f"must be >= 1, got {n.count}")
        _check(n.gpus >= 1, w, f"nodes[{i}].gpus", f"must be >= 1, got {n.gpus}")
        if n.builder == "dgx-a100":
            _check(n.gpus == 8, w, f"nodes[{i}].gpus", "a dgx-a100 node has exactly 8 GPUs")
            _check(
                cfg.gpu not in GPUS or GPUS[cfg.gpu].has_nvlink,
                w,
                f"nodes[{i}].builder",
                f"GPU {cfg.gpu} has no NVLink, so it cannot sit on an NVSwitch (dgx-a100) node; "
                'use builder = "pcie-server"',
            )


def _validate_engine_limits(w: str, p: str, d: Deployment, max_context: int) -> None:
    """Check a deployment's engine limits and start-up fields (``p``: its field prefix;
    ``max_context``: its model's context in tokens)."""
    _check(d.replicas >= 0, w, f"{p}.replicas", f"must be >= 0, got {d.replicas}")
    _check(d.max_num_seqs >= 1, w, f"{p}.max_num_seqs", "must be >= 1")
    _check(
        d.max_num_batched_tokens >= d.max_num_seqs,
        w,
        f"{p}.max_num_batched_tokens",
        f"must be >= max_num_seqs ({d.max_num_seqs}) so every running sequence can decode",
    )
    _check(d.block_size >= 1, w, f"{p}.block_size", "must be >= 1")
    _check(0 < d.gpu_memory_utilization <= 1, w, f"{p}.gpu_memory_utilization", "must be in (0, 1]")
    _check(
        d.weight_source in ("nvme", "host", "remote"),
        w,
        f"{p}.weight_source",
        "expected nvme, host or remote",
    )
    _check(d.init_s >= 0, w, f"{p}.init_s", "must be >= 0")
    _check(d.num_gpu_blocks_override >= 0, w, f"{p}.num_gpu_blocks_override", "must be >= 0")
    _check(
        d.max_model_len == 0 or d.max_model_len >= 2,
        w,
        f"{p}.max_model_len",
        f"must be 0 (the model's context, {max_context}) or >= 2 (a prompt token "
        f"and an output token), got {d.max_model_len}",
    )
    _check(
        d.too_long in TOO_LONG,
        w,
        f"{p}.too_long",
        f"expected one of {', '.join(TOO_LONG)}, got {d.too_long!r}",
    )
    _check(d.scheduling_s >= 0, w, f"{p}.scheduling_s", "must be >= 0")
    _check(d.image_pull_s >= 0, w, f"{p}.image_pull_s", "must be >= 0")
    _check(d.mesh_hops >= 0, w, f"{p}.mesh_hops", "must be >= 0")
    _check(
        0 < d.mesh_hop_p90_s <= d.mesh_hop_p99_s,
        w,
        f"{p}.mesh_hop_p90_s",
        "need 0 < mesh_hop_p90_s <= mesh_hop_p99_s",
    )
    _check(d.mesh_hop_cpu_s >= 0, w, f"{p}.mesh_hop_cpu_s", "must be >= 0")
    _check(d.host_kv_gib >= 0, w, f"{p}.host_kv_gib", "must be >= 0")
    _check(d.cpu_offload_gib >= 0, w, f"{p}.cpu_offload_gib", "must be >= 0 (0: no tier)")


def _validate_deployment(cfg: ClusterConfig, i: int, d: Deployment) -> None:
    """Check deployment ``i``: its model, parallelism, limits and precision."""
    w = cfg.source
    p = f"deployments[{i}]"
    try:
        spec = get_model(d.model)
        spec.check_tp(d.tp)
    except ConfigError as e:
        raise ConfigError(f"{w}: {p}.model: {e}") from None
    _check(d.pp >= 1, w, f"{p}.pp", f"must be >= 1, got {d.pp}")
    _check(
        spec.num_layers % d.pp == 0,
        w,
        f"{p}.pp",
        f"PP={d.pp} does not divide {spec.num_layers} layers",
    )
    _validate_engine_limits(w, p, d, spec.max_context)
    for f, v in (("dtype", d.dtype), ("kv_cache_dtype", d.kv_cache_dtype)):
        _check(
            v in ("", "auto", *DEPLOY_DTYPES),
            w,
            f"{p}.{f}",
            f"{v!r} is not one of {', '.join(DEPLOY_DTYPES)} (or auto: the model's own)",
        )
    if d.dtype == "fp8" and cfg.gpu in GPUS:
        _check(
            GPUS[cfg.gpu].supports_fp8,
            w,
            f"{p}.dtype",
            f"fp8 needs FP8 tensor cores, which {cfg.gpu} does not have "
            f"(GPUs with FP8: {', '.join(n for n, g in GPUS.items() if g.supports_fp8)})",
        )
    node_gpus = max(n.gpus for n in cfg.nodes)
    _check(
        d.tp <= node_gpus or d.allow_cross_node_tp,
        w,
        f"{p}.tp",
        f"TP={d.tp} is larger than a node ({node_gpus} GPUs): its all-reduces would cross "
        "the network every layer; lower tp, or set allow_cross_node_tp = true",
    )


def _pool_where(
    cfg: ClusterConfig, lines: dict[tuple[int, str], int] | None, i: int, f: str
) -> str:
    """Where pool ``i``'s field ``f`` is set: ``file:line`` when the line is known."""
    line = None if lines is None else lines.get((i, f), lines.get((i, ""), None))
    return cfg.source if line is None else f"{cfg.source}:{line}"


def _validate_pools(cfg: ClusterConfig, lines: dict[tuple[int, str], int] | None) -> None:
    """Check the ``[[pools]]``: role, model (deployed), TP, count, and that every pooled
    model has an instance that decodes.  ``lines``: (pool, field) -> line in the file."""
    deployed = {get_model(d.model).name for d in cfg.deployments}
    decodes: dict[str, bool] = {}
    for i, pool in enumerate(cfg.pools):
        p = f"pools[{i}]"

        def where(f: str, i: int = i) -> str:
            return _pool_where(cfg, lines, i, f)

        _check(
            pool.role in POOL_ROLES,
            where("role"),
            f"{p}.role",
            f"expected one of {', '.join(POOL_ROLES)}, got {pool.role!r}",
        )
        try:
            name = get_model(pool.model or cfg.deployments[0].model).name
        except ConfigError as e:
            raise ConfigError(f"{where('model')}: {p}.model: {e}") from None
        _check(
            name in deployed,
            where("model"),
            f"{p}.model",
            f"{name} has no [[deployments]] entry (its engine limits); deployed: "
            + ", ".join(sorted(deployed)),
        )
        _check(pool.count >= 1, where("count"), f"{p}.count", f"must be >= 1, got {pool.count}")
        _check(
            pool.tp >= 0,
            where("tp"),
            f"{p}.tp",
            f"must be >= 1 (0: the deployment's), got {pool.tp}",
        )
        dep = cfg.pool_deployment(pool)
        try:
            get_model(dep.model).check_tp(dep.tp)
        except ConfigError as e:
            raise ConfigError(f"{where('tp')}: {p}.tp: {e}") from None
        _check(
            dep.pp == 1,
            where("model"),
            f"{p}.model",
            f"the deployment of {name} has pp={dep.pp}; pools serve pp = 1 only",
        )
        node_gpus = max(n.gpus for n in cfg.nodes)
        _check(
            dep.tp <= node_gpus,
            where("tp"),
            f"{p}.tp",
            f"TP={dep.tp} is larger than a node ({node_gpus} GPUs)",
        )
        decodes[name] = decodes.get(name, False) or pool.role != "prefill"
    for name, ok in decodes.items():
        _check(
            ok,
            cfg.source,
            "pools",
            f"{name} has prefill pools but no decode or mixed pool to decode its calls",
        )


def _gpus_needed(cfg: ClusterConfig) -> int:
    """GPUs the replicas at start need: each pool's count x TP, plus the deployment
    replicas of models without pools."""
    pooled = {get_model(p.model or cfg.deployments[0].model).name for p in cfg.pools}
    need = sum(
        d.replicas * d.gpus_per_replica
        for d in cfg.deployments
        if get_model(d.model).name not in pooled
    )
    return need + sum(p.count * cfg.pool_deployment(p).tp for p in cfg.pools)


def validate(
    cfg: ClusterConfig, pool_lines: dict[tuple[int, str], int] | None = None
) -> ClusterConfig:
    """Check every field that can be checked without placing replicas (``pool_lines``:
    where each ``[[pools]]`` field is in the file, for the error messages)."""
    w = cfg.source
    _validate_nodes(cfg)
    _check(len(cfg.deployments) > 0, w, "deployments", "at least one deployment is required")
    for f in ("router_delay_s", "autoscaler_delay_s"):
        _check(getattr(cfg.policies, f) >= 0, w, f"policies.{f}", "must be >= 0")
    for i, d in enumerate(cfg.deployments):
        _validate_deployment(cfg, i, d)
    if cfg.pools:
        _validate_pools(cfg, pool_lines)
    for i, t in enumerate(cfg.kv_store):
        for key in ("tier", "eviction"):
            _check_tier(t, key, w, i)
        for key in ("capacity_gib", "bandwidth_gbs", "latency_s"):
            _check(getattr(t, key) >= 0, w, f"kv_store[{i}].{key}", "must be >= 0 (0: the default)")
    need = _gpus_needed(cfg)
    _check(
        need <= cfg.num_gpus,
        w,
        "deployments",
        f"replicas need {need} GPUs but the nodes have {cfg.num_gpus}",
    )
    return cfg


def _key_line(text: str, key: str) -> int | None:
    """The line (1-based) where top-level ``key = ...`` is set in a TOML text, if found."""
    import re

    m = re.search(rf"^[ \t]*{re.escape(key)}[ \t]*=", text, re.M)
    return text.count("\n", 0, m.start()) + 1 if m else None


def parse_plugins(
    value: Any,
    source: str,
    line: int | None = None,
    field_: str = "plugins",
    base_dir: str | Path | None = None,
) -> tuple[str, ...]:
    """Load the policy plugins a config lists (``plugins = ["my_router.py", "pkg.mod:Cls"]``;
    paths relative to ``base_dir``, default the file's directory) and return them
    resolved (absolute paths), so that the policies they register can be named in
    ``[policies]``.  A bad entry is one error naming the file, line and ``plugins[i]``
    (``field_``: the key as the file names it)."""
    from policies.registry import load_plugin, resolve_plugin_ref

    where = source if line is None else f"{source}:{line}"
    _check(
        isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value),
        where,
        field_,
        f"expected a list of plugin files or module:Class names, got {value!r}",
    )
    base = Path(source).parent if base_dir is None else Path(base_dir)
    out = []
    for i, ref in enumerate(value):
        load_plugin(ref, base, where=f"{where}: {field_}[{i}]")
        out.append(resolve_plugin_ref(ref, base))
    return tuple(out)


def _array_table_lines(text: str, name: str) -> dict[tuple[int, str], int]:
    """Lines (1-based) of each ``[[name]]`` table of a TOML text: (index, "") -> its
    header, (index, key) -> the line setting ``key`` inside it."""
    import re

    out: dict[tuple[int, str], int] = {}
    count = -1
    current: int | None = None
    for n, line in enumerate(text.splitlines(), start=1):
        head = re.match(r"^\s*\[(\[?)\s*([^\]]+?)\s*\]", line)
        if head:
            current = None
            if head.group(1) and head.group(2) == name:
                count += 1
                current = count
                out[(count, "")] = n
            continue
        key = re.match(r"^\s*([A-Za-z0-9_]+)\s*=", line)
        if current is not None and key:
            out.setdefault((current, key.group(1)), n)
    return out


T = TypeVar("T")


def _array_tables(
    raw: Any,
    w: str,
    name: str,
    cls: type[T],
    lines: dict[tuple[int, str], int],
    check: Callable[[T, str, str, int], None] | None = None,
) -> Iterator[tuple[T, str]]:
    """Each table of the ``[[name]]`` array built as ``cls``, with the ``file:line`` of
    its header.  Every field is first built on its own with its line (and passed to
    ``check(item, field, file:line, index)``), so a bad one is an error naming
    ``file:line: name[i].field``.  Lazy: a caller's check on table ``i`` comes before
    table ``i + 1`` is read."""
    _check(isinstance(raw, list), w, name, f"expected an array of tables ([[{name}]])")
    for i, t in enumerate(raw):
        head = lines.get((i, ""))
        at_head = w if head is None else f"{w}:{head}"
        _check(isinstance(t, dict), at_head, f"{name}[{i}]", "expected a table")
        for key, value in t.items():
            line = lines.get((i, key), head)
            at = w if line is None else f"{w}:{line}"
            one = _build(cls, {key: value}, at, f"{name}[{i}]")
            if check is not None:
                check(one, key, at, i)
        yield _build(cls, t, w, f"{name}[{i}]"), at_head


def _parse_pools(
    raw: Any, w: str, text: str
) -> tuple[tuple[Pool, ...], dict[tuple[int, str], int]]:
    """The ``[[pools]]`` array and where each of its fields is in the file; a bad field
    is an error naming ``file:line: pools[i].field``."""
    lines = _array_table_lines(text, "pools")
    return tuple(p for p, _ in _array_tables(raw, w, "pools", Pool, lines)), lines


def _parse_store(raw: Any, w: str, text: str) -> tuple[KVStoreTier, ...]:
    """The ``[[kv_store]]`` tiers, each field checked with its line."""
    lines = _array_table_lines(text, "kv_store")
    tiers: list[KVStoreTier] = []
    for i, (tier, at_head) in enumerate(
        _array_tables(raw, w, "kv_store", KVStoreTier, lines, _check_tier)
    ):
        _check(
            tier.tier not in [x.tier for x in tiers],
            at_head,
            f"kv_store[{i}].tier",
            f"tier {tier.tier!r} is listed twice",
        )
        tiers.append(tier)
    return tuple(tiers)


def _check_tier(t: KVStoreTier, key: str, at: str, i: int) -> None:
    """Check the field ``key`` of store tier ``i`` (``at``: file:line)."""
    f = f"kv_store[{i}].{key}"
    if key == "tier":
        _check(
            t.tier in KV_STORE_TIERS,
            at,
            f,
            f"expected one of {', '.join(KV_STORE_TIERS)}, got {t.tier!r}",
        )
    elif key == "eviction":
        _check(
            t.eviction in KV_STORE_EVICTION,
            at,
            f,
            f"expected one of {', '.join(KV_STORE_EVICTION)}, got {t.eviction!r}",
        )
    elif key in ("capacity_gib", "bandwidth_gbs"):
        _check(getattr(t, key) > 0, at, f, "must be > 0")
    elif key == "latency_s":
        _check(t.latency_s >= 0, at, f, "must be >= 0")


def parse_config(raw: dict[str, Any], source: str, text: str = "") -> ClusterConfig:
    """Build and validate a config from a decoded TOML document (``text``: the file's
    text, for line numbers)."""
    w = source
    known = {"name", "gpu", "nodes", "deployments", "policies", "costmodel", "engine", "plugins"}
    known |= {"pools", "kv_transfer", "kv_store"}
    pool_lines: dict[tuple[int, str], int] | None = None
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"{w}: {key}: unknown top-level field; expected one of {', '.join(sorted(known))}"
            )
    kwargs: dict[str, Any] = {"source": source}
    if "name" in raw:
        kwargs["name"] = _typed(w, "name", raw["name"], "")
    if "gpu" in raw:
        kwargs["gpu"] = _typed(w, "gpu", raw["gpu"], "")
    if "nodes" in raw:
        nodes = raw["nodes"]
        if isinstance(nodes, int) and not isinstance(nodes, bool):
            kwargs["nodes"] = (NodeGroup("dgx-a100", nodes, 8),)
        else:
            _check(
                isinstance(nodes, list),
                w,
                "nodes",
                "expected an array of tables ([[nodes]]) or a node count",
            )
            kwargs["nodes"] = tuple(
                _build(NodeGroup, n, w, f"nodes[{i}]") for i, n in enumerate(nodes)
            )
    if "deployments" in raw:
        deps = raw["deployments"]
        _check(
            isinstance(deps, list),
            w,
            "deployments",
            "expected an array of tables ([[deployments]])",
        )
        kwargs["deployments"] = tuple(
            _build(Deployment, d, w, f"deployments[{i}]") for i, d in enumerate(deps)
        )
    if "plugins" in raw:
        kwargs["plugins"] = parse_plugins(raw["plugins"], source, _key_line(text, "plugins"))
    if "pools" in raw:
        kwargs["pools"], pool_lines = _parse_pools(raw["pools"], w, text)
    if "kv_store" in raw:
        kwargs["kv_store"] = _parse_store(raw["kv_store"], w, text)
    if "kv_transfer" in raw:
        kwargs["kv_transfer"] = _build(KVTransfer, raw["kv_transfer"], w, "kv_transfer")
    if "policies" in raw:
        kwargs["policies"] = _build(PolicyConfig, raw["policies"], w, "policies")
    if "costmodel" in raw:
        cm = raw["costmodel"]
        _check(
            isinstance(cm, dict) and set(cm) <= {"path"},
            w,
            "costmodel",
            "expected a table with 'path'",
        )
        path = Path(_typed(w, "costmodel.path", cm["path"], ""))
        if not path.is_absolute():
            path = Path(source).parent / path
        kwargs["costmodel"] = str(path)
    if "engine" in raw:
        eng = raw["engine"]
        _check(
            isinstance(eng, dict) and set(eng) <= {"fast_forward"},
            w,
            "engine",
            "expected a table with 'fast_forward'",
        )
        kwargs["fast_forward"] = _typed(
            w, "engine.fast_forward", eng.get("fast_forward", True), True
        )
    return validate(ClusterConfig(**kwargs), pool_lines)


def load_cluster_config(path: str | Path) -> ClusterConfig:
    """Read and validate a cluster TOML file."""
    p = str(path)
    raw, text = read_toml(p)
    if not raw:
        raise InputError(p, 1, None, "empty config (see examples/clusters/default.toml)")
    return parse_config(raw, p, text)


def default_cluster_config() -> ClusterConfig:
    """The embedded default: 2 DGX A100 80GB nodes, Llama-3.1-70B at TP=4, 4 replicas
    (Llama-3-70B's architecture with a 128k context, so that the default trace's
    longest prompts, 11.6k tokens, fit its ``max_model_len``)."""
    return validate(ClusterConfig())


def check_serves(cfg: ClusterConfig) -> ClusterConfig:
    """Check that every deployment can get a replica; returns ``cfg``.

    ``replicas = 0`` is valid only with an autoscaler that starts replicas from zero
    (``keep_warm``, ``queue_depth``, ``hpa`` unless ``min_replicas=0`` on its per-pod
    ``gpu_util`` metric).  Under ``static`` (the default) nothing would ever serve the
    calls, and an ``hpa`` that cannot scale from zero would wait for ever.  Called on
    the final config (after the command line's overrides), before simulating.
    """
    from policies.registry import parse_spec

    name, params = parse_spec(cfg.policies.autoscaler)
    never = name == "static"
    if name == "hpa":
        per_pod = params.get("metric", "gpu_util") == "gpu_util"
        never = per_pod and params.get("min_replicas", "1").strip() in ("0", "0.0")
    if not never:
        return cfg
    for i, d in enumerate(cfg.deployments):
        _check(
            d.replicas >= 1,
            cfg.source,
            f"deployments[{i}].replicas",
            f"0 replicas of {d.model} under autoscaler {cfg.policies.autoscaler!r}, which never "
            "starts one: nothing would serve its calls; set replicas >= 1, or an autoscaler "
            "that scales from zero (keep_warm, queue_depth, hpa:metric=queue,min_replicas=0)",
        )
    return cfg


QUICK_FIELDS = (
    "model",
    "tp",
    "pp",
    "replicas",
    "max_num_seqs",
    "max_num_batched_tokens",
    "gpu_memory_utilization",
    "num_gpu_blocks_override",
    "cpu_offload_gib",
    "block_size",
    "dtype",
    "kv_cache_dtype",
    "max_model_len",
    "too_long",
)


def _pool_overrides(
    cfg: ClusterConfig,
    prefill_replicas: int | None,
    decode_replicas: int | None,
    prefill_tp: int | None,
    decode_tp: int | None,
) -> tuple[Pool, ...]:
    """The pools after the quick flags: ``--prefill-replicas`` / ``--decode-replicas``
    set the count of the first deployment's prefill / decode pool (created when
    missing; 0 removes it), ``--prefill-tp`` / ``--decode-tp`` the TP of that role's
    pools of that model."""
    model = get_model(cfg.deployments[0].model).name
    pools = list(cfg.pools)

    def mine(p: Pool, role: str) -> bool:
        return p.role == role and get_model(p.model or model).name == model

    for role, count, tp in (
        ("prefill", prefill_replicas, prefill_tp),
        ("decode", decode_replicas, decode_tp),
    ):
        if count is not None:
            for name, v in ((f"--{role}-replicas", count), (f"--{role}-tp", tp)):
                if v is not None and v < 0:
                    raise ConfigError(f"{name}: must be >= 0, got {v}")
            old = next((p for p in pools if mine(p, role)), None)
            pools = [p for p in pools if not mine(p, role)]
            if count > 0:
                keep_tp = old.tp if old is not None else 0
                pools.append(Pool(role, "", tp if tp is not None else keep_tp, count))
        elif tp is not None:
            pools = [replace(p, tp=tp) if mine(p, role) else p for p in pools]
    order = {r: i for i, r in enumerate(POOL_ROLES)}
    return tuple(sorted(pools, key=lambda p: order.get(p.role, 9)))


def apply_overrides(
    cfg: ClusterConfig,
    *,
    prefill_replicas: int | None = None,
    decode_replicas: int | None = None,
    prefill_tp: int | None = None,
    decode_tp: int | None = None,
    gpu: str | None = None,
    nodes: int | None = None,
    node_builder: str | None = None,
    policies: dict[str, str] | None = None,
    costmodel: str | None = None,
    fast_forward: bool | None = None,
    plugins: tuple[str, ...] | list[str] = (),
    **deployment: Any,
) -> ClusterConfig:
    """Return ``cfg`` with quick-flag overrides applied (None means keep).

    ``deployment`` fields (``model``, ``tp``, ``replicas``, ...) override the first
    deployment (``too_long``: every deployment).  ``prefill_replicas``,
    ``decode_replicas``, ``prefill_tp``, ``decode_tp``: the first deployment's prefill and
    decode pools (:func:`_pool_overrides`).  ``nodes`` replaces the node list by that many nodes of the first
    group's builder (or ``node_builder``).  ``plugins`` (resolved references, already
    loaded) are added after the config's own.
    """
    changes: dict[str, Any] = {}
    if gpu is not None:
        changes["gpu"] = gpu
        if node_builder is None and (
            gpu.endswith("-pcie") or (gpu in GPUS and GPUS[gpu].form_factor == "pcie")
        ):
            node_builder = "pcie-server"
    if nodes is not None or node_builder is not None:
        first = cfg.nodes[0]
        builder = node_builder or first.builder
        count = nodes if nodes is not None else sum(n.count for n in cfg.nodes)
        changes["nodes"] = (NodeGroup(builder, count, 8 if builder == "dgx-a100" else first.gpus),)
    dep = {k: v for k, v in deployment.items() if v is not None}
    unknown = set(dep) - set(QUICK_FIELDS)
    if unknown:
        raise ConfigError(f"unknown deployment override(s): {', '.join(sorted(unknown))}")
    too_long = dep.pop("too_long", None)
    deps = cfg.deployments
    if dep:
        deps = (replace(deps[0], **dep),) + deps[1:]
    if too_long is not None:  # a serving-wide choice: every deployment
        deps = tuple(replace(d, too_long=too_long) for d in deps)
    if deps is not cfg.deployments:
        changes["deployments"] = deps
    if policies:
        pol: dict[str, Any] = {k: v for k, v in policies.items() if v is not None}
        changes["policies"] = replace(cfg.policies, **pol)
    if costmodel is not None:
        changes["costmodel"] = costmodel
    if fast_forward is not None:
        changes["fast_forward"] = fast_forward
    if any(v is not None for v in (prefill_replicas, decode_replicas, prefill_tp, decode_tp)):
        base = replace(cfg, deployments=changes.get("deployments", cfg.deployments))
        pools = _pool_overrides(base, prefill_replicas, decode_replicas, prefill_tp, decode_tp)
        if pools != cfg.pools:
            changes["pools"] = pools
    extra = tuple(p for p in dict.fromkeys(plugins) if p not in cfg.plugins)
    if extra:
        changes["plugins"] = cfg.plugins + extra
    if not changes:
        return cfg
    return validate(replace(cfg, **changes, source=f"{cfg.source} + command-line overrides"))
