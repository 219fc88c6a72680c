"""Fit the vLLM step model's global coefficients to measured serving runs.

``agentsim calibrate fit-serving RUNS.csv -o calibration/costmodels/NAME.toml``.

Objective: for every stage row of every run, the log ratio simulated / measured of
TTFT mean and p90, E2E mean and p90 and ITL mean, under a robust soft-L1 loss
(scale :data:`F_SCALE`, i.e. errors beyond about 5% count linearly, not squared), with
each run weighted by 1 / its number of stages so that every run counts alike, plus
one residual per overhead coefficient with a prior (:data:`PRIORS`: a log-space
Gaussian toward a typical vLLM value, so that a coefficient only some stages identify
does not absorb other models' errors when those stages are held out).

Search, deterministic for a seed:

1. a start from an analytic surrogate of each stage (:func:`surrogate_stage`: Little's
   law for the concurrency, the step model's decode and mixed step times at that
   concurrency, a fixed point in E2E), fitted with ``scipy.optimize.least_squares``;
2. the simulator in the loop: the same least-squares problem with every residual from
   the simulator (:func:`sim.serving.replay.simulate_raw`) on stages shortened to
   ``stage_s`` seconds (same rates; the cold first round of prompts left out), the
   Jacobian by forward differences of :data:`FD_STEP` in log space.  The coefficients
   that change the simulated dynamics (:data:`SIM_DYNAMIC`) re-simulate every run per
   Jacobian column, all of a Jacobian's simulations spread over a process pool; the
   client-path ones (:data:`SIM_CLIENT`) are applied to the simulated requests without
   re-simulating;
3. the fitted coefficients rounded to :data:`sim.costmodel.vllm_step.SIG_DIGITS`
   significant digits (the TOML is the same on any CPU), then validated on the full
   stages.

Fitted: the coefficients in :data:`FITTED` (bounds in :data:`BOUNDS`); the others keep
their :class:`~sim.costmodel.vllm_step.StepParams` defaults.  Units: seconds.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sim.costmodel.base import BatchShape, ReplicaHardware
from sim.costmodel.vllm_step import StepCostModel, StepParams
from sim.serving.replay import MAX_MODEL_LEN, RawRun, cluster_for, simulate_raw, stages_of
from sim.serving.runs import RunSpec
from sim.serving.validate import MAPE_METRICS, validate_runs
from sim.serving.workload import TEMPLATE_TOKENS
from sim.specs.hardware import get_gpu
from sim.specs.models import get_model
from sim.specs.topology import build_topology

#: Coefficients the fit moves.  ``gemm_eff`` and ``attn_eff`` stay at their defaults
#: (0.7 and 0.5 of the dense peak, typical of vLLM's GEMMs and FlashAttention): with the
#: load generator's repeated prompts nearly every prefill is a prefix-cache hit, so the
#: measurements hardly constrain prefill compute (fitted, they wandered between 0.3 and
#: 1.0 across leave-one-model-out folds, and a low GEMM efficiency made long-context
#: decode batches compute-bound).  ``kv_eff`` is a datasheet-derived prior too
#: (:class:`~sim.costmodel.vllm_step.StepParams`): only long-context decode at high
#: concurrency (one reasoning stage) tells it apart from the per-sequence overhead, and
#: fitted it swung from 0.59 (without Llama-3.1-8B) to 0.89, overloading that model's
#: reasoning stage in its leave-one-model-out fold.
FITTED = (
    "bw_eff",
    "step_s",
    "layer_s",
    "per_seq_s",
    "prefill_layer_s",
    "ar_latency_s",
    "client_latency_s",
    "client_per_token_s",
    "sched_lag_steps",
)

#: What the simulator-in-the-loop stage refines.  Coefficients that change the
#: simulated dynamics (each costs one simulation of every run per Jacobian column):
SIM_DYNAMIC = ("bw_eff", "step_s", "per_seq_s")
#: and the client path, added to the simulated requests afterwards (no re-simulation):
SIM_CLIENT = ("client_latency_s", "client_per_token_s", "sched_lag_steps")

#: (low, high) of each fitted coefficient: efficiencies as fractions of datasheet
#: peaks, overheads in seconds.
BOUNDS = {
    "bw_eff": (0.3, 1.0),
    "gemm_eff": (0.2, 1.0),
    "attn_eff": (0.3, 1.0),
    "kv_eff": (0.05, 1.0),
    "layer_s": (1e-7, 1e-4),
    "client_per_token_s": (1e-9, 1e-4),
    "step_s": (1e-5, 2e-2),
    "per_seq_s": (1e-7, 5e-4),
    "prefill_layer_s": (1e-7, 1e-3),
    "ar_latency_s": (1e-7, 2e-4),
    "client_latency_s": (1e-4, 5e-2),
    "sched_lag_steps": (0.01, 3.0),
}

#: Priors of coefficients the measurements identify only weakly: ``name: (prior,
#: sigma)``; a residual ``F_SCALE x log(value / prior) / sigma`` joins the fit's, so one
#: sigma off weighs like one stage metric 5% off.  Per-sequence and per-layer overheads,
#: the step floor and the prefill-step extra trade off against each other (and the
#: client's fixed and per-token parts, prompts being 580-1,100 tokens in every run);
#: unregularised they swung 4x between leave-one-model-out folds.  Centres: ~10 us per
#: scheduled sequence (sampler, input preparation), ~5 us per layer (norms, RoPE,
#: residual adds under CUDA graphs), ~1 ms per step, ~20 us per layer for a piecewise
#: (prefill) step, ~1 us per prompt token (a fast tokenizer's ~1 M tokens/s), one step
#: of asynchronous-scheduling lag.
PRIORS = {
    "step_s": (1e-3, 0.7),
    "prefill_layer_s": (2e-5, 0.7),
    "per_seq_s": (1e-5, 0.5),
    "layer_s": (5e-6, 0.5),
    "client_per_token_s": (1e-6, 0.5),
    "sched_lag_steps": (1.0, 0.3),
}

F_SCALE = 0.05
FD_STEP = 0.04
#: Relative weight of each metric's residual.
WEIGHTS = {"ttft_mean": 1.0, "ttft_p90": 0.5, "e2e_mean": 1.0, "e2e_p90": 0.5, "itl_mean": 1.0}


@dataclass(frozen=True, slots=True)
class FitOptions:
    """Options of :func:`fit_serving`.

    Attributes:
        seed: workload seed of every simulation.
        stage_s: stage length (seconds) of the simulator-in-the-loop search.
        sim_iterations: Jacobian evaluations of the simulator search (0: surrogate only).
        workers: simulation processes.
        fitted: the coefficients the surrogate stage fits.
        sim_dynamic: coefficients the simulator stage refines by re-simulating.
        sim_client: client-path coefficients it refines on the simulated requests.
    """

    seed: int = 0
    stage_s: float = 300.0
    sim_iterations: int = 4
    workers: int = 2
    fitted: tuple[str, ...] = FITTED
    sim_dynamic: tuple[str, ...] = SIM_DYNAMIC
    sim_client: tuple[str, ...] = SIM_CLIENT


# --- parameter vectors ------------------------------------------------------------


def to_vector(p: StepParams, names: Sequence[str]) -> np.ndarray:
    return np.array([math.log(max(getattr(p, n), 1e-12)) for n in names])


def from_vector(x: np.ndarray, base: StepParams, names: Sequence[str]) -> StepParams:
    vals = {}
    for n, v in zip(names, x, strict=True):
        lo, hi = BOUNDS[n]
        vals[n] = float(min(max(math.exp(float(v)), lo), hi))
    return replace(base, **vals)


def _bounds(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([math.log(max(BOUNDS[n][0], 1e-12)) for n in names])
    hi = np.array([math.log(BOUNDS[n][1]) for n in names])
    return lo, hi


# --- the analytic surrogate -------------------------------------------------------


def replica_hardware(run: RunSpec) -> ReplicaHardware:
    """The run's replica hardware as the simulator builds it (TP group on one node)."""
    cfg = cluster_for(run)
    spec = get_model(run.model)
    gpu = get_gpu(run.gpu)
    topo = build_topology(cfg.node_list(), cfg.gpu)
    path = topo.group_bottleneck(tuple(range(run.tp)))
    return ReplicaHardware(
        model=spec,
        gpu=gpu,
        tp=run.tp,
        allreduce_bandwidth=path.bandwidth,
        allreduce_latency=path.latency,
        link=path.link,
    )


