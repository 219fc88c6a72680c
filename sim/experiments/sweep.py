"""Parameter sweeps: expand a grid of configurations, run it locally or on Ray.

A sweep file (TOML, see ``examples/sweeps/README.md``) has three tables:

- ``[sweep]``: ``name``, ``out`` (default output directory) and ``metrics`` (the
  summary metrics the report plots, dotted: ``ttft_s.p99``).
- ``[base]``: the configuration every run starts from, with the keys of the
  ``agentsim run`` flags (``trace``, ``trace_format``, ``cluster``, ``seed``,
  ``load_scale``, ``router``, ``replicas``, ...) plus quoted dotted config paths
  (``"deployments.0.block_size" = 32``), ``faults`` (a fault schedule TOML),
  ``slo_ttft`` / ``slo_tpot`` (seconds), and ``jitter`` (true/false: arrival jitter,
  by default on when the grid has several ``seeds``: each run's sessions are shifted
  by offsets seeded by its seed, see :func:`sim.experiments.arrivals.jittered`, so that seeds vary the
  arrivals and not only the policies' randomness).
- ``[grid]``: lists to take the product of.  The axes ``traces``, ``clusters``,
  ``policies`` (router specs), ``load_scales`` and ``seeds``, and any cluster config
  field by its dotted path (``"deployments.0.max_num_seqs" = [64, 128]``,
  ``"policies.batching" = ["fcfs", "plas"]``).

Paths in the file are relative to the file.  Command-line flags override ``[base]``.
Each run's id is a hash of its resolved configuration (cluster, trace content,
trace format, seed, load scale, fault schedule content), so a rerun skips every run
whose ``OUT/runs/<id>/summary.json`` exists.  The SLO (``[base]`` ``slo_ttft`` /
``slo_tpot`` in seconds, or ``--slo-ttft`` / ``--slo-tpot``) is not part of the id: it
changes only the reported SLO metrics, so a rerun with another SLO recomputes those
from the saved runs instead of simulating them again.  Runs execute on a backend: in-process
(``workers=1``), a local process pool, or Ray; results come back to this process,
which writes each run directory atomically and rebuilds ``OUT/sweep.parquet``
(+ ``sweep.csv``: config columns and every summary metric, one row per run, sorted
by run id), ``OUT/sweep_perf.csv`` (wall times, kept apart so the table is
deterministic) and ``OUT/sweep_report.md`` with plots of metric vs load per policy.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sim import __version__
from sim.cluster.config import (
    QUICK_FIELDS,
    ClusterConfig,
    _build,
    _typed,
    apply_overrides,
    check_serves,
    default_cluster_config,
    load_cluster_config,
    parse_plugins,
    validate,
)
from sim.common.errors import ConfigError, InputError
from sim.common.io import atomic_write, atomic_write_json, atomic_write_text, read_toml
from sim.common.paths import DEFAULT_TRACE
from sim.experiments.runner import Backend, RunFailure, RunSpec, tidy
from sim.report.results import SLO, write_results
from sim.simulation import SimResult
from sim.workload.traces import detect_format

#: The grid axes with a meaning of their own; every other grid key is a dotted path.
AXES = ("traces", "clusters", "policies", "load_scales", "seeds")

#: Keys of ``[base]`` (and the ``agentsim run`` flags they mirror) with their types.
BASE_KEYS: dict[str, type | tuple[type, ...]] = {
    "trace": str,
    "trace_format": str,
    "cluster": str,
    "costmodel": str,
    "seed": int,
    "load_scale": (int, float),
    "router": str,
    "batching": str,
    "retention": str,
    "placement": str,
    "autoscaler": str,
    "gpu": str,
    "nodes": int,
    "model": str,
    "tp": int,
    "pp": int,
    "replicas": int,
    "prefill_replicas": int,
    "decode_replicas": int,
    "prefill_tp": int,
    "decode_tp": int,
    "max_num_seqs": int,
    "max_num_batched_tokens": int,
    "block_size": int,
    "fast_forward": bool,
    "jitter": bool,
    "persistence": str,
    "faults": str,
    "slo_ttft": (int, float),
    "slo_tpot": (int, float),
    "gpu_memory_utilization": (int, float),
    "num_gpu_blocks_override": int,
    "cpu_offload_gib": (int, float),
    "dtype": str,
    "kv_cache_dtype": str,
    "max_model_len": int,
    "too_long": str,
    "plugins": list,
}
#: ``[base]`` keys holding paths (resolved against the sweep file's directory).
PATH_KEYS = ("trace", "cluster", "costmodel", "faults")
#: ``[base]`` keys read as floats (a TOML integer is accepted).
FLOAT_KEYS = ("load_scale", "slo_ttft", "slo_tpot", "gpu_memory_utilization", "cpu_offload_gib")
#: ``[base]`` keys the grid axes vary.
AXIS_OF_BASE = {
    "trace": "traces",
    "cluster": "clusters",
    "router": "policies",
    "load_scale": "load_scales",
    "seed": "seeds",
}
POLICY_KINDS = ("router", "batching", "retention", "placement", "autoscaler", "persistence")
QUICK_KEYS = QUICK_FIELDS
#: Metrics the report plots when the sweep file names none.
DEFAULT_METRICS = (
    "ttft_s.p50",
    "ttft_s.p99",
    "session_s.p50",
    "throughput_tokens_per_s",
    "prefix_hit_rate",
)
DEFAULT_TRACE_LABEL = "traces/default.jsonl"
#: Summary keys that are config columns of the table already.
_SUMMARY_AS_CONFIG = ("seed", "policy")
PERF_COLUMNS = ("wall_s", "sim_wall_s", "events", "events_per_s", "iterations")


# ---- dotted paths on the frozen config dataclasses ---------------------------------


def set_path(cfg: Any, path: str, value: Any, where: str) -> Any:
    """Return a copy of ``cfg`` with the field at dotted ``path`` set to ``value``.

    Path parts name dataclass fields or index tuples (``deployments.0.tp``).  A table
    value sets several fields of a nested dataclass (``policies = {router = "x"}``);
    a list of tables replaces a tuple of dataclasses (``deployments = [{...}]``).
    Scalars are type-checked against the current value.  ``where`` prefixes every
    error message.  The result is not validated; call :func:`sim.cluster.config.validate`.
    """
    if not path or any(not p for p in path.split(".")):
        raise ConfigError(f"{where}: {path!r}: not a dotted path (e.g. deployments.0.max_num_seqs)")
    return _set(cfg, path.split("."), 0, value, where, path)


def _set(obj: Any, parts: list[str], depth: int, value: Any, where: str, path: str) -> Any:
    here = ".".join(parts[:depth]) or "the cluster config"
    key = parts[depth]
    last = depth == len(parts) - 1
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        names = [f.name for f in dataclasses.fields(obj) if f.name != "source"]
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where}: {path}: {here} has no field {key!r}{hint}; fields: {', '.join(names)}"
            )
        cur = getattr(obj, key)
        new = (
            _coerce(cur, value, where, path)
            if last
            else _set(cur, parts, depth + 1, value, where, path)
        )
        return dataclasses.replace(obj, **{key: new})
    if isinstance(obj, tuple):
        try:
            idx = int(key)
        except ValueError:
            raise ConfigError(
                f"{where}: {path}: {here} is a list; expected an index, got {key!r}"
            ) from None
        if not 0 <= idx < len(obj):
            raise ConfigError(
                f"{where}: {path}: index {idx} out of range ({here} has {len(obj)} entries)"
            )
        cur = obj[idx]
        new = (
            _coerce(cur, value, where, path)
            if last
            else _set(cur, parts, depth + 1, value, where, path)
        )
        return obj[:idx] + (new,) + obj[idx + 1 :]
    raise ConfigError(f"{where}: {path}: {here} is a value ({obj!r}), not a table or list")


def _coerce(cur: Any, value: Any, where: str, path: str) -> Any:
    """``value`` checked against (and shaped like) the current field value ``cur``."""
    if dataclasses.is_dataclass(cur) and not isinstance(cur, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {path}: expected a table of fields, got {value!r}")
        for k, v in value.items():
            cur = _set(cur, [k], 0, v, where, f"{path}.{k}")
        return cur
    if isinstance(cur, tuple):
        if not isinstance(value, list) or not cur:
            raise ConfigError(f"{where}: {path}: expected a list of tables, got {value!r}")
        cls = type(cur[0])
        return tuple(_build(cls, v, where, f"{path}.{i}") for i, v in enumerate(value))
    if cur is None:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {path}: expected a string, got {value!r}")
        return value
    return _typed(where, path, value, cur)


# ---- the sweep file ------------------------------------------------------------------


@dataclass(frozen=True)
class FileRef:
    """A file as named in the sweep or on the command line (``label``) and its path.

    ``format`` is a trace's format (None: the base format, else auto-detected).
    """

    label: str
    path: str
    format: str | None = None


@dataclass
class Sweep:
    """A parsed sweep: base settings, the grid, and report options."""

    source: str
    name: str
    base: dict[str, Any]
    labels: dict[str, str]
    settings: dict[str, Any]
    axes: dict[str, list[Any]]
    grid: dict[str, list[Any]]
    metrics: tuple[str, ...] = DEFAULT_METRICS
    out: str | None = None
    base_name: str = "base"


def _err(where: str, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {key}: {msg}")


def _check_base_value(where: str, label: str, key: str, value: Any) -> Any:
    want = BASE_KEYS[key]
    ok = isinstance(value, want) and not (isinstance(value, bool) and want is not bool)
    if not ok:
        names = " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
        raise _err(where, label, f"expected {names}, got {value!r}")
    if key in POLICY_KINDS and not value.strip():
        raise _err(where, label, "empty policy spec; name a policy (agentsim policies lists them)")
    if key in _COUNT_KEYS:
        lo = 0 if key == "replicas" else 1
        if not lo <= value <= 10**9:
            raise _err(where, label, f"expected an integer in [{lo}, 1e9], got {value!r}")
    if key == "load_scale" and not (0 < value <= MAX_LOAD_SCALE and math.isfinite(value)):
        raise _err(where, label, f"expected a number in (0, {MAX_LOAD_SCALE:g}], got {value!r}")
    if key in ("slo_ttft", "slo_tpot") and not (0 < value < math.inf):
        raise _err(where, label, f"expected a positive number of seconds, got {value!r}")
    return float(value) if key in FLOAT_KEYS else value


#: ``[base]`` counts (``replicas`` may be 0, the others must be >= 1).
_COUNT_KEYS = (
    "nodes",
    "tp",
    "pp",
    "replicas",
    "max_num_seqs",
    "max_num_batched_tokens",
    "block_size",
)
#: Largest arrival-rate multiplier (a million times a recorded trace's rate).
MAX_LOAD_SCALE = 1e6


def _resolve(base_dir: Path, p: str) -> str:
    q = Path(p).expanduser()
    return os.path.normpath(q if q.is_absolute() else base_dir / q)


def parse_sweep(
    raw: dict[str, Any],
    source: str,
    overrides: dict[str, Any] | None = None,
    *,
    base_dir: Path | None = None,
    base_name: str = "base",
) -> Sweep:
    """Build a :class:`Sweep` from a decoded sweep TOML.

    ``overrides`` are base settings from the command line (paths already resolved);
    they take precedence over ``[base]``.  Relative paths resolve against
    ``base_dir`` (default: the directory of ``source``); ``base_name`` names the base
    table in error messages.
    """
    w = source
    base_dir = base_dir if base_dir is not None else Path(source).parent
    for key in raw:
        if key not in ("sweep", "base", "grid"):
            raise _err(w, key, "unknown table; expected [sweep], [base] and [grid]")
    name, out, metrics = _parse_meta(raw.get("sweep", {}), w, base_dir)
    base, labels, settings = _parse_base(raw.get("base", {}), w, base_dir, base_name, overrides)
    axes, grid = _parse_grid(raw.get("grid", {}), w, base_dir)
    for bkey, axis in AXIS_OF_BASE.items():
        if bkey in base and axis in axes:
            raise _err(
                w,
                f"grid.{axis}",
                f"the grid varies it but {bkey} is also set (in [base] or on the command line); "
                "set one of them",
            )
    if "policies" in axes and "policies.router" in grid:
        raise _err(w, 'grid."policies.router"', "set either grid.policies or this, not both")
    for key in settings:
        if key in grid:
            raise _err(w, f'grid."{key}"', "also set in [base]; set one of them")
    return Sweep(w, name, base, labels, settings, axes, grid, tuple(metrics), out, base_name)


def _parse_meta(meta: Any, w: str, base_dir: Path) -> tuple[str, str | None, list[str]]:
    """The ``[sweep]`` table: name, output directory (resolved) and plotted metrics."""
    if not isinstance(meta, dict):
        raise _err(w, "sweep", "expected a table")
    for key in meta:
        if key not in ("name", "out", "metrics"):
            raise _err(w, f"sweep.{key}", "unknown key; expected name, out, metrics")
    name = meta.get("name", Path(w).stem)
    if not isinstance(name, str):
        raise _err(w, "sweep.name", f"expected a string, got {name!r}")
    out = meta.get("out")
    if out is not None:
        if not isinstance(out, str):
            raise _err(w, "sweep.out", f"expected a string, got {out!r}")
        out = _resolve(base_dir, out)
    metrics = meta.get("metrics", list(DEFAULT_METRICS))
    if not (isinstance(metrics, list) and metrics and all(isinstance(m, str) for m in metrics)):
        raise _err(
            w, "sweep.metrics", f"expected a non-empty list of metric names, got {metrics!r}"
        )
    return name, out, metrics


def _parse_base(
    raw_base: Any,
    w: str,
    base_dir: Path,
    base_name: str,
    overrides: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """The ``[base]`` table and the command-line ``overrides``: base settings (paths
    resolved), the paths as written (labels) and the dotted config settings."""
    base: dict[str, Any] = {}
    labels: dict[str, str] = {}
    settings: dict[str, Any] = {}
    if not isinstance(raw_base, dict):
        raise _err(w, base_name, "expected a table")
    for key, value in raw_base.items():
        if "." in key:
            settings[key] = value
            continue
        key = "router" if key == "policy" else key
        if key not in BASE_KEYS:
            close = difflib.get_close_matches(key, list(BASE_KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _err(
                w,
                f"{base_name}.{key}",
                f"unknown key{hint}; dotted config paths need quotes and a dot",
            )
        value = _check_base_value(w, f"{base_name}.{key}", key, value)
        if key == "plugins":
            value = list(parse_plugins(value, w, None, f"{base_name}.plugins", base_dir))
        if key in PATH_KEYS:
            labels[key] = value
            value = _resolve(base_dir, value)
        base[key] = value
    for key, value in (overrides or {}).items():
        if key == "plugins":  # --plugin adds to the file's plugins
            value = [*base.get("plugins", []), *value]
        if key in PATH_KEYS:
            labels[key] = value
            value = os.path.abspath(Path(value).expanduser())
        base[key] = value
    return base, labels, settings


def _parse_grid(
    raw_grid: Any, w: str, base_dir: Path
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """The ``[grid]`` table: its axes (checked) and its dotted config paths."""
    if not isinstance(raw_grid, dict):
        raise _err(w, "grid", "expected a table")
    axes: dict[str, list[Any]] = {}
    grid: dict[str, list[Any]] = {}
    for key, values in raw_grid.items():
        gk = f"grid.{key}" if key in AXES else f'grid."{key}"'
        if not isinstance(values, list) or not values:
            raise _err(w, gk, f"expected a non-empty list, got {values!r}")
        if key in AXES:
            axes[key] = _check_axis(w, gk, key, values, base_dir)
        elif "." in key or key in _cluster_fields():
            grid[key] = values
        else:
            close = difflib.get_close_matches(key, [*AXES, *_cluster_fields()], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _err(
                w, gk, f"unknown axis{hint}; axes are {', '.join(AXES)} or dotted config paths"
            )
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise _err(w, gk, "lists a value twice")
    return axes, grid


@functools.cache
def _cluster_fields() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(ClusterConfig) if f.name != "source")


def _check_axis(w: str, gk: str, axis: str, values: list[Any], base_dir: Path) -> list[Any]:
    out: list[Any] = []
    for i, v in enumerate(values):
        at = f"{gk}[{i}]"
        if axis == "traces":
            if isinstance(v, str):
                out.append(FileRef(v, _resolve(base_dir, v)))
            elif isinstance(v, dict) and isinstance(v.get("path"), str):
                extra = set(v) - {"path", "format"}
                if extra:
                    raise _err(w, at, f"unknown key(s) {', '.join(sorted(extra))}")
                fmt = v.get("format")
                if fmt is not None and not isinstance(fmt, str):
                    raise _err(w, at, f"format: expected a string, got {fmt!r}")
                out.append(FileRef(v["path"], _resolve(base_dir, v["path"]), fmt))
            else:
                raise _err(w, at, f"expected a path or {{path = ..., format = ...}}, got {v!r}")
        elif axis in ("clusters", "policies"):
            if not isinstance(v, str) or not v.strip():
                raise _err(w, at, f"expected a non-empty string, got {v!r}")
            out.append(FileRef(v, _resolve(base_dir, v)) if axis == "clusters" else v)
        elif axis == "load_scales":
            if not (isinstance(v, int | float) and not isinstance(v, bool)) or not (
                0 < v <= MAX_LOAD_SCALE and math.isfinite(v)
            ):
                raise _err(
                    w, at, f"expected a positive number (at most {MAX_LOAD_SCALE:g}), got {v!r}"
                )
            out.append(float(v))
        else:  # seeds
            if not isinstance(v, int) or isinstance(v, bool):
                raise _err(w, at, f"expected an integer, got {v!r}")
            out.append(v)
    return out


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> Sweep:
    """Read and check a sweep TOML file (``overrides``: command-line base settings).

    A sweep file must vary something: a missing or empty ``[grid]`` (which would run
    the base configuration once) is an error naming the file and ``grid``.
    """
    p = str(path)
    raw, text = read_toml(p)
    sweep = parse_sweep(raw, p, overrides)
    if not sweep.axes and not sweep.grid:
        m = re.search(r"(?m)^[ \t]*\[[ \t]*grid[ \t]*\]", text)
        line = text[: m.start()].count("\n") + 1 if m else None
        what = "is empty" if "grid" in raw else "is missing"
        raise InputError(
            p,
            line,
            "grid",
            f"{what}: a sweep needs at least one axis to vary (traces, clusters, policies, "
            "load_scales, seeds or a dotted config path, e.g. seeds = [0, 1, 2]); "
            "for a single run use agentsim run",
        )
    return sweep


# ---- expansion -------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    return h.hexdigest()


def run_id(
    cfg: ClusterConfig,
    trace: str,
    trace_format: str,
    seed: int,
    load_scale: float,
    jitter: bool = False,
    faults: str | None = None,
) -> str:
    """A stable 16-hex-digit id of a resolved run configuration.

    It hashes the cluster config (a cost model file by its content), the trace file's
    content and format, the seed, the load scale, arrival jitter and the fault
    schedule's content (each only when given, so ids without them are unchanged) and
    the agentsim version; file locations and the sweep they came from do not count.
    The SLO does not count: it changes only the reported SLO metrics, which a rerun
    with another SLO recomputes from the saved run (:func:`run_sweep`).
    """
    cl = cfg.to_dict()
    cl.pop("source", None)
    if cfg.costmodel is not None and Path(cfg.costmodel).is_file():
        cl["costmodel"] = file_digest(cfg.costmodel)
    key = {
        "agentsim": __version__,
        "cluster": cl,
        "trace": file_digest(trace),
        "trace_format": trace_format,
        "seed": int(seed),
        "load_scale": float(load_scale),
    }
    if jitter:
        key["jitter"] = True
    if faults is not None:
        key["faults"] = file_digest(faults)
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _column_value(v: Any) -> Any:
    return v if isinstance(v, str | int | float | bool) else json.dumps(v, sort_keys=True)


def expand(sweep: Sweep) -> list[RunSpec]:
    """Every run of the sweep, in grid order, each validated and with its id."""
    w = sweep.source
    b = sweep.base
    traces: list[FileRef] = sweep.axes.get("traces") or [
        FileRef(sweep.labels["trace"], b["trace"])
        if "trace" in b
        else FileRef(DEFAULT_TRACE_LABEL, str(DEFAULT_TRACE))
    ]
    clusters: list[FileRef | None] = list(
        sweep.axes.get("clusters")
        or [FileRef(sweep.labels["cluster"], b["cluster"]) if "cluster" in b else None]
    )
    routers: list[str | None] = list(sweep.axes.get("policies") or [b.get("router")])
    scales = sweep.axes.get("load_scales") or [float(b.get("load_scale", 1.0))]
    seeds = sweep.axes.get("seeds") or [int(b.get("seed", 0))]
    # Arrival jitter: on by default when the sweep asks for several seeds (else seeds
    # would change nothing for deterministic policies); [base] jitter = false/true wins.
    jitter = bool(b["jitter"]) if "jitter" in b else len(seeds) > 1
    slo = _slo_of(w, b)
    faults: str | None = b.get("faults")
    if faults is not None:
        from sim.cluster.faults import load_faults

        load_faults(faults)  # a bad schedule fails here, naming its file, before any run
    keys = list(sweep.grid)
    combos = list(itertools.product(*(sweep.grid[k] for k in keys)))

    formats: dict[tuple[str, str | None], str] = {}
    for t in traces:
        fmt = t.format or b.get("trace_format")
        if (t.path, fmt) not in formats:
            if not Path(t.path).exists():
                raise ConfigError(f"{w}: trace {t.label!r}: file not found ({t.path})")
            formats[(t.path, fmt)] = fmt or detect_format(t.path)
    base_cfgs: dict[FileRef | None, ClusterConfig] = {
        c: load_cluster_config(c.path) if c else default_cluster_config() for c in clusters
    }

    specs: list[RunSpec] = []
    seen: dict[str, RunSpec] = {}
    for trace, cref, router, combo in itertools.product(traces, clusters, routers, combos):
        cfg = _point_config(sweep, base_cfgs[cref], router, dict(zip(keys, combo, strict=True)))
        fmt = formats[(trace.path, trace.format or b.get("trace_format"))]
        for scale, seed in itertools.product(scales, seeds):
            rid = run_id(cfg, trace.path, fmt, seed, scale, jitter, faults)
            params: dict[str, Any] = {
                "run_id": rid,
                "trace": trace.label,
                "trace_format": fmt,
                "cluster": cref.label if cref is not None else "<default>",
                **_policy_columns(cfg),
                "load_scale": float(scale),
                "seed": int(seed),
            }
            if cfg.policies.persistence != "none":
                params["persistence"] = cfg.policies.persistence
            if jitter:
                params["jitter"] = True
            if faults is not None:
                params["faults"] = sweep.labels.get("faults", faults)
            for key, value in zip(keys, combo, strict=True):
                params[key] = _column_value(value)
            spec = RunSpec(
                rid, params, cfg, trace.path, fmt, int(seed), float(scale), jitter, faults, slo
            )
            if rid in seen:
                raise ConfigError(
                    f"{w}: two grid points resolve to the same run ({_describe(seen[rid])} and "
                    f"{_describe(spec)}); remove the duplicate"
                )
            seen[rid] = spec
            specs.append(spec)
    return specs


def _point_config(
    sweep: Sweep, base_cfg: ClusterConfig, router: str | None, point: dict[str, Any]
) -> ClusterConfig:
    """The validated cluster config of one grid point: ``base_cfg`` with the base
    settings and policies, ``router`` (None: the base's), the base's dotted settings and
    the point's dotted paths applied."""
    w, b = sweep.source, sweep.base
    pol = {k: b[k] for k in POLICY_KINDS if k in b}
    if router is not None:
        pol["router"] = router
    cfg = apply_overrides(
        base_cfg,
        gpu=b.get("gpu"),
        nodes=b.get("nodes"),
        prefill_replicas=b.get("prefill_replicas"),
        decode_replicas=b.get("decode_replicas"),
        prefill_tp=b.get("prefill_tp"),
        decode_tp=b.get("decode_tp"),
        policies=pol,
        costmodel=b.get("costmodel"),
        fast_forward=b.get("fast_forward"),
        plugins=b.get("plugins", ()),
        **{k: b.get(k) for k in QUICK_KEYS},
    )
    for key, value in sweep.settings.items():
        cfg = set_path(cfg, key, value, f'{w}: {sweep.base_name}."{key}"')
    for key, value in point.items():
        cfg = set_path(cfg, key, value, f'{w}: grid."{key}"')
    if sweep.settings or point:
        sets = ", ".join(
            f"{k}={json.dumps(v)}" for k, v in [*sweep.settings.items(), *point.items()]
        )
        cfg = validate(dataclasses.replace(cfg, source=f"{w} (with {sets})"))
    return check_serves(cfg)


def _policy_columns(cfg: ClusterConfig) -> dict[str, Any]:
    """A run's policy columns in the sweep table (``policy`` is the router)."""
    p = cfg.policies
    return {
        "policy": p.router,
        "batching": p.batching,
        "retention": p.retention,
        "placement": p.placement,
        "autoscaler": p.autoscaler,
    }


def _slo_of(where: str, base: dict[str, Any]) -> SLO:
    """The SLO of ``[base]`` ``slo_ttft`` / ``slo_tpot`` (or the flags), default SLO()."""
    d = SLO()
    ttft = float(base.get("slo_ttft", d.ttft_s))
    tpot = float(base.get("slo_tpot", d.tpot_s))
    for name, v in (("slo_ttft", ttft), ("slo_tpot", tpot)):
        if not 0 < v < math.inf:
            raise _err(where, name, f"expected a positive number of seconds, got {v!r}")
    return SLO(ttft, tpot)


def _describe(spec: RunSpec) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.params.items() if k != "run_id")


