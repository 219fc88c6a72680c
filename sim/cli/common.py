"""Flags shared by every command that runs simulations (``run``, ``compare``, ``sweep``).

``add_run_arguments`` adds them; ``cluster_from_args`` and ``workload_from_args`` turn
the parsed flags into a validated cluster config and a loaded workload.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim.cluster.config import (
    ClusterConfig,
    apply_overrides,
    check_serves,
    default_cluster_config,
    load_cluster_config,
)
from sim.cluster.faults import FaultSchedule, load_faults
from sim.common.errors import ConfigError, InputError
from sim.common.paths import DEFAULT_TRACE
from sim.specs.hardware import gpu_help
from sim.workload.calls import AnyWorkload, Workload
from sim.workload.traces import load_trace, open_trace

POLICY_FLAGS = ("router", "batching", "retention", "placement", "autoscaler", "persistence")


def add_trace_arguments(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--trace",
        required=required,
        help="trace file in any supported format (default: the embedded traces/default.jsonl)",
    )
    p.add_argument(
        "--trace-format",
        default=None,
        help="trace format (agentsim, mooncake, azure, burstgpt, lmcache, csv, synth: a synthetic-workload TOML); auto-detected by default",
    )


def add_policy_arguments(p: argparse.ArgumentParser, policy_flags: bool = True) -> None:
    """``--plugin`` and (with ``policy_flags``) the policy spec flags."""
    p.add_argument(
        "--plugin",
        action="append",
        metavar="PATH.py|module:Class",
        help="load a policy plugin before policies are resolved (repeatable): a Python file "
        "whose @register classes become policies, or module:Class; see docs/policies.md",
    )
    if not policy_flags:
        return
    p.add_argument(
        "--policy",
        help="routing policy (alias of --router), e.g. prefix_affinity:cache_threshold=0.5",
    )
    p.add_argument("--router", help="routing policy spec")
    p.add_argument("--batching", help="batching policy spec (e.g. fcfs, sarathi:chunk_size=512)")
    p.add_argument("--retention", help="KV retention policy spec (e.g. lru)")
    p.add_argument("--placement", help="placement policy spec (e.g. first_fit)")
    p.add_argument("--autoscaler", help="autoscaling policy spec (e.g. static)")
    p.add_argument(
        "--persistence",
        help="session-state persistence under faults: none, host_offload, remote_store, migrate",
    )


def add_engine_arguments(g: argparse._ArgumentGroup) -> None:
    """The quick flags that set the first deployment's engine (vLLM's flags)."""
    g.add_argument("--max-num-seqs", type=int, help="max running sequences per replica")
    g.add_argument("--max-num-batched-tokens", type=int, help="token budget per iteration")
    g.add_argument("--block-size", type=int, help="KV block size in tokens")
    g.add_argument(
        "--gpu-memory-utilization",
        type=float,
        help="fraction of GPU memory vLLM may use for weights, activations and KV "
        "(default 0.9); the KV block count follows as vLLM profiles it",
    )
    g.add_argument(
        "--gpu-kv-blocks",
        dest="num_gpu_blocks_override",
        type=int,
        help="KV blocks per replica, replacing the count derived from memory "
        "(vLLM's --num-gpu-blocks-override; e.g. the 'GPU KV cache size' a server logged)",
    )
    g.add_argument(
        "--cpu-offload-gib",
        type=float,
        help="vLLM CPU KV offload tier (OffloadingConnector): GiB of host memory per GPU; "
        "evicted prefixes load back over PCIe instead of being recomputed (0: none)",
    )
    g.add_argument(
        "--dtype",
        choices=("fp16", "bf16", "fp8"),
        help="weight and KV precision of the first deployment (default: the model's own); "
        "fp8 = 1 byte per weight and per KV element and FP8 tensor-core GEMMs (H100, H200, "
        "L40S, B200; not A100)",
    )
    g.add_argument(
        "--kv-cache-dtype",
        choices=("auto", "fp16", "bf16", "fp8"),
        help="KV-cache precision (as vLLM's flag; default auto: --dtype when given, else "
        "the model's own)",
    )
    g.add_argument(
        "--max-model-len",
        type=int,
        metavar="TOKENS",
        help="longest prompt + output a replica of the first deployment serves "
        "(vLLM's flag; default: the model's context, e.g. 8192 for Llama-3)",
    )
    g.add_argument(
        "--too-long",
        choices=("reject", "truncate"),
        help="calls longer than max_model_len: reject (default, as vLLM's 400: the call "
        "fails at arrival, reason exceeds_max_model_len) or truncate (keep the prompt's "
        "last max_model_len - output tokens)",
    )


def add_run_arguments(p: argparse.ArgumentParser, policy_flags: bool = True) -> None:
    """Every flag of ``agentsim run`` except ``--out``."""
    add_trace_arguments(p)
    p.add_argument(
        "--cluster", help="cluster config TOML (default: 2 DGX A100 nodes, Llama-3.1-70B TP=4 x4)"
    )
    add_policy_arguments(p, policy_flags)
    p.add_argument(
        "--faults",
        help="fault schedule TOML (GPU/node failures, pod restarts, link cuts, spot preemption); "
        "see examples/faults/",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of every policy (default 0)")
    p.add_argument(
        "--load-scale",
        type=float,
        default=1.0,
        help="multiply the trace's arrival rate (0.5 halves it)",
    )
    p.add_argument(
        "--costmodel",
        help="cost model TOML of any kind (default: the GPU's serving-calibrated model, vllm-serving)",
    )
    g = p.add_argument_group("quick cluster flags (override the cluster config)")
    g.add_argument("--gpu", help=f"GPU type: {gpu_help()}")
    g.add_argument("--nodes", type=int, help="number of nodes")
    g.add_argument("--model", help="model of the first deployment (preset or HF name)")
    g.add_argument("--tp", type=int, help="tensor-parallel degree")
    g.add_argument("--pp", type=int, help="pipeline-parallel degree")
    g.add_argument("--replicas", type=int, help="replicas of the first deployment")
    g.add_argument(
        "--prefill-replicas",
        type=int,
        help="prefill instances of the first deployment's model (disaggregated serving; "
        "with --decode-replicas; 0 removes the pool)",
    )
    g.add_argument(
        "--decode-replicas", type=int, help="decode instances of the first deployment's model"
    )
    g.add_argument("--prefill-tp", type=int, help="TP of each prefill instance (default: --tp)")
    g.add_argument("--decode-tp", type=int, help="TP of each decode instance (default: --tp)")
    add_engine_arguments(g)
    g.add_argument(
        "--no-fast-forward",
        action="store_true",
        help="step every iteration (for validation; slower)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "--no-html",
        action="store_true",
        help="skip the per-run report.html (its plots are the slowest output); report.md is still written",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an --out directory that already holds results (it is swapped whole "
        "for the new one at the end; without --force such an --out is an error)",
    )


def policy_overrides(args: argparse.Namespace) -> dict[str, str]:
    """The policy flags given (``--policy`` is ``--router``), by config field.

    A flag that is given but empty (``--policy ""``) is an error, not the default.
    """
    out: dict[str, str] = {}
    given = [("router", "router"), ("policy", "router")]
    given += [(k, k) for k in POLICY_FLAGS[1:]]
    for flag, key in given:
        v = getattr(args, flag, None)
        if v is None:
            continue
        if not str(v).strip():
            raise ConfigError(
                f"--{flag}: empty policy spec; name a policy (agentsim policies lists them)"
            )
        out.setdefault(key, v)  # --router wins over --policy
    return out


def cluster_from_args(
    args: argparse.Namespace, policies: dict[str, str] | None = None
) -> ClusterConfig:
    """The cluster config named by ``--cluster`` (or the default) with quick flags applied
    and the ``--plugin`` plugins loaded (so their policies can be named)."""
    plugins = plugins_from_args(args)
    cfg = load_cluster_config(args.cluster) if args.cluster else default_cluster_config()
    pol = policy_overrides(args)
    if policies:
        pol.update(policies)
    overrides: dict[str, Any] = {
        "model": args.model,
        "tp": args.tp,
        "pp": args.pp,
        "replicas": args.replicas,
        "max_num_seqs": args.max_num_seqs,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "block_size": args.block_size,
        "gpu_memory_utilization": getattr(args, "gpu_memory_utilization", None),
        "num_gpu_blocks_override": getattr(args, "num_gpu_blocks_override", None),
        "cpu_offload_gib": getattr(args, "cpu_offload_gib", None),
        "dtype": getattr(args, "dtype", None),
        "kv_cache_dtype": getattr(args, "kv_cache_dtype", None),
        "max_model_len": getattr(args, "max_model_len", None),
        "too_long": getattr(args, "too_long", None),
    }
    cfg = apply_overrides(
        cfg,
        gpu=args.gpu,
        nodes=args.nodes,
        prefill_replicas=getattr(args, "prefill_replicas", None),
        decode_replicas=getattr(args, "decode_replicas", None),
        prefill_tp=getattr(args, "prefill_tp", None),
        decode_tp=getattr(args, "decode_tp", None),
        policies=pol,
        costmodel=args.costmodel,
        fast_forward=False if args.no_fast_forward else None,
        plugins=plugins,
        **overrides,
    )
    # compare's --policies entries may change the autoscaler: sim.api.compare checks
    # each entry's final config instead.
    return cfg if getattr(args, "policies", None) is not None else check_serves(cfg)


def plugins_from_args(args: argparse.Namespace) -> list[str]:
    """Load the ``--plugin`` plugins; returns them resolved (absolute file paths)."""
    from policies.registry import load_plugins, resolve_plugin_ref

    refs = getattr(args, "plugin", None) or []
    load_plugins(refs, where="--plugin")
    return [resolve_plugin_ref(r) for r in refs]


def trace_path(args: argparse.Namespace) -> str:
    if args.trace:
        return str(args.trace)
    if not DEFAULT_TRACE.exists():
        raise InputError(
            str(DEFAULT_TRACE), None, None, "the embedded default trace is missing; pass --trace"
        )
    return str(DEFAULT_TRACE)


def faults_from_args(args: argparse.Namespace) -> FaultSchedule | None:
    """The fault schedule named by ``--faults`` (None without the flag)."""
    path = getattr(args, "faults", None)
    return load_faults(path) if path else None


def workload_from_args(args: argparse.Namespace) -> Workload:
    return load_trace(trace_path(args), args.trace_format)


def replay_from_args(args: argparse.Namespace) -> AnyWorkload:
    """What ``run`` simulates: as :func:`workload_from_args`, with a synthetic workload
    generated while it is simulated (:func:`sim.workload.traces.open_trace`)."""
    return open_trace(trace_path(args), args.trace_format)


#: Arguments that change only what is printed or which files are drawn, never the
#: results: left out of :func:`run_config_key`.  The quick cluster and policy flags are
#: left out too (the resolved cluster config holds them, ``--plugin`` too), and file arguments count by
#: content (a digest), not by name.
NOT_CONFIG = frozenset(
    {"func", "command", "out", "force", "quiet", "no_html", "run_reports", "html", "dry_run"}
    | {"backend", "workers", "address", "trace", "cluster", "faults", "costmodel"}
    | {"gpu", "nodes", "model", "tp", "pp", "replicas", "max_num_seqs"}
    | {"prefill_replicas", "decode_replicas", "prefill_tp", "decode_tp"}
    | {"max_num_batched_tokens", "block_size", "no_fast_forward", "policy", *POLICY_FLAGS}
    | {"plugin"}
)


def run_config_key(args: argparse.Namespace, cfg: ClusterConfig) -> dict[str, Any]:
    """Everything that determines a run's results, as canonical JSON-able data: the
    resolved cluster config (its cost model by content), the trace and fault files by
    content, and every other argument (seed, load scale, SLO, ...) not in
    :data:`NOT_CONFIG`.  Machine-independent: no absolute paths, no Python hash()."""
    from sim import __version__
    from sim.common.io import file_sha256

    def digest(p: str | None) -> str | None:
        return file_sha256(p) if p and Path(p).exists() else p

    cl = cfg.to_dict()
    cl.pop("source", None)
    cl["costmodel"] = digest(cfg.costmodel)
    if cfg.plugins:  # plugin files by content, like the other files
        cl["plugins"] = [digest(p) for p in cfg.plugins]
    rest = {
        k: v
        for k, v in sorted(vars(args).items())
        if k not in NOT_CONFIG and (v is None or isinstance(v, str | int | float | bool | list))
    }
    return {
        "agentsim": __version__,
        "cluster": cl,
        "trace": digest(trace_path(args)),
        "faults": digest(getattr(args, "faults", None)),
        "args": rest,
    }


def run_config_hash(args: argparse.Namespace, cfg: ClusterConfig) -> str:
    """8 hex digits naming a run configuration (:func:`run_config_key`), as used in the
    default output directory names: other flags give another directory."""
    from sim.common.io import config_digest

    return config_digest(run_config_key(args, cfg))


def prepare_out(
    args: argparse.Namespace, default: Callable[[], Path], inputs: tuple[str | None, ...] = ()
) -> tuple[Path, bool]:
    """The output directory (``--out``, else ``default()``), vetted before simulating,
    and whether it may be replaced: ``--out`` holding results needs ``--force``; the
    default directory (named by the config hash, so the same config) is always replaced.
    ``default`` is called only without ``--out`` (it hashes the trace file)."""
    from sim.common.io import check_not_input, check_output_dir

    given = getattr(args, "out", None)
    out = Path(given) if given else default()
    replace = bool(getattr(args, "force", False)) or not given
    check_output_dir(out, force=replace)
    check_not_input(out, [i for i in inputs if i], directory=True)
    return out, replace