def surrogate_stage(
    run: RunSpec, stage: int, cm: StepCostModel, hw: ReplicaHardware
) -> dict[str, float]:
    """Analytic means of one stage (see the module docstring); p90s = means."""
    it = cm.for_replica(hw)
    rate = run.stages[stage].rate_rps
    prompt = TEMPLATE_TOKENS + run.system_prompt_tokens + run.question_tokens
    uncached = max(1, prompt % 16 or 1)
    n_out = run.output_tokens
    ctx = prompt + n_out / 2.0
    e2e = 1.0
    p = cm.params
    client = p.client_latency_s + p.client_per_token_s * prompt
    itl = step_p = 0.0
    for _ in range(30):
        n = int(min(run.max_num_seqs, max(1.0, rate * e2e)))
        d = it.decode_time(n, n * ctx)
        step_p = it.iteration_time(
            BatchShape((uncached,), (prompt - uncached,), max(0, n - 1), int(max(0, n - 1) * ctx))
        )
        f = min(1.0, rate * d)
        itl = (1.0 - f) * d + f * step_p
        ttft = 0.5 * itl + step_p
        new = ttft + client + p.sched_lag_steps * itl + (n_out - 1) * itl
        if abs(new - e2e) < 1e-6:
            break
        e2e = 0.5 * (e2e + new)
    ttft = 0.5 * itl + step_p + client + p.sched_lag_steps * itl
    e2e = ttft + (n_out - 1) * itl
    return {
        "ttft_mean": ttft,
        "ttft_p90": ttft,
        "e2e_mean": e2e,
        "e2e_p90": e2e,
        "itl_mean": itl,
    }


