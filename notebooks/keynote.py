"""The keynote's seven questions, answered by simulation (``make keynote``, ``notebooks/keynote.ipynb``).

Each ``q*`` function runs its experiment over several seeds and returns an
:class:`Answer`: a table (one row per configuration, means with 95 % t-intervals
across seeds), a headline sentence, the configuration and the seeds.  A
:class:`Scale` sets the size: :data:`CI` is a reduced workload that runs in seconds
(the notebook in CI); :data:`FULL` is what ``make keynote`` runs
(``python notebooks/keynote.py --out results/keynote``, or ``make keynote``).

Workloads:

- *real agent traces*: the LMCache agent sessions (mini-SWE-agent ReAct runs and
  Magentic-One runs; ``traces/lmcache/``, converted from
  ``../shared/data/lmcache-agent-trace`` by ``traces/build.sh``), with session starts
  moved to a Poisson process per seed (``retime_sessions``);
- *synthetic 50k-token agents*: ReAct sessions (``sim/workload/traces/synth.py``) whose first
  prompt is ~50k tokens and grows each turn, as in the keynote ("if you've already
  processed a 50k token context for an agent session"), served by command-r (128k
  context) at TP=4.

Every number comes from the simulations run here; nothing is hard-coded but the
configuration.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim.cluster.config import (
    ClusterConfig,
    Deployment,
    NodeGroup,
    PolicyConfig,
    apply_overrides,
    validate,
)
from sim.cluster.faults import Fault, FaultSchedule
from sim.costmodel.base import BatchShape, ReplicaHardware
from sim.costmodel.loader import resolve_cost_model
from sim.experiments.runner import Measure, RunSpec, group_stats, run_experiment, workload_spec
from sim.metrics.stats import mean_ci
from sim.report.results import SLO, cluster_title
from sim.simulation import SimResult
from sim.specs.hardware import get_gpu
from sim.specs.models import get_model
from sim.specs.topology import NVLINK_BW, NVLINK_LAT
from sim.workload.calls import Call, Workload, topo_order
from sim.workload.traces import load_trace
from sim.workload.traces.arrivals import ArrivalConfig
from sim.workload.traces.distributions import const, lognormal
from sim.workload.traces.sample import retime_sessions
from sim.workload.traces.synth import ReactConfig, SynthConfig, generate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
REAL_TRACES = (ROOT / "traces/lmcache/miniswe.jsonl.gz", ROOT / "traces/lmcache/magagent.jsonl.gz")


@dataclass(frozen=True)
class Scale:
    """How big each experiment is.

    ``seeds``: seeds 0 .. seeds-1 (each reseeds the policies and the workload);
    ``real_sessions``: sessions kept from the real traces (0: all 45);
    ``synth_sessions``: synthetic 50k-token sessions; ``synth_turns``: LLM calls per
    synthetic session; ``sizes``: replica counts tried in question 1.
    """

    name: str
    seeds: int
    real_sessions: int
    synth_sessions: int
    synth_turns: int
    sizes: tuple[int, ...]


CI = Scale("ci", seeds=2, real_sessions=8, synth_sessions=4, synth_turns=3, sizes=(1, 2))
FULL = Scale(
    "full", seeds=5, real_sessions=0, synth_sessions=16, synth_turns=8, sizes=(1, 2, 3, 4, 6, 8)
)


@dataclass
class Answer:
    """One question's answer: the table, a headline, what was run and with which seeds."""

    key: str
    question: str
    headline: str
    table: pd.DataFrame
    config: dict[str, Any]
    seeds: list[int]
    plot: Callable[[], Figure] = field(repr=False)
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)

    def markdown(self) -> str:
        cfg = "\n".join(f"- {k}: {v}" for k, v in self.config.items())
        return (
            f"## {self.question}\n\n**{self.headline}**\n\nConfiguration:\n{cfg}\n"
            f"- seeds: {', '.join(map(str, self.seeds))} (95 % t-intervals across seeds)\n\n"
            f"{md_table(self.table)}\n"
        )


