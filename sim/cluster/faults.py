"""Fault injection: GPU and node failures, pod restarts, link degradation, spot preemption.

A :class:`FaultSchedule` is a list of faults read from TOML (``examples/faults/``), plus
optionally faults drawn from MTBF/MTTR distributions with a seed.  During a run the
:class:`FaultInjector` applies each fault at its time through the cluster:

- ``gpu``: the replica holding the GPU is lost; the GPU is down for ``repair_s``
  (absent or ``inf``: for good), then the replica restarts there with a cold start.
- ``node``: every replica with a GPU on the node is lost, host DRAM included.
- ``replica_restart``: the pod of one replica restarts: lost, back after ``repair_s``
  (default 0) plus a cold start; the node and its host DRAM survive.
- ``spot``: the node's spot capacity is reclaimed after ``notice_s`` of warning (the
  replica stops serving at the notice); replacement capacity after ``repair_s``.
- ``link``: the bandwidth of a topology edge is multiplied by ``bandwidth_factor`` for
  ``duration_s``; the all-reduce cost of replicas whose TP group crosses it and every
  transfer priced over it change.

Calls in flight on a lost replica fail over: each is dispatched again, keeping its
issue time and generated tokens, and recomputes the KV it lost (prompt + generated
tokens) unless the persistence policy (``policies/persistence``) kept a copy, which
is reloaded over the topology path instead.  Sessions whose context was cached on the
lost replica recompute it on their next call, or reload a surviving copy.  A call
fails (reason ``gpu_failure``, ``node_failure``, ``replica_restart`` or
``spot_preemption``) only when no replica of its model will ever be ready again.

TOML format::

    [[faults]]
    at_s = 600.0          # when (seconds of simulated time)
    kind = "node"         # gpu | node | replica_restart | link | spot
    node = 1              # gpu: gpu = <global index>; replica_restart: replica = <id>
    repair_s = 1800.0     # down time before the hardware is back (inf / absent: never)

    [[faults]]
    at_s = 100.0
    kind = "link"
    edge = ["n0/nic0", "net/leaf"]   # topology vertices (sim/specs/topology.py)
    bandwidth_factor = 0.1
    duration_s = 300.0

    [generate]            # optional: random faults, exponential times, seeded
    seed = 7
    horizon_s = 3600.0
    gpu_mtbf_s = 2.0e5    # per GPU; *_mttr_s = mean repair time (inf: never repaired)
    gpu_mttr_s = 1800.0

Units: seconds, bytes/s.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from policies.persistence.base import (
    FaultInfo,
    KVCopy,
    LostKV,
    PersistenceContext,
    PersistencePolicy,
)
from sim.common.errors import InputError
from sim.common.io import read_toml
from sim.costmodel.base import kv_transfer_time

if TYPE_CHECKING:
    from sim.cluster.cluster import Cluster
    from sim.engine.replica import Replica, Seq

KINDS = ("gpu", "node", "replica_restart", "link", "spot")
#: call failure reason per fault kind
REASONS = {
    "gpu": "gpu_failure",
    "node": "node_failure",
    "replica_restart": "replica_restart",
    "spot": "spot_preemption",
}
#: the target field each kind requires
TARGET = {
    "gpu": "gpu",
    "node": "node",
    "replica_restart": "replica",
    "spot": "node",
    "link": "edge",
}
DEFAULT_SPOT_NOTICE_S = 30.0  # GCP preemption notice (AWS gives 120 s)
MAX_FAULTS = 100_000


@dataclass(frozen=True)
class Fault:
    """One fault.  ``repair_s`` None: never repaired; ``duration_s`` None: to the end."""

    at_s: float
    kind: str
    gpu: int | None = None
    node: int | None = None
    replica: int | None = None
    edge: tuple[str, str] | None = None
    bandwidth_factor: float = 1.0
    duration_s: float | None = None
    repair_s: float | None = None
    notice_s: float = 0.0
    line: int | None = None  # line of its [[faults]] table in the file (errors)


@dataclass(frozen=True)
class FaultGenerator:
    """Random faults: per component, failures after exponential times with mean MTBF,
    repairs after exponential times with mean MTTR (``inf``: never repaired); a
    component does not fail again while down.  A kind whose MTBF is not given (0)
    does not fail; an MTBF given in the file must be > 0."""

    seed: int = 0
    horizon_s: float = 3600.0
    gpu_mtbf_s: float = 0.0
    gpu_mttr_s: float = math.inf
    node_mtbf_s: float = 0.0
    node_mttr_s: float = math.inf
    restart_mtbf_s: float = 0.0  # per replica (pod crash)
    restart_s: float = 0.0  # pod down time before its cold start
    spot_mtbf_s: float = 0.0  # per node
    spot_mttr_s: float = math.inf
    spot_notice_s: float = DEFAULT_SPOT_NOTICE_S
    link_mtbf_s: float = 0.0  # per network edge
    link_duration_s: float = 300.0
    link_bandwidth_factor: float = 0.1

    def generate(
        self, num_gpus: int, num_nodes: int, num_replicas: int, links: list[tuple[str, str]]
    ) -> list[Fault]:
        """Draw the faults for a cluster of that shape (deterministic for a seed)."""
        rng = np.random.default_rng(self.seed)
        out: list[Fault] = []

        def renewals(mtbf: float, mttr: float) -> list[tuple[float, float | None]]:
            times: list[tuple[float, float | None]] = []
            t = float(rng.exponential(mtbf))
            while t < self.horizon_s:
                r = (
                    math.inf
                    if math.isinf(mttr)
                    else float(rng.exponential(mttr))
                    if mttr > 0
                    else 0.0
                )
                times.append((t, None if math.isinf(r) else r))
                if math.isinf(r):
                    break
                t += r + float(rng.exponential(mtbf))
            return times

        if self.gpu_mtbf_s > 0:
            for g in range(num_gpus):
                out += [
                    Fault(t, "gpu", gpu=g, repair_s=r)
                    for t, r in renewals(self.gpu_mtbf_s, self.gpu_mttr_s)
                ]
        if self.node_mtbf_s > 0:
            for n in range(num_nodes):
                out += [
                    Fault(t, "node", node=n, repair_s=r)
                    for t, r in renewals(self.node_mtbf_s, self.node_mttr_s)
                ]
        if self.restart_mtbf_s > 0:
            for rid in range(num_replicas):
                out += [
                    Fault(t, "replica_restart", replica=rid, repair_s=self.restart_s)
                    for t, _ in renewals(self.restart_mtbf_s, 0.0)
                ]
        if self.spot_mtbf_s > 0:
            for n in range(num_nodes):
                out += [
                    Fault(t, "spot", node=n, repair_s=r, notice_s=self.spot_notice_s)
                    for t, r in renewals(self.spot_mtbf_s, self.spot_mttr_s)
                ]
        if self.link_mtbf_s > 0:
            for e in links:
                out += [
                    Fault(
                        t,
                        "link",
                        edge=e,
                        bandwidth_factor=self.link_bandwidth_factor,
                        duration_s=self.link_duration_s,
                    )
                    for t, _ in renewals(self.link_mtbf_s, 0.0)
                ]
        out.sort(key=lambda f: f.at_s)
        return out

    def expected_faults(
        self, num_gpus: int, num_nodes: int, num_replicas: int, links: int
    ) -> float:
        """Upper bound of the expected number of faults over the horizon."""
        n = 0.0
        for mtbf, count in (
            (self.gpu_mtbf_s, num_gpus),
            (self.node_mtbf_s, num_nodes),
            (self.restart_mtbf_s, num_replicas),
            (self.spot_mtbf_s, num_nodes),
            (self.link_mtbf_s, links),
        ):
            if mtbf > 0:
                n += count * self.horizon_s / mtbf
        return n


@dataclass(frozen=True)
class FaultSchedule:
    """Faults listed in a file plus an optional generator; ``source`` names the file."""

    faults: tuple[Fault, ...] = ()
    generator: FaultGenerator | None = None
    source: str = "<faults>"

    def resolve(self, cluster: Cluster) -> list[Fault]:
        """Every fault for this cluster, sorted by time; targets checked against it."""
        topo = cluster.topology
        links = sorted(
            tuple(sorted((a, b)))  # type: ignore[misc]
            for a, b, d in topo.graph.edges(data=True)
            if d["link"] == "network"
        )
        nrep = len(cluster.all_replicas)
        out = list(self.faults)
        for i, f in enumerate(out):
            where = f"faults[{i}]"
            if f.gpu is not None and f.gpu >= topo.num_gpus:
                raise InputError(
                    self.source,
                    f.line,
                    f"{where}.gpu",
                    f"GPU {f.gpu} does not exist; the cluster has GPUs 0..{topo.num_gpus - 1}",
                )
            if f.node is not None and f.node >= topo.num_nodes:
                raise InputError(
                    self.source,
                    f.line,
                    f"{where}.node",
                    f"node {f.node} does not exist; the cluster has nodes 0..{topo.num_nodes - 1}",
                )
            if f.replica is not None and f.replica >= nrep:
                raise InputError(
                    self.source,
                    f.line,
                    f"{where}.replica",
                    f"replica {f.replica} does not exist; the cluster starts {nrep} replicas (0..{nrep - 1})",
                )
            if f.edge is not None and not topo.graph.has_edge(*f.edge):
                close = difflib.get_close_matches(
                    f"{f.edge[0]} - {f.edge[1]}", [f"{a} - {b}" for a, b in links], n=1
                )
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise InputError(
                    self.source,
                    f.line,
                    f"{where}.edge",
                    f"no topology edge between {f.edge[0]!r} and {f.edge[1]!r}{hint}",
                )
        g = self.generator
        if g is not None:
            n = g.expected_faults(topo.num_gpus, topo.num_nodes, nrep, len(links))
            if n > MAX_FAULTS:
                raise InputError(
                    self.source,
                    None,
                    "generate",
                    f"would generate about {n:.3g} faults for this cluster; at most {MAX_FAULTS} (raise the MTBFs or shorten horizon_s)",
                )
            out += g.generate(topo.num_gpus, topo.num_nodes, nrep, links)  # type: ignore[arg-type]
        out.sort(key=lambda f: f.at_s)
        return out


# ---- TOML loader -----------------------------------------------------------------------


def _table_lines(text: str, table: str) -> list[int]:
    """1-based line of each ``[[table]]`` header in ``text``."""
    out = []
    for no, raw in enumerate(text.splitlines(), 1):
        if raw.strip().replace(" ", "") == f"[[{table}]]":
            out.append(no)
    return out


def _key_line(text: str, start: int | None, key: str) -> int | None:
    """Line of ``key = ...`` in the table starting at line ``start`` (else ``start``)."""
    if start is None:
        return None
    lines = text.splitlines()
    for no in range(start, len(lines)):
        s = lines[no].strip()
        if s.startswith("["):
            break
        if s.split("=", 1)[0].strip().strip('"') == key:
            return no + 1
    return start


class _Reader:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self.fault_lines = _table_lines(text, "faults")
        gen = [
            no
            for no, raw in enumerate(text.splitlines(), 1)
            if raw.strip().replace(" ", "") == "[generate]"
        ]
        self.gen_line = gen[0] if gen else None

    def err(self, line: int | None, fld: str, problem: str) -> InputError:
        return InputError(self.path, line, fld, problem)

    def number(
        self,
        raw: dict[str, Any],
        key: str,
        fld: str,
        line: int | None,
        *,
        low: float = 0.0,
        strict: bool = False,
        allow_inf: bool = False,
    ) -> float:
        v = raw[key]
        kline = _key_line(self.text, line, key)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.err(kline, fld, f"expected a number, got {v!r}")
        x = float(v)
        if math.isnan(x) or (math.isinf(x) and not (allow_inf and x > 0)):
            raise self.err(
                kline, fld, f"expected a finite number{' or inf' if allow_inf else ''}, got {v!r}"
            )
        if x < low or (strict and x == low):
            raise self.err(kline, fld, f"must be {'>' if strict else '>='} {low:g}, got {v!r}")
        return x

    def index(self, raw: dict[str, Any], key: str, fld: str, line: int | None) -> int:
        v = raw[key]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**31:
            raise self.err(
                _key_line(self.text, line, key), fld, f"expected an index >= 0, got {v!r}"
            )
        return v

    def fault(self, i: int, raw: Any) -> Fault:
        line = self.fault_lines[i] if i < len(self.fault_lines) else None
        p = f"faults[{i}]"
        if not isinstance(raw, dict):
            raise self.err(line, p, "expected a table ([[faults]])")
        known = {f.name for f in fields(Fault)} - {"line"}
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.err(
                    _key_line(self.text, line, key),
                    f"{p}.{key}",
                    f"unknown field{hint}; expected one of {', '.join(sorted(known))}",
                )
        for key in ("at_s", "kind"):
            if key not in raw:
                raise self.err(line, f"{p}.{key}", "required field is missing")
        kind = raw["kind"]
        if not isinstance(kind, str) or kind not in KINDS:
            close = difflib.get_close_matches(str(kind), KINDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.err(
                _key_line(self.text, line, "kind"),
                f"{p}.kind",
                f"unknown fault kind {kind!r}{hint}; expected one of {', '.join(KINDS)}",
            )
        kw: dict[str, Any] = {"kind": kind, "line": line}
        kw["at_s"] = self.number(raw, "at_s", f"{p}.at_s", line)
        target = TARGET[kind]
        if target not in raw:
            raise self.err(line, f"{p}.{target}", f"required for kind {kind!r}")
        for key in ("gpu", "node", "replica", "edge"):
            if key in raw and key != target:
                raise self.err(
                    _key_line(self.text, line, key),
                    f"{p}.{key}",
                    f"not used by kind {kind!r} (it names its target with {target!r})",
                )
        if target == "edge":
            self._link_fields(raw, p, line, kw)
        else:
            self._target_fields(raw, p, line, kind, target, kw)
        return Fault(**kw)

    def _link_fields(
        self, raw: dict[str, Any], p: str, line: int | None, kw: dict[str, Any]
    ) -> None:
        """A link fault's edge, bandwidth_factor and duration_s into ``kw``."""
        e = raw["edge"]
        if not (isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e)):
            raise self.err(
                _key_line(self.text, line, "edge"),
                f"{p}.edge",
                f'expected two topology vertex names, e.g. ["n0/nic0", "net/leaf"], got {e!r}',
            )
        kw["edge"] = (e[0], e[1])
        if "bandwidth_factor" not in raw:
            raise self.err(
                line,
                f"{p}.bandwidth_factor",
                "required for kind 'link' (the fraction of bandwidth left, in (0, 1])",
            )
        f = self.number(raw, "bandwidth_factor", f"{p}.bandwidth_factor", line, strict=True)
        if f > 1:
            raise self.err(
                _key_line(self.text, line, "bandwidth_factor"),
                f"{p}.bandwidth_factor",
                f"must be in (0, 1] (the fraction of bandwidth left), got {raw['bandwidth_factor']!r}",
            )
        kw["bandwidth_factor"] = f
        if "duration_s" in raw:
            kw["duration_s"] = self.number(
                raw, "duration_s", f"{p}.duration_s", line, strict=True, allow_inf=True
            )
            if math.isinf(kw["duration_s"]):
                kw["duration_s"] = None

    def _target_fields(
        self,
        raw: dict[str, Any],
        p: str,
        line: int | None,
        kind: str,
        target: str,
        kw: dict[str, Any],
    ) -> None:
        """A GPU/node/replica fault's target index, repair_s and notice_s into ``kw``."""
        kw[target] = self.index(raw, target, f"{p}.{target}", line)
        for key in ("bandwidth_factor", "duration_s"):
            if key in raw:
                raise self.err(
                    _key_line(self.text, line, key), f"{p}.{key}", "only used by kind 'link'"
                )
        if "repair_s" in raw:
            r = self.number(raw, "repair_s", f"{p}.repair_s", line, allow_inf=True)
            kw["repair_s"] = None if math.isinf(r) else r
        elif kind == "replica_restart":
            kw["repair_s"] = 0.0
        if "notice_s" in raw:
            kw["notice_s"] = self.number(raw, "notice_s", f"{p}.notice_s", line)
        elif kind == "spot":
            kw["notice_s"] = DEFAULT_SPOT_NOTICE_S

    def generator(self, raw: Any) -> FaultGenerator:
        line = self.gen_line
        if not isinstance(raw, dict):
            raise self.err(line, "generate", "expected a table ([generate])")
        defaults = FaultGenerator()
        known = [f.name for f in fields(FaultGenerator)]
        kw: dict[str, Any] = {}
        for key, v in raw.items():
            fld = f"generate.{key}"
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.err(
                    _key_line(self.text, line, key),
                    fld,
                    f"unknown field{hint}; expected one of {', '.join(known)}",
                )
            if key == "seed":
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
                    raise self.err(
                        _key_line(self.text, line, key),
                        fld,
                        f"expected an integer in [0, 2**63), got {v!r}",
                    )
                kw[key] = v
            elif key == "horizon_s":
                kw[key] = self.number(raw, key, fld, line, strict=True)
            elif key == "link_bandwidth_factor":
                x = self.number(raw, key, fld, line, strict=True)
                if x > 1:
                    raise self.err(
                        _key_line(self.text, line, key), fld, f"must be in (0, 1], got {v!r}"
                    )
                kw[key] = x
            elif key.endswith("_mttr_s"):
                kw[key] = self.number(raw, key, fld, line, strict=True, allow_inf=True)
            elif key.endswith("_mtbf_s"):
                # absent: that kind is off; given, it must be a real mean time (0 used to
                # disable the kind silently, which read as "fails constantly")
                kw[key] = self.number(raw, key, fld, line, strict=True)
            else:
                kw[key] = self.number(raw, key, fld, line, strict=key == "link_duration_s")
        mtbfs = [k for k in known if k.endswith("_mtbf_s")]
        if not any(k in kw for k in mtbfs):
            raise self.err(
                line,
                "generate",
                f"sets no MTBF, so it would generate no faults; set one of {', '.join(mtbfs)}",
            )
        if "horizon_s" not in kw:
            raise self.err(
                line,
                "generate.horizon_s",
                f"required field is missing (seconds to draw faults over; e.g. {defaults.horizon_s:g})",
            )
        return FaultGenerator(**kw)