# --- residuals --------------------------------------------------------------------


def _residuals(
    runs: Sequence[RunSpec], sims: Sequence[dict[int, dict[str, float]]], metrics: Sequence[str]
) -> np.ndarray:
    out = []
    for run, sim in zip(runs, sims, strict=True):
        rows = [m for m in run.measured if m.stage is not None]
        w_run = 1.0 / math.sqrt(max(1, len(rows)))
        for m in rows:
            s = sim[m.stage]  # type: ignore[index]
            for k in metrics:
                v = s[k]
                r = math.log(v / m.metrics[k]) if v > 0 and math.isfinite(v) else 5.0
                out.append(w_run * math.sqrt(WEIGHTS[k]) * min(r, 5.0))
    return np.asarray(out)


def _prior_residuals(p: StepParams, names: Sequence[str]) -> np.ndarray:
    """The :data:`PRIORS` residuals of the fitted coefficients in ``names``."""
    return np.asarray(
        [
            F_SCALE * math.log(getattr(p, n) / PRIORS[n][0]) / PRIORS[n][1]
            for n in names
            if n in PRIORS
        ]
    )


def _sim_job(args: tuple[RunSpec, StepParams, int, float]) -> RawRun:
    run, params, seed, stage_s = args
    return simulate_raw(run, StepCostModel(params), seed=seed, max_stage_s=stage_s)