def md_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (floats to 4 significant digits)."""

    def cell(x: Any) -> str:
        if isinstance(x, float | np.floating):
            return "" if math.isnan(x) else f"{x:.4g}"
        return str(x)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(cell(x) for x in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


# ---- workloads -------------------------------------------------------------------------


def real_workload(scale: Scale, seed: int, rate_per_s: float, model: str | None = None) -> Workload:
    """The LMCache agent sessions (all, or the first ``scale.real_sessions``), starts
    retimed to a Poisson process of ``rate_per_s`` sessions/s with ``seed``."""
    calls: list[Call] = []
    for path in REAL_TRACES:
        calls += load_trace(str(path)).calls
    if scale.real_sessions:
        keep = sorted({c.session_id for c in calls})[: scale.real_sessions]
        calls = [c for c in calls if c.session_id in set(keep)]
    calls = retime_sessions([replace(c, model=model) for c in calls], rate_per_s, seed)
    return Workload(topo_order(calls), name="lmcache-agents")


def synth_workload(
    scale: Scale,
    seed: int,
    rate_per_s: float = 0.05,
    turns: int | None = None,
    task_tokens: float = 50_000.0,
    sessions: int | None = None,
) -> Workload:
    """Synthetic ReAct agents: first prompt ~``task_tokens`` (log-normal, sigma 0.05),
    each turn appends its tool output (median 200 tokens), tool calls as measured on
    mini-SWE-agent (median 0.39 s); ``turns`` LLM calls per session."""
    agent = ReactConfig(
        task_tokens=lognormal(task_tokens, 0.05, lo=16),
        turns=const(float(turns or scale.synth_turns)),
        tool_output_tokens=lognormal(200, 1.0, lo=0, hi=4096),
    )
    cfg = SynthConfig(
        seed=seed,
        sessions=sessions or scale.synth_sessions,
        arrivals=ArrivalConfig(process="poisson", rate_per_s=rate_per_s),
        agents=(agent,),
    )
    return Workload(topo_order(generate(cfg)), name=f"synthetic-{int(task_tokens / 1000)}k")


def cluster(
    model: str, tp: int, replicas: int, nodes: int, gpu: str = "a100-80gb", **policies: Any
) -> ClusterConfig:
    """``nodes`` 8-GPU NVSwitch (DGX) nodes of ``gpu`` serving ``model`` at TP=``tp``."""
    hardware = cluster_title(
        {"gpu": gpu, "nodes": [{"builder": "dgx-a100", "count": nodes, "gpus": 8}]}
    )
    return validate(
        ClusterConfig(
            name=f"{hardware}, {model} TP={tp} x{replicas}",
            gpu=gpu,
            nodes=(NodeGroup("dgx-a100", nodes, 8),),
            deployments=(Deployment(model=model, tp=tp, replicas=replicas),),
            policies=PolicyConfig(**policies),
            source="<keynote>",
        )
    )


# ---- helpers ---------------------------------------------------------------------------


#: The keynote's names of the runner's dotted summary metrics.
COLUMNS = {"ttft_s.p50": "ttft_p50_s", "ttft_s.p99": "ttft_p99_s", "session_s.mean": "session_s"}


def _spec(params: dict[str, Any], cfg: ClusterConfig, wl: Workload, **kw: Any) -> RunSpec:
    """A run of ``wl`` on ``cfg`` with the seed ``params["seed"]``; ``params`` are its
    table columns (``kw``: :func:`sim.experiments.runner.workload_spec`'s options)."""
    run_id = "|".join(f"{k}={v}" for k, v in params.items())
    return workload_spec(run_id, params, cfg, wl, int(params["seed"]), **kw)


def _runs(specs: Sequence[RunSpec], measure: Measure | None = None) -> pd.DataFrame:
    """Run ``specs`` in this process with the experiments runner: its tidy table (one
    row per run; summary metrics renamed by :data:`COLUMNS`, ``measure``'s added)."""
    return run_experiment(specs, measure=measure).rename(columns=COLUMNS)


def _ci_table(runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean and 95 % half-width of each metric per group across seeds (``metric``,
    ``metric_ci``; 0 for a single seed), from :func:`sim.experiments.runner.group_stats`."""
    stats = group_stats(runs, list(by), metrics)
    out = stats[list(by)].copy()
    for m in metrics:
        out[m] = stats[m]
        out[f"{m}_ci"] = stats[f"{m}.ci95"].fillna(0.0) if f"{m}.ci95" in stats else 0.0
    return out


def _fmt(mean: Any, half: Any, unit: str = "", digits: int = 3) -> str:
    """``mean ± half-width`` with units (the half-width of a 95 % t-interval)."""
    return f"{float(mean):.{digits}g}{unit} ± {float(half):.2g}{unit}"


def prefill_usd_per_token(cfg: ClusterConfig, context: int) -> float:
    """$ per prompt token recomputed on one replica of ``cfg``'s first deployment: the
    cost model's time for a ``max_num_batched_tokens`` chunk at ``context`` tokens of
    context, divided by the chunk, times the replica's GPUs and their price."""
    dep = cfg.deployments[0]
    gpu = get_gpu(cfg.gpu)
    # the model at the deployment's weight / KV precision, as the cluster serves it
    spec = get_model(dep.model).with_dtype(dep.dtype, dep.kv_cache_dtype)
    it = resolve_cost_model(cfg.costmodel).for_replica(
        ReplicaHardware(spec, gpu, dep.tp, dep.pp, NVLINK_BW, NVLINK_LAT, "nvlink")
    )
    chunk = dep.max_num_batched_tokens
    t = it.iteration_time(BatchShape((chunk,), (context,)))
    return t / chunk * dep.gpus_per_replica * gpu.price_per_hour / 3600.0


# ---- 1. KV-cache affinity ---------------------------------------------------------------


def q1_kv_affinity(scale: Scale) -> Answer:
    """Cheapest replica count meeting the SLO for ``k8s_service`` vs the KV-aware
    routers on both workloads, and what the KV-aware routers save there."""
    routers = ("k8s_service", "kv_aware", "prefix_affinity")
    # (workload, model, TP, SLO, attainment target)
    setups = {
        "real traces (Llama-3-70B TP=4)": (
            lambda s: real_workload(scale, s, 4.0, "llama-3-70b"),
            "llama-3-70b",
            4,
            SLO(ttft_s=2.0, tpot_s=0.1),
            0.95,
        ),
        # a ~50k-token first prompt takes ~12 s to prefill on command-r at TP=4, so the
        # first call of each session (1 in synth_turns) cannot meet a 10 s TTFT: the
        # target leaves room for them
        "synthetic 50k (command-r TP=4)": (
            lambda s: synth_workload(scale, s),
            "command-r",
            4,
            SLO(ttft_s=10.0, tpot_s=0.1),
            0.85,
        ),
    }
    seeds = list(range(scale.seeds))
    specs = []
    for wname, (wl_fn, model, tp, slo, _) in setups.items():
        wls = {s: wl_fn(s) for s in seeds}
        for router in routers:
            for n in scale.sizes:
                cfg = cluster(model, tp, n, nodes=max(1, -(-n * tp // 8)), router=router)
                specs += [
                    _spec({"workload": wname, "router": router, "replicas": n, "seed": s},
                          cfg, wls[s], slo=slo)
                    for s in seeds
                ]  # fmt: skip
    metrics = ("slo_attainment", "gpu_hours", "cost_usd", "ttft_p50_s", "ttft_p99_s", "session_s")
    runs = _runs(specs)
    per_size = _ci_table(runs, ("workload", "router", "replicas"), metrics)
    table_rows = []
    for wname, setup in setups.items():
        target = setup[4]
        chosen: dict[str, int | None] = {}
        for router in routers:
            ok = per_size[(per_size.workload == wname) & (per_size.router == router)]
            meets = ok[ok.slo_attainment >= target]
            chosen[router] = int(meets.replicas.min()) if not meets.empty else None
        # when the Service never meets the SLO, savings are measured against its largest
        # size tried: a lower bound on what affinity saves
        base_n = chosen["k8s_service"]
        lower_bound = base_n is None
        if lower_bound:
            base_n = max(scale.sizes)
        for router in routers:
            size = chosen[router]
            row: dict[str, Any] = {
                "workload": wname,
                "router": router,
                "cheapest_replicas": size,
                "savings_are_lower_bound": lower_bound,
            }
            if size is None:
                table_rows.append(row)
                continue
            mine = runs[
                (runs.workload == wname) & (runs.router == router) & (runs.replicas == size)
            ]
            row.update(
                {
                    m: mean_ci(mine[m].to_numpy(dtype=float)).mean
                    for m in ("slo_attainment", "gpu_hours", "cost_usd")
                }
            )
            base = runs[
                (runs.workload == wname)
                & (runs.router == "k8s_service")
                & (runs.replicas == base_n)
            ]
            for m in ("gpu_hours", "cost_usd", "ttft_p50_s", "session_s"):
                d = mean_ci(
                    base.sort_values("seed")[m].to_numpy() - mine.sort_values("seed")[m].to_numpy()
                )
                row[f"{m}_saved"] = d.mean
                row[f"{m}_saved_ci"] = 0.0 if math.isnan(d.half_width) else d.half_width
            table_rows.append(row)
    table = pd.DataFrame(table_rows)
    best = table[
        (table.router != "k8s_service")
        & table.get("cost_usd_saved", pd.Series(dtype=float)).notna()
    ]
    if not best.empty and "cost_usd_saved" in best:
        b = best.sort_values("cost_usd_saved", ascending=False).iloc[0]
        at_least = "at least " if b.savings_are_lower_bound else ""
        headline = (
            f"{b.router} saves {at_least}${_fmt(b.cost_usd_saved, b.cost_usd_saved_ci)} "
            f"({_fmt(b.gpu_hours_saved, b.gpu_hours_saved_ci)} GPU-h) and "
            f"{_fmt(b.session_s_saved, b.session_s_saved_ci, ' s')} of mean session time over "
            f"k8s_service on the {b.workload} at the cheapest size meeting the SLO"
        )
    else:
        headline = "k8s_service never met the SLO in the sizes tried; see the per-size table"

    def plot() -> Figure:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(setups), figsize=(6 * len(setups), 4), squeeze=False)
        for ax, wname in zip(axes[0], setups, strict=True):
            for router in routers:
                d = per_size[(per_size.workload == wname) & (per_size.router == router)]
                ax.errorbar(
                    d.replicas, d.slo_attainment, yerr=d.slo_attainment_ci, marker="o", label=router
                )
            ax.axhline(setups[wname][4], color="grey", ls="--", lw=1)
            ax.set(title=wname, xlabel="replicas", ylabel="SLO attainment")
            ax.legend()
        fig.tight_layout()
        return fig

    return Answer(
        "q1_kv_affinity",
        "1. KV-cache affinity: what do kv_aware / prefix_affinity save over a Kubernetes Service?",
        headline,
        table,
        {
            "SLO": ">= 95% of calls with TTFT <= 2 s (real traces) or >= 85% with TTFT <= 10 s "
            "(synthetic 50k; first turns cannot meet it), and TPOT <= 0.1 s",
            "savings": "vs k8s_service at its cheapest size meeting the SLO, or at its largest "
            "size tried when it never meets it (then a lower bound: 'at least')",
            "sizes tried": ", ".join(map(str, scale.sizes)),
            "real traces": "LMCache agent sessions (Llama-3-70B TP=4), Poisson starts at 4 sessions/s",
            "synthetic": f"{scale.synth_sessions} ReAct sessions x {scale.synth_turns} calls, "
            "~50k-token prompts, 0.05 sessions/s (command-r TP=4)",
            "cluster": "DGX A100 80GB nodes, as many as the replicas need",
        },
        seeds,
        plot,
        {"per_size": per_size},
    )


# ---- 2. eviction cost --------------------------------------------------------------------


def ideal_hit_tokens(wl: Workload) -> dict[str, int]:
    """Per LLM call: prompt tokens whose KV an earlier call of the same session computed
    (leading prefix blocks seen before in the session), capped at ``input - 1`` as the
    engine does; what an infinite, session-sticky KV cache would hit."""
    seen: dict[str, set[int]] = {}
    out: dict[str, int] = {}
    for c in wl.calls:
        if c.kind != "llm":
            continue
        mine = seen.setdefault(c.session_id, set())
        n = 0
        for h in c.prefix_hashes:
            if h not in mine:
                break
            n += 1
        out[c.call_id] = max(0, min(n * c.block_size, c.input_tokens - 1))
        mine.update(c.prefix_hashes)
    return out


def _half_mean_prompt(wl: Workload) -> int:
    """Half the mean prompt of ``wl``'s LLM calls (tokens): the context at which the
    keynote prices a recomputed prefill token."""
    return int(float(np.mean([c.input_tokens for c in wl.calls if c.kind == "llm"])) / 2)


def q2_eviction_cost(scale: Scale) -> Answer:
    """Prompt tokens recomputed because their KV was evicted, and their $, per retention
    policy, with the KV-aware router keeping sessions on their replica."""
    retentions = ("lru", "ttl_pin", "infercept")
    seeds = list(range(scale.seeds))
    cfg0 = cluster("command-r", 4, 2, nodes=1, router="kv_aware")
    specs, ideal, usd_tok = [], {}, {}
    for s in seeds:
        wl = synth_workload(scale, s, rate_per_s=0.1)
        ideal[s] = ideal_hit_tokens(wl)
        usd_tok[s] = prefill_usd_per_token(cfg0, _half_mean_prompt(wl))
        for ret in retentions:
            cfg = replace(cfg0, policies=replace(cfg0.policies, retention=ret))
            specs.append(_spec({"retention": ret, "seed": s}, cfg, wl))

    def measure(spec: RunSpec, raw: SimResult, _: dict[str, Any]) -> dict[str, Any]:
        calls = raw.calls[(raw.calls.kind == "llm") & (raw.calls.status == "completed")]
        lost = sum(
            max(0, ideal[spec.seed][cid] - int(hit))
            for cid, hit in zip(calls.call_id, calls.cached_tokens, strict=True)
        )
        return {"recomputed_prefill_tokens": lost, "usd_lost": lost * usd_tok[spec.seed]}

    metrics = ("recomputed_prefill_tokens", "usd_lost", "prefix_hit_rate", "session_s", "cost_usd")
    table = _ci_table(_runs(specs, measure), ("retention",), metrics)
    worst = table.sort_values("recomputed_prefill_tokens").iloc[-1]
    best = table.sort_values("recomputed_prefill_tokens").iloc[0]
    headline = (
        f"{worst.retention} recomputes {_fmt(worst.recomputed_prefill_tokens, worst.recomputed_prefill_tokens_ci, ' tokens')} "
        f"(${_fmt(worst.usd_lost, worst.usd_lost_ci)}) after evictions; {best.retention} "
        f"{_fmt(best.recomputed_prefill_tokens, best.recomputed_prefill_tokens_ci, ' tokens')} "
        f"(${_fmt(best.usd_lost, best.usd_lost_ci)})"
    )

    def plot() -> Figure:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.bar(
            table.retention,
            table.recomputed_prefill_tokens,
            yerr=table.recomputed_prefill_tokens_ci,
        )
        ax.set(
            ylabel="prompt tokens recomputed after eviction",
            title="Eviction cost per retention policy",
        )
        fig.tight_layout()
        return fig

    return Answer(
        "q2_eviction_cost",
        "2. Eviction cost: prefill tokens and $ recomputed after KV evictions, per retention policy",
        headline,
        table,
        {
            "cluster": "1 DGX A100 80GB, command-r TP=4 x2, kv_aware router",
            "workload": f"{scale.synth_sessions} synthetic ReAct sessions x {scale.synth_turns} calls, "
            "~50k-token prompts, 0.1 sessions/s",
            "recomputed tokens": "per call: prefix tokens an earlier call of the session computed "
            "minus the tokens the engine found cached",
            "$": "recomputed tokens x prefill GPU-seconds per token (cost model, chunk at half the "
            "mean prompt as context) x GPU price",
            "ttl_pin": "Continuum's cost-benefit TTL, here under plain FCFS; Continuum pairs it "
            "with --batching program_fcfs, without which a pinned session's next call can queue "
            "behind a call waiting for that pin (docs/papers.md, Continuum)",
        },
        seeds,
        plot,
    )


# ---- 3. topology ------------------------------------------------------------------------


def q3_topology(scale: Scale) -> Answer:
    """Llama-3-70B at TP=8 on a cluster where four single-GPU Llama-3-8B replicas were
    placed first: ``topology_aware`` vs ``k8s_default``."""
    seeds = list(range(scale.seeds))
    wls = {s: real_workload(scale, s, 2.0, "llama-3-70b") for s in seeds}
    specs = []
    for placement in ("topology_aware", "k8s_default"):
        cfg = validate(
            ClusterConfig(
                name="2x DGX A100 80GB: Llama-3-8B TP=1 x4 (placed first) + Llama-3-70B TP=8",
                nodes=(NodeGroup("dgx-a100", 2, 8),),
                deployments=(
                    Deployment(model="llama-3-8b", tp=1, replicas=4),
                    Deployment(model="llama-3-70b", tp=8, replicas=1),
                ),
                policies=PolicyConfig(placement=placement, router="k8s_service"),
                source="<keynote>",
            )
        )
        specs += [_spec({"placement": placement, "seed": s}, cfg, wls[s]) for s in seeds]

    def measure(spec: RunSpec, raw: SimResult, _: dict[str, Any]) -> dict[str, Any]:
        big = raw.replicas[raw.replicas.model == "llama-3-70b"].iloc[0]
        calls = raw.calls[(raw.calls.status == "completed") & (raw.calls.kind == "llm")]
        tokens = float((calls.input_tokens + calls.output_tokens).sum())
        usd = 8 * (big.stop_s - big.start_s) / 3600 * get_gpu(spec.cluster.gpu).price_per_hour
        return {
            "gpus": big.gpus,
            "iteration_ms": 1e3 * big.busy_s / max(1, big.iterations),
            # the 70B replica's own $ per million tokens (replaces the whole cluster's)
            "usd_per_m_tokens": usd / tokens * 1e6,
        }

    runs = _runs(specs, measure)
    table = _ci_table(
        runs, ("placement",), ("iteration_ms", "usd_per_m_tokens", "ttft_p50_s", "session_s")
    )
    placements = runs.groupby("placement", sort=False)["gpus"].last()
    table.insert(1, "gpus", [placements[p] for p in table.placement])
    t, k = (
        table.set_index("placement").loc["topology_aware"],
        table.set_index("placement").loc["k8s_default"],
    )
    headline = (
        f"k8s_default puts the TP=8 group on GPUs {k.gpus} (across both nodes): "
        f"{_fmt(k.iteration_ms, k.iteration_ms_ci, ' ms')} per iteration and "
        f"${_fmt(k.usd_per_m_tokens, k.usd_per_m_tokens_ci)} per million tokens, vs "
        f"{_fmt(t.iteration_ms, t.iteration_ms_ci, ' ms')} and ${_fmt(t.usd_per_m_tokens, t.usd_per_m_tokens_ci)} "
        f"for topology_aware on GPUs {t.gpus}"
    )

    def plot() -> Figure:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        for ax, m, label in (
            (axes[0], "iteration_ms", "mean iteration (ms)"),
            (axes[1], "usd_per_m_tokens", "$ per million tokens"),
        ):
            ax.bar(table.placement, table[m], yerr=table[f"{m}_ci"])
            ax.set(ylabel=label)
        fig.suptitle("Llama-3-70B TP=8 on a fragmented cluster")
        fig.tight_layout()
        return fig

    return Answer(
        "q3_topology",
        "3. Topology: a 70B model at TP=8, topology_aware vs k8s_default on a fragmented cluster",
        headline,
        table,
        {
            "cluster": "2 DGX A100 80GB; 4 Llama-3-8B TP=1 replicas placed first (the fragmentation), "
            "then Llama-3-70B TP=8",
            "workload": "LMCache agent sessions on the 70B, Poisson starts at 2 sessions/s",
            "$ per million tokens": "the 70B replica's 8 GPUs x its lifetime x price / (input + output tokens)",
        },
        seeds,
        plot,
    )


# ---- 4. cold starts ---------------------------------------------------------------------


def q4_cold_starts(scale: Scale) -> Answer:
    """Scale from zero under bursty load: the Kubernetes HPA vs keep-warm vs queue depth."""
    scalers = {
        "hpa": "hpa:metric=queue,min_replicas=0,max_replicas=4,target=4",
        "keep_warm": "keep_warm:max_replicas=4",
        "queue_depth": "queue_depth:min_replicas=0,max_replicas=4",
    }
    seeds = list(range(scale.seeds))
    wls = {s: real_workload(scale, s, 0.5, "llama-3-70b") for s in seeds}
    specs = []
    for name, text in scalers.items():
        cfg = cluster("llama-3-70b", 4, 0, nodes=2, router="k8s_service", autoscaler=text)
        specs += [_spec({"autoscaler": name, "seed": s}, cfg, wls[s]) for s in seeds]

    def measure(spec: RunSpec, raw: SimResult, summary: dict[str, Any]) -> dict[str, Any]:
        price = get_gpu(spec.cluster.gpu).price_per_hour
        return {
            "idle_usd": summary["gpu_idle_hours"] * price,
            "ttft_max_s": float(raw.calls["ttft_s"].max()),
        }

    metrics = ("ttft_p99_s", "ttft_max_s", "cold_starts", "cold_start_usd", "idle_usd", "cost_usd")
    table = _ci_table(_runs(specs, measure), ("autoscaler",), metrics)
    table.insert(1, "spec", [scalers[a] for a in table.autoscaler])
    h = table.set_index("autoscaler")
    headline = "; ".join(
        f"{a}: worst TTFT {_fmt(h.loc[a, 'ttft_max_s'], h.loc[a, 'ttft_max_s_ci'], ' s')}, "
        f"idle ${_fmt(h.loc[a, 'idle_usd'], h.loc[a, 'idle_usd_ci'])}"
        for a in scalers
    )

    def plot() -> Figure:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        axes[0].bar(table.autoscaler, table.ttft_max_s, yerr=table.ttft_max_s_ci)
        axes[0].set(ylabel="worst TTFT (s)", title="latency spike")
        axes[1].bar(table.autoscaler, table.idle_usd, yerr=table.idle_usd_ci)
        axes[1].set(ylabel="idle GPU $", title="idle cost")
        fig.tight_layout()
        return fig

    return Answer(
        "q4_cold_starts",
        "4. Cold starts: scale-from-zero with hpa vs keep_warm vs queue_depth",
        headline,
        table,
        {
            "cluster": "2 DGX A100 80GB, Llama-3-70B TP=4, 0 replicas at t=0, at most 4, k8s_service router",
            "pod start-up": "scheduling 5 s + image pull 90 s (once per node) + weight load from NVMe + 20 s warm-up",
            "workload": "LMCache agent sessions, Poisson starts at 0.5 sessions/s",
            "idle $": "GPU-hours held but neither iterating nor starting, x price",
        },
        seeds,
        plot,
    )


# ---- 5. mesh tax ------------------------------------------------------------------------


def q5_mesh_tax(scale: Scale) -> Answer:
    """A 20-call agent chain with and without sidecar/gateway hops (and decision delay)."""
    base = cluster("llama-3-70b", 4, 1, nodes=1, router="k8s_service")
    dep = base.deployments[0]
    variants = {
        "no mesh": base,
        "Istio sidecars + gateway (3 hops)": replace(
            base, deployments=(replace(dep, mesh_hops=3),)
        ),
        "3 hops + 100 ms external scheduler": replace(
            base,
            deployments=(replace(dep, mesh_hops=3),),
            policies=replace(base.policies, router_delay_s=0.1),
        ),
    }
    seeds = list(range(scale.seeds))
    specs = []
    for s in seeds:
        wl = synth_workload(scale, s, rate_per_s=0.05, turns=20, task_tokens=2000.0)
        specs += [_spec({"variant": name, "seed": s}, cfg, wl) for name, cfg in variants.items()]
    df = _runs(specs)
    df["mesh_cpu_usd"] = df["mesh_cpu_usd"].fillna(0.0) if "mesh_cpu_usd" in df else 0.0
    ref = df[df.variant == "no mesh"].set_index("seed").session_s
    df["session_s_added"] = df.session_s - df.seed.map(ref)
    table = _ci_table(
        df, ("variant",), ("session_s", "session_s_added", "ttft_p50_s", "mesh_cpu_usd")
    )
    m = table.set_index("variant").loc["Istio sidecars + gateway (3 hops)"]
    headline = (
        f"3 mesh hops add {_fmt(1e3 * m.session_s_added, 1e3 * m.session_s_added_ci, ' ms')} to a 20-call "
        f"agent session of {_fmt(m.session_s, m.session_s_ci, ' s')} "
        f"({100 * m.session_s_added / m.session_s:.2g} %)"
    )

    def plot() -> Figure:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.barh(table.variant, table.session_s_added, xerr=table.session_s_added_ci)
        ax.set(xlabel="session time added (s)", title="Mesh tax on a 20-call agent chain")
        fig.tight_layout()
        return fig

    return Answer(
        "q5_mesh_tax",
        "5. Mesh tax: session time of a 20-call agent chain with and without per-hop overhead",
        headline,
        table,
        {
            "cluster": "1 DGX A100 80GB, Llama-3-70B TP=4 x1, k8s_service",
            "workload": f"{scale.synth_sessions} synthetic ReAct sessions of 20 LLM calls, ~2k-token first prompt",
            "hops": "client sidecar, gateway, server sidecar: 0.85 ms p90 / 1.35 ms p99 each "
            "(Istio 1.12.3), 2e-4 vCPU-s per call (Istio 1.24)",
            "external scheduler": "100 ms decision delay per call (a sensitivity value, not a measurement)",
        },
        seeds,
        plot,
    )


# ---- 6. restarts ------------------------------------------------------------------------


def q6_restarts(scale: Scale) -> Answer:
    """Pod restarts of both replicas mid-run; session KV lost with and without persistence."""
    persistences = ("none", "host_offload", "remote_store")
    cfg0 = cluster("command-r", 4, 2, nodes=1, router="kv_aware")
    seeds = list(range(scale.seeds))
    specs, usd_tok = [], {}
    for s in seeds:
        wl = synth_workload(scale, s, rate_per_s=0.1)
        last = max(c.issue_time_s for c in wl.calls if not c.parents)
        faults = FaultSchedule(
            (
                Fault(at_s=0.5 * last + 10.0, kind="replica_restart", replica=0, repair_s=0.0),
                Fault(at_s=0.8 * last + 20.0, kind="replica_restart", replica=1, repair_s=0.0),
            ),
            source="<keynote: two pod restarts>",
        )
        usd_tok[s] = prefill_usd_per_token(cfg0, _half_mean_prompt(wl))
        for p in persistences:
            cfg = replace(cfg0, policies=replace(cfg0.policies, persistence=p))
            specs.append(_spec({"persistence": p, "seed": s}, cfg, wl, faults=faults))

    def measure(spec: RunSpec, _: SimResult, summary: dict[str, Any]) -> dict[str, Any]:
        rec = int(summary.get("recomputed_tokens", 0))
        return {
            "lost_tokens": rec,
            "usd_lost": rec * usd_tok[spec.seed],
            "restored_tokens": summary.get("faults", {}).get("restored_tokens", 0),
        }

    table = _ci_table(
        _runs(specs, measure),
        ("persistence",),
        ("lost_tokens", "usd_lost", "restored_tokens", "session_s"),
    )
    h = table.set_index("persistence")
    headline = "; ".join(
        f"{p}: {_fmt(h.loc[p, 'lost_tokens'], h.loc[p, 'lost_tokens_ci'], ' tokens')} of session KV recomputed "
        f"(${_fmt(h.loc[p, 'usd_lost'], h.loc[p, 'usd_lost_ci'])})"
        for p in persistences
    )

    def plot() -> Figure:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.bar(table.persistence, table.lost_tokens, yerr=table.lost_tokens_ci)
        ax.set(
            ylabel="KV tokens recomputed after restarts", title="Session state lost on pod restarts"
        )
        fig.tight_layout()
        return fig

    return Answer(
        "q6_restarts",
        "6. Restarts: session state lost on pod restarts, with and without KV persistence",
        headline,
        table,
        {
            "cluster": "1 DGX A100 80GB, command-r TP=4 x2, kv_aware router",
            "faults": "pod restart of replica 0 at half the arrival span + 10 s, of replica 1 at 0.8 x + 20 s "
            "(each back after a cold start)",
            "workload": f"{scale.synth_sessions} synthetic ReAct sessions x {scale.synth_turns} calls, "
            "~50k-token prompts, 0.1 sessions/s",
        },
        seeds,
        plot,
    )


# ---- 7. disaggregation ------------------------------------------------------------------

#: The P:D splits of question 7 at 16 GPUs (4 instances of TP=4): name -> (prefill, decode).
PD_SPLITS = {"colocated": (0, 0), "1:3": (1, 3), "1:1": (2, 2), "3:1": (3, 1)}


def q7_disaggregation(scale: Scale) -> Answer:
    """Colocated vs prefill:decode splits at equal GPUs, on real and 50k-token agents."""
    base = cluster("llama-3.1-70b", 4, 4, nodes=2, router="dynamo_disagg")
    slo = SLO(ttft_s=5.0, tpot_s=0.05)
    seeds = list(range(scale.seeds))
    loads = {
        "agents": lambda s: real_workload(scale, s, 1.0, "llama-3.1-70b"),
        "50k agents": lambda s: synth_workload(scale, s, rate_per_s=0.1),
    }
    specs = []
    for wname, make in loads.items():
        for s in seeds:
            wl = make(s)
            for split, (p, d) in PD_SPLITS.items():
                cfg = apply_overrides(base, prefill_replicas=p, decode_replicas=d) if p else base
                specs.append(
                    _spec({"workload": wname, "split": split, "seed": s}, cfg, wl, slo=slo)
                )
    metrics = ("goodput_calls_per_s", "ttft_s.p90", "tpot_s.p90", "usd_per_m_tokens")
    table = _ci_table(_runs(specs), ("workload", "split"), metrics)
    order = {k: i for i, k in enumerate(PD_SPLITS)}
    table = table.sort_values(
        ["workload", "split"], key=lambda c: c.map(order).fillna(c)
    ).reset_index(drop=True)
    parts = []
    for wname in loads:
        t = table[table.workload == wname].set_index("split")
        best = str(t.drop(index="colocated")["goodput_calls_per_s"].idxmax())

        def say(split: str, t: pd.DataFrame = t) -> str:
            g, gc = t.loc[split, "goodput_calls_per_s"], t.loc[split, "goodput_calls_per_s_ci"]
            p, pc = t.loc[split, "tpot_s.p90"], t.loc[split, "tpot_s.p90_ci"]
            return f"goodput {_fmt(g, gc, '/s')}, TPOT p90 {_fmt(p, pc, ' s')}"

        parts.append(f"{wname}: colocated {say('colocated')}; best split {best}: {say(best)}")
    headline = "; ".join(parts)

    def plot() -> Figure:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        for k, wname in enumerate(loads):
            t = table[table.workload == wname]
            x = np.arange(len(t)) + 0.4 * k
            for ax, col, label in zip(
                axes,
                ("goodput_calls_per_s", "ttft_s.p90", "tpot_s.p90"),
                ("goodput (calls/s)", "TTFT p90 (s)", "TPOT p90 (s)"),
                strict=True,
            ):
                ax.bar(x, t[col], width=0.4, yerr=t[f"{col}_ci"], label=wname)
                ax.set_xticks(np.arange(len(t)) + 0.2, list(t.split))
                ax.set(ylabel=label)
        axes[0].legend()
        fig.suptitle("Prefill/decode disaggregation at 16 GPUs (dynamo_disagg router)")
        fig.tight_layout()
        return fig

    return Answer(
        "q7_disaggregation",
        "7. Disaggregation: when does splitting prefill and decode pay for agents?",
        headline,
        table,
        {
            "cluster": "2 DGX A100 80GB, Llama-3.1-70B TP=4 x4: colocated, or 1:3, 1:1, 3:1 "
            "prefill:decode instances; dynamo_disagg router (conditional disaggregation; "
            "KV-aware on the colocated cluster)",
            "objectives": "TTFT <= 5 s, TPOT <= 50 ms (goodput: calls meeting both)",
            "workload": "LMCache agent sessions at 1 session/s; synthetic ReAct sessions with "
            "~50k-token prompts at 0.1 sessions/s",
            "sweep": "examples/sweeps/pd_ratio.toml and docs/pd_ratio.md (Mooncake trace too)",
        },
        seeds,
        plot,
    )


QUESTIONS = (
    q1_kv_affinity,
    q2_eviction_cost,
    q3_topology,
    q4_cold_starts,
    q5_mesh_tax,
    q6_restarts,
    q7_disaggregation,
)


def answer_all(scale: Scale) -> list[Answer]:
    """Run the seven experiments at ``scale``."""
    return [q(scale) for q in QUESTIONS]


def write_answers(answers: Sequence[Answer], out: str | Path, scale: Scale) -> Path:
    """Write each answer's table (CSV), figure (PNG) and ``keynote.md`` as the
    directory ``out``, atomically (:func:`sim.common.io.atomic_dir`: built in a hidden
    sibling and renamed into place whole, so a failing plot or Ctrl-C leaves ``out``
    as it was; earlier keynote results there are replaced whole)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.common.io import atomic_dir, check_output_dir

    target = check_output_dir(out, force=True)
    parts = [f"# The keynote, answered by simulation ({scale.name} scale)\n"]
    with atomic_dir(target, replace=True) as d:
        for a in answers:
            a.table.to_csv(d / f"{a.key}.csv", index=False)
            for name, df in a.extra.items():
                df.to_csv(d / f"{a.key}_{name}.csv", index=False)
            fig = a.plot()
            try:
                fig.savefig(d / f"{a.key}.png", dpi=110)
            finally:
                plt.close(fig)
            parts.append(a.markdown() + f"\n![{a.key}]({a.key}.png)\n")
        parts.append(
            "## Headline numbers\n\n"
            + "\n".join(f"{i}. {a.headline}" for i, a in enumerate(answers, 1))
        )
        (d / "keynote.md").write_text("\n".join(parts) + "\n", encoding="utf-8")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Answer the keynote's seven questions by simulation.")
    p.add_argument("--out", default="results/keynote", help="output directory")
    p.add_argument("--scale", choices=("full", "ci"), default="full")
    args = p.parse_args(argv)
    scale = FULL if args.scale == "full" else CI
    from sim.common.io import check_output_dir

    check_output_dir(args.out, force=True)  # vetted before the experiments run
    answers = answer_all(scale)
    out = write_answers(answers, args.out, scale)
    for i, a in enumerate(answers, 1):
        print(f"{i}. {a.headline}")
    print(f"wrote {out}/keynote.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