def parse_faults(raw: dict[str, Any], source: str, text: str = "") -> FaultSchedule:
    """Build and validate a schedule from a decoded TOML document (``text``: for lines)."""
    r = _Reader(source, text)
    known = ("faults", "generate")
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise r.err(
                None,
                key,
                f"unknown top-level field{hint}; expected [[faults]] tables and/or a [generate] table",
            )
    items = raw.get("faults", [])
    if not isinstance(items, list):
        raise r.err(None, "faults", "expected an array of tables ([[faults]])")
    faults = tuple(r.fault(i, f) for i, f in enumerate(items))
    gen = r.generator(raw["generate"]) if "generate" in raw else None
    if not faults and gen is None:
        raise r.err(None, "faults", "the schedule has no [[faults]] and no [generate] table")
    return FaultSchedule(faults, gen, source)


def load_faults(path: str | Path) -> FaultSchedule:
    """Read and validate a fault schedule TOML file (errors name file, line and field)."""
    p = str(path)
    raw, text = read_toml(p)
    return parse_faults(raw, p, text)


# ---- the SimPy side ----------------------------------------------------------------------


@dataclass(slots=True)
class _Home:
    """Where a session's context was last cached: replica, its epoch, tokens, when."""

    replica: int
    epoch: int
    tokens: int
    finished_s: float