def _stage_metrics(
    runs: Sequence[RunSpec], raws: Sequence[RawRun], params: StepParams
) -> list[dict[int, dict[str, float]]]:
    cm = StepCostModel(params)
    return [
        {st.stage: st.metrics for st in stages_of(raw, run, cm) if st.stage is not None}
        for run, raw in zip(runs, raws, strict=True)
    ]


class _Evaluator:
    """Simulated requests of every run for many parameter sets (process pool, cached
    by the coefficients that change the dynamics)."""

    def __init__(
        self,
        runs: Sequence[RunSpec],
        opts: FitOptions,
        pool: ProcessPoolExecutor | None,
        dynamic: Sequence[str],
    ):
        self.runs = list(runs)
        self.opts = opts
        self.pool = pool
        self.dynamic = list(dynamic)
        self.cache: dict[tuple[float, ...], list[RawRun]] = {}
        self.evaluations = 0
        # longest runs first: the pool's workers finish together
        self.order = sorted(
            range(len(self.runs)),
            key=lambda i: (
                -sum(s.rate_rps * min(s.duration_s, opts.stage_s) for s in self.runs[i].stages)
                * self.runs[i].output_tokens
            ),
        )

    def _key(self, p: StepParams) -> tuple[float, ...]:
        return tuple(getattr(p, n) for n in self.dynamic)

    def many(self, params: Sequence[StepParams]) -> list[list[RawRun]]:
        todo: dict[tuple[float, ...], StepParams] = {}
        for p in params:
            k = self._key(p)
            if k not in self.cache:
                todo.setdefault(k, p)
        jobs = [
            (self.runs[i], p, self.opts.seed, self.opts.stage_s)
            for p in todo.values()
            for i in self.order
        ]
        if self.pool is not None:
            done = list(self.pool.map(_sim_job, jobs, chunksize=1))
        else:
            done = [_sim_job(j) for j in jobs]
        n = len(self.runs)
        for j, k in enumerate(todo):
            chunk = done[j * n : (j + 1) * n]
            res: list[RawRun | None] = [None] * n
            for i, r in zip(self.order, chunk, strict=True):
                res[i] = r
            self.cache[k] = [r for r in res if r is not None]
            self.evaluations += 1
        return [self.cache[self._key(p)] for p in params]


# --- the fit ----------------------------------------------------------------------


@dataclass
class FitReport:
    """What :func:`fit_serving` did: the model, the search's losses and timings."""

    model: StepCostModel
    surrogate_loss: float
    sim_loss: float
    evaluations: int
    wall_s: float


def _loss(r: np.ndarray) -> float:
    z = (r / F_SCALE) ** 2
    return float(np.sum(2.0 * (np.sqrt(1.0 + z) - 1.0)) * F_SCALE**2)


