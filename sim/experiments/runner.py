"""The experiments runner: run specs (grid points x seeds) -> results, a tidy table
and per-group means with 95% confidence intervals and paired tests.

Every experiment of agentsim goes through here: ``agentsim compare``
(:func:`sim.api.compare`), sweeps (:mod:`sim.experiments.sweep`), the regression gate
(:mod:`sim.experiments.regress`) and the keynote (``notebooks/keynote.py``).

- A :class:`RunSpec` is one resolved run: a validated cluster config (policies
  included), a workload (a trace file, or an in-memory :class:`Workload`), a seed, a
  load scale, arrival jitter, a fault schedule and the SLO of the report metrics.
- A backend runs specs: in this process (:class:`SerialBackend`), in a spawned
  process pool (:class:`ProcessBackend`) or as Ray tasks (:class:`RayBackend`).
  :func:`run_experiment` runs specs in this process (errors propagate) and returns
  their tidy table.
- :func:`tidy` is the one flattening of run summaries into a table: one row per run,
  its parameters first, then every ``summary.json`` metric by dotted name
  (``ttft_s.p99``).  Sweeps build it from their run directories, the others from the
  summaries in memory.
- :func:`group_stats` is the one summary across seeds: per group, each metric's mean,
  the half-width of its 95% Student-t interval and, optionally, a paired t-test
  against the first group over matched seeds (:mod:`sim.metrics.stats`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from sim.cluster.config import ClusterConfig
from sim.cluster.faults import FaultSchedule
from sim.common.errors import AgentsimError, ConfigError
from sim.metrics.registry import IDENTITY_KEYS, flatten
from sim.report.results import SLO, enrich_summary
from sim.simulation import SimResult, simulate
from sim.workload.calls import AnyWorkload, LazyWorkload, Workload
from sim.workload.traces import load_trace, open_trace


@dataclass
class RunSpec:
    """One fully resolved run.

    ``run_id`` names it (a sweep's is a hash of everything that changes its numbers);
    ``params`` are its table columns (the grid point: policy, seed, load scale ...).
    The workload is ``workload`` when given (an in-memory workload: compare's per-seed
    arrivals, the keynote's synthetic agents), else the file ``trace`` in
    ``trace_format`` (loaded once per process).
    """

    run_id: str
    params: dict[str, Any]
    cluster: ClusterConfig
    trace: str
    trace_format: str
    seed: int
    load_scale: float
    #: shift each session's arrival by a seeded offset (:func:`sim.experiments.arrivals.jittered`)
    jitter: bool = False
    #: fault schedule TOML injected into the run (``--faults``), or None
    faults: str | None = None
    #: objectives of the SLO metrics: applied when the run's summary is written (it
    #: changes no simulated number, so it is not part of the run id)
    slo: SLO = field(default_factory=SLO)
    #: the workload itself (instead of ``trace``), or None
    workload: Workload | None = None
    #: a fault schedule itself (instead of ``faults``), or None
    fault_schedule: FaultSchedule | None = None
    #: label of a progress bar on a terminal (in-process runs); None: no bar
    progress_label: str | None = None


def workload_spec(
    run_id: str,
    params: dict[str, Any],
    cluster: ClusterConfig,
    workload: Workload,
    seed: int,
    *,
    load_scale: float = 1.0,
    faults: FaultSchedule | None = None,
    slo: SLO | None = None,
    progress_label: str | None = None,
) -> RunSpec:
    """A spec of a run on an in-memory workload (``trace`` names its source)."""
    return RunSpec(
        run_id,
        params,
        cluster,
        workload.source or workload.name,
        "",
        seed,
        load_scale,
        slo=slo or SLO(),
        workload=workload,
        fault_schedule=faults,
        progress_label=progress_label,
    )


# ---- executing runs -------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _cached_trace(path: str, fmt: str) -> AnyWorkload:
    return open_trace(path, fmt)


def execute(
    spec: RunSpec, workload: Workload | None = None, faults: FaultSchedule | None = None
) -> SimResult:
    """Simulate one run (loading its trace unless ``workload`` or ``spec.workload`` is
    given, and its fault schedule ``spec.faults`` unless ``faults`` or
    ``spec.fault_schedule`` is given), its arrivals jittered by its
    seed when ``spec.jitter`` (a trace whose sessions all start at one instant is not
    changed)."""
    wl: AnyWorkload | None = workload if workload is not None else spec.workload
    if wl is None:
        wl = _cached_trace(spec.trace, spec.trace_format)
    if spec.jitter:
        from sim.experiments.arrivals import jittered

        wl = jittered(wl.materialize() if isinstance(wl, LazyWorkload) else wl, spec.seed)
    if faults is None:
        faults = spec.fault_schedule
    if faults is None and spec.faults is not None:
        from sim.cluster.faults import load_faults

        faults = load_faults(spec.faults)
    label = spec.progress_label
    return simulate(
        wl,
        spec.cluster,
        seed=spec.seed,
        load_scale=spec.load_scale,
        faults=faults,
        progress=label is not None,
        progress_label=label or "simulating",
    )


@dataclass(frozen=True)
class RunFailure:
    """Why a run failed, as text: exceptions do not all survive pickling between processes."""

    error: str

    @classmethod
    def of(cls, e: Exception) -> RunFailure:
        return cls(str(e) if isinstance(e, AgentsimError) else f"{type(e).__name__}: {e}")


Runner = Callable[[RunSpec], SimResult]
Outcome = tuple[RunSpec, SimResult | RunFailure]


def guarded(runner: Runner, spec: RunSpec) -> SimResult | RunFailure:
    """``runner(spec)``, or the :class:`RunFailure` of the exception it raised."""
    try:
        return runner(spec)
    except Exception as e:
        return RunFailure.of(e)


class Backend(Protocol):
    """Runs specs and yields each with its result (or why it failed)."""

    name: str

    def run(self, specs: Sequence[RunSpec]) -> Iterator[Outcome]: ...


@dataclass
class SerialBackend:
    """Runs every spec in this process, in order (``--workers 1``)."""

    runner: Runner = execute
    name: str = "serial"

    def run(self, specs: Sequence[RunSpec]) -> Iterator[Outcome]:
        for spec in specs:
            yield spec, guarded(self.runner, spec)


@dataclass
class ProcessBackend:
    """A local pool of ``workers`` processes (spawned, so nothing leaks between runs)."""

    workers: int
    runner: Runner = execute
    name: str = "local"

    def run(self, specs: Sequence[RunSpec]) -> Iterator[Outcome]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")
        n = max(1, min(self.workers, len(specs)))
        pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx)
        try:
            futures = {pool.submit(guarded, self.runner, s): s for s in specs}
            for fut in as_completed(futures):
                exc = fut.exception()  # the pool itself failed (a worker died)
                yield (
                    futures[fut],
                    (RunFailure.of(exc) if isinstance(exc, Exception) else fut.result()),
                )
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _ray_execute(
    spec: RunSpec, workload: Workload | None, faults: FaultSchedule | None = None
) -> SimResult | RunFailure:
    """A Ray task: :func:`execute` on the workload and faults from the object store."""
    return guarded(functools.partial(execute, workload=workload, faults=faults), spec)


@dataclass
class RayBackend:
    """Ray tasks, one per run.  Connects to ``address`` or starts a local Ray.

    Each distinct trace (and fault schedule) is loaded once here and shared through the
    object store, so workers on other machines need agentsim installed but not the
    trace or fault files.  If
    Ray is already initialised (``ray.init`` called by the user), that session is used.
    """

    address: str | None = None
    name: str = "ray"
    _ray: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "--backend ray needs Ray, which is not installed: pip install 'agentsim[ray]'"
            ) from None
        self._ray = ray

    def run(self, specs: Sequence[RunSpec]) -> Iterator[Outcome]:
        ray = self._ray
        started = False
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False)
            started = True
        try:
            task = ray.remote(_ray_execute)
            refs: dict[tuple[str, str], Any] = {}
            fault_refs: dict[str | None, Any] = {None: None}
            pending: dict[Any, RunSpec] = {}
            for s in specs:
                key = (s.trace, s.trace_format)
                if key not in refs and s.workload is None:
                    refs[key] = ray.put(load_trace(s.trace, s.trace_format))
                if s.faults is not None and s.faults not in fault_refs:
                    from sim.cluster.faults import load_faults

                    fault_refs[s.faults] = ray.put(load_faults(s.faults))
                wl_ref = refs[key] if s.workload is None else None
                pending[task.remote(s, wl_ref, fault_refs[s.faults])] = s
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                spec = pending.pop(ready[0])
                try:
                    result: SimResult | RunFailure = ray.get(ready[0])
                except Exception as e:  # the task did not run to the end (worker died)
                    result = RunFailure.of(e)
                yield spec, result
        finally:
            if started:
                ray.shutdown()


def make_backend(name: str, workers: int | None = None, address: str | None = None) -> Backend:
    """The backend called ``name`` (``local`` or ``ray``)."""
    if name == "ray":
        return RayBackend(address)
    if name != "local":
        raise ConfigError(f"--backend: unknown backend {name!r}; expected local or ray")
    if address:
        raise ConfigError("--address is for --backend ray")
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n < 1:
        raise ConfigError(f"--workers must be >= 1, got {n}")
    return SerialBackend() if n == 1 else ProcessBackend(n)


# ---- running an experiment -------------------------------------------------------------


#: ``measure(spec, result, summary)``: extra metrics of a run for its table row.
Measure = Callable[[RunSpec, SimResult, dict[str, Any]], Mapping[str, Any]]
#: ``on_run(spec, result, summary)``: called as each run finishes (write its files ...).
OnRun = Callable[[RunSpec, SimResult, dict[str, Any]], None]


def run_experiment(
    specs: Sequence[RunSpec],
    *,
    measure: Measure | None = None,
    on_run: OnRun | None = None,
    drop: Sequence[str] = IDENTITY_KEYS,
) -> pd.DataFrame:
    """Run every spec in this process, in order, and return the tidy table (:func:`tidy`).

    The first error propagates (an :class:`~sim.common.errors.AgentsimError` names the
    bad input).  Each run's summary is ``summary.json``'s
    (:func:`sim.report.results.enrich_summary` for ``spec.slo``); ``on_run`` sees it
    as the run finishes, ``measure`` adds metrics of the caller's own; the table row is
    the spec's ``params`` then the flattened summary without the keys ``drop``.
    Sweeps, which resume from their run directories and may run on a process pool or
    Ray, use the backends and :func:`tidy` directly.
    """
    records = []
    for spec in specs:
        result = execute(spec)
        summary = enrich_summary(result, spec.slo)
        if on_run is not None:
            on_run(spec, result, summary)
        extra = dict(measure(spec, result, summary)) if measure is not None else {}
        records.append((spec.params, {**summary, **extra}))
    return tidy(records, drop)


def tidy(
    records: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]],
    drop: Sequence[str] = IDENTITY_KEYS,
) -> pd.DataFrame:
    """The tidy table of runs: one row per ``(params, summary)`` record.

    Columns: every parameter (in order of first appearance), then every metric of the
    flattened summaries (``ttft_s.p50`` ...; :func:`sim.metrics.registry.flatten`)
    except the keys ``drop`` (the identity keys a parameter column already holds).
    A metric missing from a run is NaN in its row.
    """
    rows: list[dict[str, Any]] = []
    config_cols: dict[str, None] = {}
    metric_cols: dict[str, None] = {}
    for params, summary in records:
        metrics = {k: v for k, v in flatten(summary).items() if k not in drop}
        config_cols.update(dict.fromkeys(params))
        metric_cols.update(dict.fromkeys(metrics))
        rows.append({**params, **metrics})
    return pd.DataFrame(rows, columns=[*config_cols, *metric_cols])


def group_stats(
    runs: pd.DataFrame,
    by: str | Sequence[str],
    metrics: Sequence[str],
    *,
    seed: str = "seed",
    paired: bool = False,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Each metric's mean over seeds per group (groups in order of first appearance).

    Columns: ``by`` (a column or several), ``seeds`` (the number of distinct seeds), then per metric ``m``:
    its mean (exactly the value when every seed gave the same), and with two or more
    seeds ``m.ci95``, the half-width of the 95% t-interval (0 for equal values); with
    ``paired``, every group but the first also gets ``m.p_value`` of a paired t-test
    against the first group over matched seeds and ``m.significant`` (p < ``alpha``).
    A group missing a seed counts it as a missing value.
    """
    from sim.metrics.stats import mean_ci, paired_test

    cols = [by] if isinstance(by, str) else list(by)
    seeds = sorted(runs[seed].unique())
    many = len(seeds) > 1
    keys = list(zip(*(runs[c] for c in cols), strict=True))
    order = list(dict.fromkeys(keys))

    def by_seed(group: tuple[Any, ...], m: str) -> np.ndarray:
        mask = np.array([k == group for k in keys], dtype=bool)
        sub = runs[mask].set_index(seed)[m].astype(float)
        return sub.reindex(seeds).to_numpy()

    rows = []
    for i, group in enumerate(order):
        row: dict[str, Any] = {**dict(zip(cols, group, strict=True)), "seeds": len(seeds)}
        for m in metrics:
            vals = by_seed(group, m)
            ci = mean_ci(vals)
            row[m] = ci.mean
            fin = vals[np.isfinite(vals)]
            constant = fin.size > 0 and bool(np.all(fin == fin[0]))
            if constant:  # exactly: the float mean of equal values can be off by an ulp
                row[m] = float(fin[0])
            if many:
                row[f"{m}.ci95"] = 0.0 if constant and fin.size > 1 else ci.half_width
                if paired and i > 0:
                    test = paired_test(by_seed(order[0], m), vals)
                    row[f"{m}.p_value"] = test.p_value
                    row[f"{m}.significant"] = test.significant(alpha)
        rows.append(row)
    return pd.DataFrame(rows)