@dataclass
class FaultStats:
    """What the faults cost: counts, tokens and seconds (summary ``faults``)."""

    injected: Counter[str] = field(default_factory=Counter)
    replicas_lost: int = 0
    failovers: int = 0
    recomputed_tokens: int = 0
    restored_tokens: int = 0
    restore_wait_s: float = 0.0

    def as_dict(self, persistence: str) -> dict[str, Any]:
        return {
            "persistence": persistence,
            "injected": dict(sorted(self.injected.items())),
            "replicas_lost": self.replicas_lost,
            "restored_tokens": self.restored_tokens,
            "restore_wait_s": float(f"{self.restore_wait_s:.12g}"),
        }


class FaultInjector:
    """Applies a fault schedule to a cluster and carries calls and KV across faults."""

    def __init__(
        self,
        env: simpy.Environment,
        cluster: Cluster,
        schedule: FaultSchedule,
        persistence: PersistencePolicy,
    ) -> None:
        self.env = env
        self.cluster = cluster
        self.schedule = schedule
        self.persistence = persistence
        self.faults = schedule.resolve(cluster)
        self.stats = FaultStats()
        self._homes: dict[str, _Home] = {}
        self._copies: dict[str, KVCopy] = {}  # call id or session id -> surviving copy
        self._lost_call: dict[str, int] = {}  # call id -> KV tokens it lost (failing over)
        self._lost_session: dict[str, int] = {}  # session id -> context tokens it lost
        self._gpus_down: Counter[int] = Counter()
        self._link_base: dict[tuple[str, str], float] = {}
        self._link_factors: dict[tuple[str, str], list[float]] = {}
        cluster.attach_faults(self)

    def start(self) -> None:
        """Schedule every fault at its time."""
        for f in self.faults:
            self._after(f.at_s, partial(self.apply, f))

    def _after(self, delay_s: float, fn: Callable[[], None]) -> None:
        ev = self.env.timeout(delay_s)
        ev.callbacks.append(lambda _e: fn())

    # ---- applying faults ---------------------------------------------------------------
    def apply(self, f: Fault) -> None:
        """Apply one fault now."""
        self.stats.injected[f.kind] += 1
        c = self.cluster
        if f.kind == "link":
            assert f.edge is not None
            self._set_link(f.edge, f.bandwidth_factor, add=True)
            if f.duration_s is not None:
                self._after(
                    f.duration_s, partial(self._set_link, f.edge, f.bandwidth_factor, False)
                )
            return
        topo = c.topology
        if f.kind == "gpu":
            assert f.gpu is not None
            gpus = [f.gpu]
        elif f.kind in ("node", "spot"):
            assert f.node is not None
            gpus = topo.gpus_of_node(f.node)
        else:
            assert f.replica is not None
            gpus = []
        if f.kind == "replica_restart":
            victims = [c.all_replicas[f.replica]] if f.replica is not None else []
        else:
            down = set(gpus)
            victims = [r for r in c.all_replicas if down & set(r.gpus)]
        victims = [r for r in victims if not c.is_dead(r) and c.is_live(r)]
        self._gpus_offline(gpus, f.repair_s)
        if f.kind in ("node", "spot"):
            assert f.node is not None
            c.lose_node_storage(f.node, drive=f.kind == "spot")
        info = FaultInfo(f.kind, self.env.now, f.notice_s, node_lost=f.kind in ("node", "spot"))
        for rep in victims:
            self._lose(rep, f, info)

    def _gpus_offline(self, gpus: list[int], repair_s: float | None) -> None:
        """Take GPUs out of the free pool until repaired (placement cannot use them)."""
        for g in gpus:
            self._gpus_down[g] += 1
        self.cluster.take_gpus_offline(gpus)
        if repair_s is None or not gpus:
            return

        def repaired(_: simpy.Event) -> None:
            for g in gpus:
                self._gpus_down[g] -= 1
            self.cluster.return_gpus([g for g in gpus if not self._gpus_down[g]])

        ev = self.env.timeout(repair_s)
        ev.callbacks.append(repaired)

    def _lose(self, rep: Replica, f: Fault, info: FaultInfo) -> None:
        c = self.cluster
        reason = REASONS[f.kind]
        rid = rep.replica_id
        epoch = c.epoch(rep)
        gpu = c.topology.gpu_names[rep.gpus[0]]
        displaced = [
            (sid, h) for sid, h in self._homes.items() if h.replica == rid and h.epoch == epoch
        ]
        restart = f.repair_s
        if f.kind in ("gpu", "node", "spot") and restart is not None:
            restart += 0.0 if f.kind != "spot" else f.notice_s
        lost = c.fail_replica(rep, reason, restart)
        self.stats.replicas_lost += 1
        items: list[LostKV] = []
        for seq, tokens in lost:
            prefilled = math.isfinite(seq.first_token_s)  # its prompt KV was complete then
            items.append(
                LostKV(
                    _call_key(seq.call.call_id),
                    tokens,
                    seq.num_prompt_tokens if prefilled else 0,
                    seq.first_token_s if prefilled else info.now_s,
                    gpu,
                    rep.node,
                )
            )
        for sid, h in displaced:
            items.append(LostKV(_session_key(sid), h.tokens, h.tokens, h.finished_s, gpu, rep.node))
            del self._homes[sid]
            self._lost_session[sid] = h.tokens
        peer = next((r for r in c.ready_replicas(rep.model) if r is not rep), None)
        ctx = PersistenceContext(
            path=c.topology.path,
            kv_bytes_per_token=c.specs[rep.model].kv_bytes_per_token,
            peer_gpu=c.topology.gpu_names[peer.gpus[0]] if peer is not None else None,
        )
        copies = self.persistence.save(items, info, ctx)
        for item, copy in zip(items, copies, strict=True):
            if copy is not None:
                self._copies[item.key] = copy
        for seq, tokens in lost:
            self._lost_call[seq.call.call_id] = tokens
            seq.failovers += 1
            self.stats.failovers += 1
            c.dispatch(seq.call, seq.arrival_s, seq.has_successor, seq)

    def _set_link(self, edge: tuple[str, str], factor: float, add: bool) -> None:
        key = (edge[0], edge[1])
        if key not in self._link_base:
            self._link_base[key] = self.cluster.link_bandwidth(key)
        factors = self._link_factors.setdefault(key, [])
        if add:
            factors.append(factor)
        else:
            factors.remove(factor)
        self.cluster.set_link_bandwidth(key, self._link_base[key] * math.prod(factors))

    # ---- sim.cluster.cluster.FaultHooks ----------------------------------------------------
    def deliver(self, rep: Replica, seq: Seq) -> None:
        c = self.cluster
        call = seq.call
        now = self.env.now
        # tokens already on their way to ``rep`` (a router's KV migration) count as cached
        cached = max(
            rep.cached_prefix_tokens(call),
            min(seq.num_external_computed_tokens, seq.num_prefill_tokens - 1),
        )
        copy = self._copies.pop(_call_key(call.call_id), None) or self._copies.get(
            _session_key(call.session_id)
        )
        restored = 0
        wait = 0.0
        if copy is not None:
            tokens = min(copy.tokens, seq.num_prefill_tokens - 1)
            if tokens > cached:
                p = c.topology.path(copy.vertex, c.topology.gpu_names[rep.gpus[0]])
                nbytes = (tokens - cached) * c.specs[rep.model].kv_bytes_per_token
                wait = max(0.0, copy.ready_s - now) + kv_transfer_time(nbytes, p)
                restored = tokens
        reused = max(cached, restored)
        lost = self._lost_call.pop(call.call_id, None)
        if lost is None:
            lost_ctx = self._lost_session.pop(call.session_id, 0)
            lost = min(lost_ctx, call.input_tokens)
        self.stats.recomputed_tokens += max(0, lost - reused)
        self.stats.restored_tokens += max(0, restored - cached)
        self.stats.restore_wait_s += wait
        seq.num_external_computed_tokens = max(seq.num_external_computed_tokens, restored)
        if wait <= 0:
            rep.submit(seq)
            return
        epoch = c.epoch(rep)

        def arrive(_: simpy.Event) -> None:
            if c.is_up(rep, epoch):
                rep.submit(seq)
            else:  # the target failed while the KV was on its way: route again
                seq.num_external_computed_tokens = 0
                c.dispatch(call, seq.arrival_s, seq.has_successor, seq)

        ev = self.env.timeout(wait)
        ev.callbacks.append(arrive)

    def on_completed(self, rep: Replica, seq: Seq, now: float) -> None:
        sid = seq.call.session_id
        self._homes[sid] = _Home(
            rep.replica_id, self.cluster.epoch(rep), seq.num_prompt_tokens + seq.max_tokens, now
        )
        self._copies.pop(_session_key(sid), None)
        self._lost_session.pop(sid, None)


def _call_key(call_id: str) -> str:
    return "call:" + call_id


def _session_key(session_id: str) -> str:
    return "session:" + session_id


def render_faults_section(summary: dict[str, Any]) -> list[str]:
    """Lines of the "Faults" section of report.md (none when no faults were injected)."""
    f = summary.get("faults")
    if not f:
        return []
    injected = ", ".join(f"{n} {k}" for k, n in f["injected"].items()) or "none"
    return [
        "",
        "## Faults",
        "",
        f"- Injected: {injected}; replicas lost: {f['replicas_lost']}; "
        f"persistence: {f['persistence']}",
        f"- Failed-over calls: {summary.get('failovers', 0):,}; calls failed: "
        f"{summary.get('failed_requests', 0):,}",
        f"- Recomputed tokens: {summary.get('recomputed_tokens', 0):,}; tokens reloaded from "
        f"surviving copies: {f['restored_tokens']:,} (waiting {f['restore_wait_s']:,.2f} s "
        "in transfers)",
    ]