# long: the surrogate fit and the simulator-refined trust-region steps share the fit state and log
def fit_serving(
    runs: Sequence[RunSpec],
    opts: FitOptions | None = None,
    start: StepParams | None = None,
    log: Callable[[str], None] | None = None,
) -> FitReport:
    """Fit the step model's coefficients to ``runs`` (see the module docstring)."""
    from scipy.optimize import least_squares

    opts = opts or FitOptions()
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    names = list(opts.fitted)
    base = start or StepParams()
    lo, hi = _bounds(names)
    x0 = np.clip(to_vector(base, names), lo + 1e-9, hi - 1e-9)

    # 1. surrogate
    hws = [replica_hardware(r) for r in runs]
    stage_ids = [[m.stage for m in r.measured if m.stage is not None] for r in runs]

    def sur_res(x: np.ndarray) -> np.ndarray:
        cm = StepCostModel(from_vector(x, base, names))
        sims = [
            {s: surrogate_stage(r, s, cm, h) for s in ids}  # type: ignore[arg-type]
            for r, h, ids in zip(runs, hws, stage_ids, strict=True)
        ]
        res = _residuals(runs, sims, ("ttft_mean", "e2e_mean", "itl_mean"))
        return np.concatenate([res, _prior_residuals(cm.params, names)])

    sol = least_squares(
        sur_res, x0, bounds=(lo, hi), loss="soft_l1", f_scale=F_SCALE, diff_step=1e-3, max_nfev=400
    )
    x = sol.x
    sur_loss = _loss(sol.fun)
    say(f"surrogate fit: loss {sur_loss:.4g} after {sol.nfev} evaluations")

    # 2. simulator in the loop: the dynamic coefficients re-simulate every run, the
    # client-path ones are applied to the simulated requests
    sim_loss = math.nan
    evaluations = 0
    fitted = from_vector(x, base, names)
    snames = list(opts.sim_dynamic) + list(opts.sim_client)
    if opts.sim_iterations > 0 and snames:
        nd = len(opts.sim_dynamic)
        slo, shi = _bounds(snames)
        xs = np.clip(to_vector(fitted, snames), slo + 1e-9, shi - 1e-9)
        pool = ProcessPoolExecutor(max_workers=opts.workers) if opts.workers > 1 else None
        try:
            ev = _Evaluator(runs, opts, pool, opts.sim_dynamic)

            def res_of(raws: list[RawRun], p: StepParams) -> np.ndarray:
                res = _residuals(runs, _stage_metrics(runs, raws, p), MAPE_METRICS)
                return np.concatenate([res, _prior_residuals(p, snames)])

            def sim_res(xv: np.ndarray) -> np.ndarray:
                p = from_vector(xv, fitted, snames)
                (raws,) = ev.many([p])
                r = res_of(raws, p)
                say(f"  simulated {ev.evaluations} parameter sets: loss {_loss(r):.4g}")
                return r

            def sim_jac(xv: np.ndarray) -> np.ndarray:
                pts = []
                for j in range(len(xv)):
                    xp = xv.copy()
                    h = FD_STEP if xv[j] + FD_STEP <= shi[j] else -FD_STEP  # inside the bounds
                    xp[j] += h
                    pts.append(xp)
                p0 = from_vector(xv, fitted, snames)
                ps = [from_vector(p, fitted, snames) for p in pts]
                outs = ev.many([p0, *ps[:nd]])  # client columns reuse the base simulation
                f0 = res_of(outs[0], p0)
                cols = []
                for j in range(len(xv)):
                    raws = outs[j + 1] if j < nd else outs[0]
                    h = pts[j][j] - xv[j]
                    cols.append((res_of(raws, ps[j]) - f0) / h)
                say(f"  jacobian ({ev.evaluations} simulated parameter sets)")
                return np.stack(cols, axis=1)

            sol2 = least_squares(
                sim_res,
                xs,
                jac=sim_jac,
                bounds=(slo, shi),
                loss="soft_l1",
                f_scale=F_SCALE,
                max_nfev=opts.sim_iterations,
            )
            fitted = from_vector(sol2.x, fitted, snames)
            sim_loss = _loss(sol2.fun)
            evaluations = ev.evaluations
            say(f"simulator fit: loss {sim_loss:.4g}, {evaluations} simulated parameter sets")
        finally:
            if pool is not None:
                pool.shutdown()
    params = fitted.rounded()
    model = StepCostModel(params, name="vllm-serving")
    return FitReport(model, sur_loss, sim_loss, evaluations, time.perf_counter() - t0)


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fitted_model(
    runs_path: str,
    runs: Sequence[RunSpec],
    name: str,
    opts: FitOptions,
    holdout_model: str | None = None,
    log: Callable[[str], None] | None = None,
) -> StepCostModel:
    """Fit on ``runs`` (minus ``holdout_model``'s), validate on every run at full length,
    and return the model with its provenance and validation in ``meta``."""

    def held(r: RunSpec) -> bool:
        return holdout_model is not None and holdout_model in (r.model, model_key(r))

    train = [r for r in runs if not held(r)]
    rep = fit_serving(train, opts, log=log)
    model = StepCostModel(rep.model.params, name=name)
    v = validate_runs(runs, cost_model=model, seed=opts.seed, workers=opts.workers)
    mape = v.mape()
    held_mape = v.mape(where=held) if holdout_model else None
    model.meta = {
        "fitted_from": {
            "file": Path(runs_path).name,
            "sha256": file_digest(runs_path),
            "runs": len(train),
            "holdout_model": holdout_model or "",
            "attribution": "measured by the BLIS project (inference-sim) on vLLM v0.15.1",
        },
        "options": {
            "seed": opts.seed,
            "stage_s": opts.stage_s,
            "sim_iterations": opts.sim_iterations,
            "fitted": list(opts.fitted),
            "max_model_len": MAX_MODEL_LEN,
        },
        "validation": {
            "runs": len(runs),
            "stage_rows": len(v.rows()),
            "command": f"agentsim validate {runs_path} --costmodel <this file>",
            **{f"mape_{k}_pct": round(val, 2) for k, val in mape.items()},
            **(
                {f"holdout_mape_{k}_pct": round(val, 2) for k, val in held_mape.items()}
                if held_mape
                else {}
            ),
            "served_but_overloaded": len(v.served_but_overloaded()),
        },
    }
    if log:
        log(
            "validation on all runs (full stages): "
            + ", ".join(f"{k} {val:.1f}%" for k, val in mape.items())
        )
    return model