# ---- the output directory --------------------------------------------------------------


def run_dir(out: Path, spec: RunSpec) -> Path:
    return out / "runs" / spec.run_id


def is_done(out: Path, spec: RunSpec) -> bool:
    """Whether the run finished earlier (its directory is complete)."""
    return (run_dir(out, spec) / "summary.json").is_file()


def store(out: Path, spec: RunSpec, result: SimResult, html: bool = False) -> Path:
    """Write a run's directory: into a temporary directory, then renamed into place.

    ``summary.json`` exists only in complete run directories, so a sweep killed
    mid-write redoes that run.  ``html``: also draw the run's ``report.html`` (slow).
    """
    final = run_dir(out, spec)
    tmp = final.parent / f".{spec.run_id}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    write_results(result, tmp, slo=spec.slo, html=html)
    atomic_write_json(tmp / "params.json", spec.params)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


def saved_slo(out: Path, spec: RunSpec) -> dict[str, float] | None:
    """The SLO a finished run's ``summary.json`` was written with (None: none saved)."""
    try:
        s = json.loads((run_dir(out, spec) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    slo = s.get("slo") if isinstance(s, dict) else None
    return slo if isinstance(slo, dict) else None


def rereport(out: Path, spec: RunSpec, html: bool = False) -> Path:
    """Recompute a finished run's report metrics for ``spec.slo`` without simulating
    it again (as ``agentsim report --slo-ttft``): its directory is rebuilt beside
    itself, the other files hard-linked, and swapped in whole."""
    from sim.common.io import atomic_dir, link_or_copy_tree
    from sim.report.results import enrich_summary, load_results, write_reports

    d = run_dir(out, spec)
    result = load_results(d)
    summary = enrich_summary(result, spec.slo)
    with atomic_dir(d, replace=True) as tmp:
        link_or_copy_tree(d, tmp)
        if not html:  # an old report.html would show the old SLO's numbers
            (tmp / "report.html").unlink(missing_ok=True)
        atomic_write_json(tmp / "summary.json", summary)
        write_reports(result, tmp, summary=summary, html=html)
    return d


@dataclass
class SweepOutcome:
    """What a call of :func:`run_sweep` did."""

    total: int
    skipped: list[str]
    ran: list[str]
    failed: dict[str, str]
    table: pd.DataFrame
    wall_s: float
    #: finished runs whose report metrics were recomputed for another SLO
    rereported: list[str] = field(default_factory=list)


def run_sweep(
    specs: Sequence[RunSpec],
    out: str | Path,
    backend: Backend,
    *,
    progress: bool = True,
    metrics: Sequence[str] = DEFAULT_METRICS,
    title: str = "sweep",
    html: bool = False,
) -> SweepOutcome:
    """Run every spec not finished in ``out`` on ``backend``; rebuild table and report.

    A run that raises is recorded in ``OUT/failures.json`` and retried on the next
    call; the others go on.  ``html``: write each run's ``report.html`` too.  A
    finished run written with another SLO than its spec's gets its report metrics
    recomputed (:func:`rereport`), not simulated again.
    """
    import time

    t0 = time.perf_counter()
    d = Path(out)
    (d / "runs").mkdir(parents=True, exist_ok=True)
    for stale in (d / "runs").glob(".*.tmp"):
        shutil.rmtree(stale)
    skipped = [s.run_id for s in specs if is_done(d, s)]
    pending = [s for s in specs if not is_done(d, s)]
    rereported: list[str] = []
    for s in specs:
        if s.run_id in skipped and saved_slo(d, s) != s.slo.to_dict():
            rereport(d, s, html)
            rereported.append(s.run_id)
    ran: list[str] = []
    failed: dict[str, str] = {}
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(specs), initial=len(skipped), unit="run", desc=title, file=sys.stderr)
    try:
        for spec, result in backend.run(pending) if pending else iter(()):
            if isinstance(result, RunFailure):
                failed[spec.run_id] = result.error
            else:
                store(d, spec, result, html)
                ran.append(spec.run_id)
            if bar is not None:
                bar.update(1)
                if failed:
                    bar.set_postfix_str(f"{len(failed)} failed")
    finally:
        if bar is not None:
            bar.close()
        by_id = {s.run_id: s for s in specs}
        atomic_write_json(
            d / "failures.json",
            [{"run_id": k, "params": by_id[k].params, "error": v} for k, v in failed.items()],
        )
    c = write_table(d)
    if not c.table.empty:
        write_report(d, c.table, c.config_columns, metrics, title)
    return SweepOutcome(
        len(specs), skipped, ran, failed, c.table, time.perf_counter() - t0, rereported
    )


@dataclass
class Collected:
    """The sweep table (config columns first), its perf table and config columns."""

    table: pd.DataFrame
    perf: pd.DataFrame
    config_columns: list[str]


def collect(out: str | Path) -> Collected:
    """The results and perf tables from every complete run directory under ``out``."""
    records: list[tuple[dict[str, Any], dict[str, Any]]] = []
    perf: list[dict[str, Any]] = []
    runs = Path(out) / "runs"
    for d in sorted(runs.iterdir()) if runs.is_dir() else []:
        if d.name.startswith(".") or not (d / "summary.json").is_file():
            continue
        params = json.loads((d / "params.json").read_text(encoding="utf-8"))
        summary = json.loads((d / "summary.json").read_text(encoding="utf-8"))
        records.append((params, summary))
        p = json.loads((d / "perf.json").read_text(encoding="utf-8"))
        perf.append({"run_id": params["run_id"], **{k: p.get(k) for k in PERF_COLUMNS}})
    table = tidy(records, _SUMMARY_AS_CONFIG)
    if not table.empty:
        table = table.sort_values("run_id", kind="stable").reset_index(drop=True)
    config_cols = list(dict.fromkeys(k for params, _ in records for k in params))
    return Collected(table, pd.DataFrame(perf, columns=["run_id", *PERF_COLUMNS]), config_cols)


def write_table(out: str | Path) -> Collected:
    """Rebuild ``sweep.parquet``, ``sweep.csv`` and ``sweep_perf.csv`` from the run dirs."""
    d = Path(out)
    c = collect(d)
    atomic_write(d / "sweep.parquet", lambda tmp: c.table.to_parquet(tmp, index=False))
    atomic_write_text(d / "sweep.csv", c.table.to_csv(index=False))
    atomic_write_text(d / "sweep_perf.csv", c.perf.to_csv(index=False))
    return c


# ---- the report ------------------------------------------------------------------------

_NOT_SERIES = ("run_id", "load_scale", "seed", "trace", "trace_format", "cluster")


def _varying(table: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    return [c for c in cols if c in table and table[c].astype(str).nunique() > 1]


def series_columns(table: pd.DataFrame, config_columns: Sequence[str]) -> list[str]:
    """Config columns that vary and are not load, seed or facet: one line each."""
    cols = _varying(table, [c for c in config_columns if c not in _NOT_SERIES])
    return cols or ["policy"]


def _slug(metric: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in metric)


def write_report(
    out: str | Path,
    table: pd.DataFrame,
    config_columns: Sequence[str],
    metrics: Sequence[str],
    title: str = "sweep",
) -> Path:
    """``sweep_report.md`` plus one PNG per metric: mean over seeds vs load, per series.

    Lines are the varying config columns (the policy, swept config paths); each trace
    x cluster combination that varies gets its own panel.  The shaded band spans the
    seeds' min and max.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = Path(out)
    series = series_columns(table, config_columns)
    facets = _varying(table, ("trace", "cluster"))
    t = table.copy()
    t["_series"] = t[series].astype(str).agg(", ".join, axis=1)
    t["_facet"] = t[facets].astype(str).agg(" | ".join, axis=1) if facets else ""
    lines = [
        f"# Sweep report: {title}",
        "",
        f"{len(t)} runs; lines: {', '.join(series)}; x: load scale; "
        f"seeds: {', '.join(map(str, sorted(t['seed'].unique())))} (mean, band = min..max).",
        "",
    ]
    lines += overloaded_note(t)
    missing = [m for m in metrics if m not in t]
    if missing:
        lines += [f"Metrics not in the table (skipped): {', '.join(missing)}", ""]
    for metric in (m for m in metrics if m in t):
        t[metric] = pd.to_numeric(t[metric], errors="coerce")
        g = t.groupby(["_facet", "_series", "load_scale"])[metric].agg(["mean", "min", "max"])
        facet_names = sorted(set(t["_facet"]))
        fig, axes = plt.subplots(
            1, len(facet_names), figsize=(6 * len(facet_names), 4), squeeze=False
        )
        for ax, facet in zip(axes[0], facet_names, strict=True):
            for s in sorted(set(t.loc[t["_facet"] == facet, "_series"])):
                part = g.loc[(facet, s)]
                ax.plot(part.index, part["mean"], marker="o", label=s)
                ax.fill_between(part.index, part["min"], part["max"], alpha=0.2)
            scales = sorted(t["load_scale"].unique())
            if scales[0] > 0 and scales[-1] / scales[0] >= 4:  # geometric loads: log axis
                ax.set_xscale("log", base=2)
                ax.set_xticks(scales, [f"{x:g}" for x in scales])
            ax.set_xlabel("load scale")
            ax.set_ylabel(metric)
            ax.set_title(facet or title)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
        fig.tight_layout()
        png = f"sweep_{_slug(metric)}.png"
        _save_png(fig, d / png)
        plt.close(fig)
        lines += [f"## {metric}", "", f"![{metric} vs load]({png})", ""]
        for facet in facet_names:
            pivot = g.loc[facet]["mean"].unstack("_series")
            if facet:
                lines += [f"### {facet}", ""]
            lines.append("| load scale | " + " | ".join(map(str, pivot.columns)) + " |")
            lines.append("|---" * (len(pivot.columns) + 1) + "|")
            for scale, row in pivot.iterrows():
                lines.append(f"| {scale:g} | " + " | ".join(_cell(v) for v in row) + " |")
            lines.append("")
    path = d / "sweep_report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def overloaded_note(t: pd.DataFrame) -> list[str]:
    """Report lines naming the overloaded runs (summary.json ``overloaded``), if any."""
    if "overloaded" not in t:
        return []
    over = t[t["overloaded"].astype("boolean").fillna(False).astype(bool)]
    if over.empty:
        return []
    where = sorted({f"{r['_series']} at load {r['load_scale']:g}" for _, r in over.iterrows()})
    return [
        f"⚠ {len(over)} of {len(t)} runs are overloaded (arrivals outpaced service; "
        f"column overloaded): {'; '.join(where)}. Their latencies are mostly queueing.",
        "",
    ]


def _save_png(fig: Any, path: Path) -> None:
    def write(tmp: str) -> None:
        fig.savefig(tmp, dpi=100, format="png")

    atomic_write(path, write)


def _cell(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"