def model_key(run: RunSpec) -> str:
    """The architecture a run served (base and instruct checkpoints of one architecture
    are one model for leave-one-model-out)."""
    return get_model(run.model).name.removesuffix("-fp8")


@dataclass
class LOMOResult:
    """Leave-one-model-out: per held-out model, its MAPE under the fit without it."""

    per_model: dict[str, dict[str, float]]
    per_model_params: dict[str, StepParams]
    wall_s: float

    def mean(self) -> dict[str, float]:
        """Mean over the held-out models of each metric's MAPE (percent)."""
        return {k: float(np.mean([m[k] for m in self.per_model.values()])) for k in MAPE_METRICS}

    def format(self) -> str:
        head = f"{'held-out model':<24} " + " ".join(f"{k:>10}" for k in MAPE_METRICS)
        lines = [head, "-" * len(head)]
        for name, m in self.per_model.items():
            lines.append(f"{name:<24} " + " ".join(f"{m[k]:10.1f}" for k in MAPE_METRICS))
        mean = self.mean()
        lines.append(f"{'mean':<24} " + " ".join(f"{mean[k]:10.1f}" for k in MAPE_METRICS))
        lines.append(
            f"(MAPE %, each model's stage rows predicted by a fit on the others; {self.wall_s:.0f} s)"
        )
        return "\n".join(lines)


def leave_one_model_out(
    runs: Sequence[RunSpec],
    opts: FitOptions,
    log: Callable[[str], None] | None = None,
) -> LOMOResult:
    """Fit without each model in turn and validate the held-out model's runs (full
    stages)."""
    t0 = time.perf_counter()
    keys = [model_key(r) for r in runs]
    per: dict[str, dict[str, float]] = {}
    params: dict[str, StepParams] = {}
    for key in dict.fromkeys(keys):
        train = [r for r, k in zip(runs, keys, strict=True) if k != key]
        test = [r for r, k in zip(runs, keys, strict=True) if k == key]
        rep = fit_serving(train, opts)
        v = validate_runs(test, cost_model=rep.model, seed=opts.seed, workers=opts.workers)
        per[key] = v.mape()
        params[key] = rep.model.params
        if log:
            log(f"held out {key}: " + ", ".join(f"{k} {x:.1f}%" for k, x in per[key].items()))
    return LOMOResult(per, params, time.perf_counter() - t0)
