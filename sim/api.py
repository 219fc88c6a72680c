"""The Python API for notebooks and scripts: ``sim.run`` and ``sim.api.compare``.

>>> import sim
>>> r = sim.run("traces/default.jsonl", policies="session_affinity", seed=0)
>>> r.summary["ttft_s"]["p50"]            # seconds
>>> r.calls.head()                         # one row per call (DataFrame)
>>> r.plot_latency_cdf()                   # a matplotlib Figure
>>> r.save("results/demo")                 # summary.json, calls.parquet, report.md/.html
>>> cmp = sim.api.compare("traces/default.jsonl",
...                       policies=["round_robin", "least_loaded"], seeds=3)
>>> cmp.table                              # one row per policy (comparison.csv)

``trace`` is a path (any supported format; ``run`` generates a synthetic TOML while it
simulates), a :class:`~sim.workload.calls.Workload` or a
:class:`~sim.workload.calls.LazyWorkload` (None: the embedded default trace); ``cluster`` a TOML path, a
:class:`~sim.cluster.config.ClusterConfig` or None (the default cluster); ``policies`` a
router spec (``"prefix_affinity:cache_threshold=0.5"``), a ``kind=spec`` string
(``"batching=fcfs"``) or a dict ``{"router": ..., "batching": ...}``.  Further
keyword arguments are the quick cluster overrides of ``agentsim run`` (``gpu``,
``nodes``, ``model``, ``tp``, ``pp``, ``replicas``, ``max_num_seqs``,
``max_num_batched_tokens``, ``block_size``, ``costmodel``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from sim.cluster.config import (
    ClusterConfig,
    apply_overrides,
    check_serves,
    default_cluster_config,
    load_cluster_config,
)
from sim.common.errors import ConfigError
from sim.experiments.arrivals import jittered, mean_session_gap, retimed
from sim.experiments.runner import RunSpec, group_stats, run_experiment, workload_spec
from sim.metrics.registry import higher_is_better
from sim.report.results import SLO, enrich_summary, write_results
from sim.simulation import SimResult, simulate
from sim.workload.calls import AnyWorkload, LazyWorkload, Workload

if TYPE_CHECKING:  # keeps matplotlib out of ``import sim.api``
    from matplotlib.figure import Figure

    from sim.cluster.faults import FaultSchedule

#: ``kind=spec`` prefixes accepted in policy strings, and the config field they set.
POLICY_KINDS = {
    "router": "router",
    "routing": "router",
    "batching": "batching",
    "retention": "retention",
    "placement": "placement",
    "autoscaler": "autoscaler",
    "autoscaling": "autoscaler",
}

#: Registry kind of each policy field of the cluster config.
REGISTRY_KIND = {
    "router": "routing",
    "batching": "batching",
    "retention": "retention",
    "placement": "placement",
    "autoscaler": "autoscaling",
}

PolicyArg = str | Mapping[str, str] | None


def policy_dict(policies: PolicyArg) -> dict[str, str]:
    """Policy specs by config field (``router``, ``batching``, ...) from an API argument.

    A plain spec names a router; ``kind=spec`` names another kind; several may be
    joined with ``+`` (``"least_loaded+batching=fcfs"``).
    """
    if policies is None:
        return {}
    if isinstance(policies, Mapping):
        out = {}
        for k, v in policies.items():
            if k not in POLICY_KINDS:
                raise ConfigError(
                    f"unknown policy kind {k!r}; expected one of {', '.join(POLICY_KINDS)}"
                )
            if not str(v).strip():
                raise ConfigError(f"{k}: empty policy spec; name a policy")
            out[POLICY_KINDS[k]] = str(v)
        return out
    out = {}
    for part in str(policies).split("+"):
        part = part.strip()
        head, eq, rest = part.partition("=")
        if eq and ":" not in head and head in POLICY_KINDS:
            if not rest.strip():
                raise ConfigError(f"{policies!r}: {head}= has an empty policy spec")
            out[POLICY_KINDS[head]] = rest.strip()
        elif part:
            out["router"] = part
    if not out:
        raise ConfigError(f"empty policy spec {policies!r}")
    return out


def split_policies(text: str) -> list[str]:
    """Split ``--policies a,b:x=1,y=2,c`` into entries.

    A comma starts a new entry unless the next piece is a bare ``key=value`` following
    an entry with parameters (``name:key=value``): then it is another parameter.
    ``kind=spec`` pieces (``batching=fcfs``) always start an entry.
    """
    out: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        key = piece.partition("=")[0]
        is_param = (
            "=" in piece
            and ":" not in key
            and "+" not in piece
            and key not in POLICY_KINDS
            and bool(out)
            and ":" in out[-1].rpartition("+")[2]
        )
        if is_param:
            out[-1] += "," + piece
        else:
            out.append(piece)
    if not out:
        raise ConfigError(f"--policies: no policy in {text!r}")
    return out


def load_workload(
    trace: str | Path | AnyWorkload | None, trace_format: str | None = None
) -> Workload:
    """A workload from a path (any supported format), a Workload (a generated one is
    generated now), or None (default)."""
    if isinstance(trace, LazyWorkload):
        return trace.materialize()
    if isinstance(trace, Workload):
        return trace
    from sim.common.paths import DEFAULT_TRACE
    from sim.workload.traces import load_trace

    return load_trace(str(trace if trace is not None else DEFAULT_TRACE), trace_format)


def open_workload(
    trace: str | Path | AnyWorkload | None, trace_format: str | None = None
) -> AnyWorkload:
    """As :func:`load_workload`, but a synthetic workload is generated while it is
    simulated (:func:`sim.workload.traces.open_trace`)."""
    if isinstance(trace, Workload | LazyWorkload):
        return trace
    from sim.common.paths import DEFAULT_TRACE
    from sim.workload.traces import open_trace

    return open_trace(str(trace if trace is not None else DEFAULT_TRACE), trace_format)


def cluster_config(
    cluster: str | Path | ClusterConfig | None = None,
    policies: PolicyArg = None,
    **overrides: Any,
) -> ClusterConfig:
    """A validated cluster config with policies and quick overrides applied."""
    if isinstance(cluster, ClusterConfig):
        cfg = cluster
    elif cluster is None:
        cfg = default_cluster_config()
    else:
        cfg = load_cluster_config(cluster)
    return apply_overrides(cfg, policies=policy_dict(policies) or None, **overrides)


@dataclass
class Result:
    """One run: the simulator's :class:`~sim.simulation.SimResult` plus report helpers.

    ``summary`` is ``summary.json``: the contract metrics and the report metrics for
    ``slo`` (see :func:`sim.report.results.report_metrics`).  Times are seconds, cost USD.
    """

    raw: SimResult
    slo: SLO = field(default_factory=SLO)
    #: ``enrich_summary(raw, slo)``, computed here unless the caller has it already
    summary: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.summary:
            self.summary = enrich_summary(self.raw, self.slo)

    @property
    def calls(self) -> pd.DataFrame:
        """One row per call (``sim.metrics.recorder.CALL_COLUMNS`` plus ttft_s, e2e_s, tpot_s)."""
        return self.raw.calls

    @property
    def sessions(self) -> pd.DataFrame:
        """One row per session: start_s, end_s, calls, completed, session_s."""
        return self.raw.sessions

    @property
    def timeline(self) -> pd.DataFrame:
        """Per-replica samples at iteration boundaries: running, waiting, KV blocks."""
        return self.raw.timeline

    @property
    def replicas(self) -> pd.DataFrame:
        """One row per replica: GPUs, lifetime, busy seconds, KV capacity, evictions."""
        return self.raw.replicas

    @property
    def links(self) -> pd.DataFrame:
        """KV transfers per directed link of a disaggregated run (``kv_links.csv``):
        link, type, transfers, bytes; empty for a colocated run."""
        return self.raw.links

    @property
    def config(self) -> dict[str, Any]:
        return self.raw.config

    @property
    def perf(self) -> dict[str, float | str]:
        """Wall-clock numbers of the simulation (not deterministic), and whether the
        compiled event loop ran (``native``: ``"on"`` or why not)."""
        return self.raw.perf

    @property
    def makespan_s(self) -> float:
        return float(self.summary["makespan_s"])

    # ---- plots (matplotlib Figures; a notebook shows them inline) ----------------
    def plot_latency_cdf(self) -> Figure:
        """CDFs of TTFT, TPOT, per-call end-to-end latency and session completion."""
        from sim.report.plots import latency_cdfs

        return latency_cdfs({str(self.summary["policy"]): (self.calls, self.sessions)})

    def plot_timeline(self) -> Figure:
        """Running and waiting sequences per replica over simulated time."""
        from sim.report.plots import timeline_figure

        return timeline_figure(self.timeline, self.makespan_s)

    def plot_kv(self) -> Figure:
        """KV cache occupancy per replica over simulated time."""
        from sim.report.plots import kv_figure

        return kv_figure(self.timeline, self.replicas, self.makespan_s)

    def plot_heatmap(self) -> Figure:
        """Per-replica utilisation heatmap over simulated time."""
        from sim.report.plots import heatmap_figure

        return heatmap_figure(self.timeline, self.makespan_s)

    def plot_cost(self) -> Figure:
        """GPU-hours per replica split into busy, idle and cold start."""
        from sim.report.plots import cost_figure
        from sim.specs.hardware import get_gpu

        price = get_gpu(self.config["cluster"]["gpu"]).price_per_hour
        return cost_figure(self.summary, self.replicas, price)

    def plot_topology(self) -> Figure:
        """The cluster graph with each replica's GPUs coloured."""
        from sim.report.plots import topology_figure

        return topology_figure(self.config, self.replicas)

    def markdown(self) -> str:
        """The run's ``report.md`` text."""
        from sim.report.results import render_markdown

        return render_markdown(self.summary, self.config, self.replicas, self.timeline, self.links)

    def save(self, out: str | Path, html: bool = True) -> Path:
        """Write the run's output files (and ``report.html`` if ``html``) to ``out``."""
        return write_results(self.raw, out, slo=self.slo, html=html)


def run(
    trace: str | Path | AnyWorkload | None = None,
    cluster: str | Path | ClusterConfig | None = None,
    policies: PolicyArg = None,
    seed: int = 0,
    *,
    load_scale: float = 1.0,
    slo: SLO | None = None,
    trace_format: str | None = None,
    faults: FaultSchedule | None = None,
    progress: bool = False,
    progress_label: str = "simulating",
    **overrides: Any,
) -> Result:
    """Simulate ``trace`` on ``cluster`` under ``policies`` with ``seed``.

    See the module docstring for the argument forms.  ``load_scale`` multiplies the
    arrival rate; ``slo`` sets the objectives of the SLO metrics (default TTFT <= 2 s,
    TPOT <= 100 ms); ``faults`` a fault schedule to inject (``sim.cluster.faults``);
    ``progress`` shows a bar on a terminal.
    """
    wl = open_workload(trace, trace_format)
    cfg = check_serves(cluster_config(cluster, policies, **overrides))
    raw = simulate(
        wl,
        cfg,
        seed=seed,
        load_scale=load_scale,
        progress=progress,
        progress_label=progress_label,
        faults=faults,
    )
    return Result(raw, slo or SLO())


# ---- comparisons ---------------------------------------------------------------------


#: Columns of the markdown/HTML comparison table: (metric, header, unit).
TABLE_METRICS = (
    ("ttft_s.p50", "TTFT p50", "ms"),
    ("ttft_s.p99", "TTFT p99", "ms"),
    ("tpot_s.p50", "TPOT p50", "ms"),
    ("e2e_s.p50", "e2e p50", "s"),
    ("session_s.mean", "session mean", "s"),
    ("session_s.p90", "session p90", "s"),
    ("slo_attainment", "SLO met", "%"),
    ("goodput_tokens_per_s", "goodput tok/s", ""),
    ("prefix_hit_rate", "hit rate", "%"),
    ("preemptions", "preempt.", ""),
    ("cost_usd", "cost $", ""),
    ("usd_per_m_output_tokens", "$/M out tok", ""),
)


@dataclass
class Comparison:
    """Several policies run on the same workload with the same seeds.

    ``runs``: one row per (policy, seed) with the flattened ``summary.json``.
    ``table``: one row per policy (the ``comparison.csv`` contract): ``policy``,
    ``seeds``, ``rank`` (1 = best by ``rank_by``), then every numeric metric as its
    mean over seeds (``ttft_s.p50`` ...).  With two or more seeds each metric ``m``
    also has ``m.ci95`` (half-width of the 95% t-interval of the mean) and, for
    every policy but the first (the baseline), ``m.p_value`` of a paired t-test
    against the baseline over matched seeds and ``m.significant`` (p < ``alpha``).
    """

    runs: pd.DataFrame
    table: pd.DataFrame
    rank_by: str
    seeds: list[int]
    results: dict[str, list[Result]]
    alpha: float = 0.05
    #: What differed between seeds, in words (the markdown table's note).
    seeds_vary: str = ""

    @property
    def policies(self) -> list[str]:
        return list(self.table["policy"])

    def markdown(self) -> str:
        """The key metrics as a markdown table (mean ± 95% CI; * = significant)."""
        many = len(self.seeds) > 1
        cols = [(m, h, u) for m, h, u in TABLE_METRICS if m in self.table.columns]
        head = "| policy | rank | " + " | ".join(h for _, h, _ in cols) + " |"
        lines = [head, "|---|---|" + "---|" * len(cols)]
        overloaded = []
        for row in self.table.to_dict("records"):
            label = str(row["policy"])
            raw = row.get("overloaded")
            frac = 0.0 if raw is None or _isnan(raw) else float(raw)
            if frac > 0:
                n = round(frac * len(self.seeds))
                label += " ⚠ overloaded" + (f" ({n}/{len(self.seeds)} seeds)" if many else "")
                overloaded.append(str(row["policy"]))
            cells = [label, str(row["rank"])]
            for m, _, unit in cols:
                cell = _fmt_metric(row[m], unit)
                if many and not _isnan(row.get(f"{m}.ci95")):
                    cell += " ± " + _fmt_ci(row[f"{m}.ci95"], row[m], unit)
                if row.get(f"{m}.significant") is True:
                    cell += " *"
                cells.append(cell)
            lines.append("| " + " | ".join(cells) + " |")
        notes = [
            "",
            f"Ranked by {self.rank_by} ({'higher' if higher_is_better(self.rank_by) else 'lower'} is better). "
            f"Seeds: {', '.join(map(str, self.seeds))}. {self.seeds_vary}",
        ]
        if overloaded:
            notes.append(
                f"⚠ Overloaded (arrivals outpaced service; summary.json 'overloaded'): "
                f"{', '.join(overloaded)}. Their latencies are mostly queueing for capacity."
            )
        if many:
            notes.append(
                f"Values are means over seeds ± the 95% t-interval half-width; * marks a difference from "
                f"{self.policies[0]} significant at p < {self.alpha} (paired t-test over matched seeds)."
            )
        return "\n".join(lines + notes) + "\n"

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def plot_cdf(self) -> Figure:
        """Overlaid latency CDFs of every policy (all seeds pooled)."""
        from sim.report.plots import latency_cdfs

        runs = {
            label: (
                pd.concat([r.calls for r in rs], ignore_index=True),
                pd.concat([r.sessions for r in rs], ignore_index=True),
            )
            for label, rs in self.results.items()
        }
        return latency_cdfs(runs)

    def html(self) -> str:
        """A self-contained HTML page: the table and the overlaid CDFs."""
        from sim.report.html import markdown_to_html, page
        from sim.report.plots import png_bytes

        md = "# agentsim comparison\n\n## Policies\n\n" + self.markdown()
        figs = {"Policies": [("Latency CDFs by policy", png_bytes(self.plot_cdf()))]}
        return page("agentsim comparison", markdown_to_html(md, figs))

    def save(self, out: str | Path) -> Path:
        """Write ``comparison.csv``, ``comparison_runs.csv``, ``comparison.md``,
        ``comparison.html`` and ``cdf.png`` into ``out``."""
        from sim.common.io import atomic_write, atomic_write_text
        from sim.report.plots import png_bytes

        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "comparison.csv", self.table.to_csv(index=False))
        atomic_write_text(d / "comparison_runs.csv", self.runs.to_csv(index=False))
        atomic_write_text(d / "comparison.md", "# agentsim comparison\n\n" + self.markdown())
        atomic_write_text(d / "comparison.html", self.html())
        png = png_bytes(self.plot_cdf())
        atomic_write(d / "cdf.png", lambda tmp: Path(tmp).write_bytes(png))
        return d


def _isnan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _fmt_metric(x: Any, unit: str, plain: bool = False, like: Any = None) -> str:
    """A table cell; durations (``ms``, ``s``) in the unit that suits ``like`` (default
    ``x``): 8536.9 s prints as 2.4 h, not 8536928.8 ms."""
    if _isnan(x):
        return "n/a"
    v = float(x)
    if unit in ("ms", "s"):
        from sim.report.results import duration_unit

        scale, name, dec = duration_unit(v if _isnan(like) else float(like))
        return f"{v / scale:,.{dec}f}" + ("" if plain else f" {name}")
    if unit == "%":
        return f"{v * 100:.1f}" + ("" if plain else "%")
    return f"{v:,.4g}"


def _fmt_ci(ci: Any, mean: Any, unit: str) -> str:
    """A confidence half-width in the unit and precision of its mean's cell: exactly 0
    prints as ``0``; one too small for that precision with two significant digits."""
    c = float(ci)
    if c == 0.0 or (not _isnan(mean) and c <= 1e-9 * abs(float(mean))):
        return "0"  # no spread (or float noise of equal values)
    if unit not in ("ms", "s", "%"):
        return _sig2(c)
    s = _fmt_metric(c, unit, plain=True, like=mean)
    if s.strip("0.,") == "":
        scale = 0.01
        if unit in ("ms", "s"):
            from sim.report.results import duration_unit

            scale = duration_unit(float(mean) if not _isnan(mean) else c)[0]
        s = _sig2(c / scale)
    return s


def _sig2(x: float) -> str:
    """``x`` rounded to two significant digits, without an exponent (0.0042, 57, 12,000)."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    digits = 1 - math.floor(math.log10(abs(x)))
    return f"{round(x, digits):,.{max(0, digits)}f}"


def summarize_runs(
    runs: pd.DataFrame, order: Sequence[str], rank_by: str, alpha: float = 0.05
) -> pd.DataFrame:
    """The per-policy table of :class:`Comparison` from its per-run rows (policies in
    ``order``): :func:`sim.experiments.runner.group_stats` by policy with paired tests
    against the first, then ``rank`` by ``rank_by`` in its registry direction."""
    metrics = [
        c
        for c in runs.columns
        if c not in ("policy", "seed") and pd.api.types.is_numeric_dtype(runs[c])
    ]
    if rank_by not in metrics:
        raise ConfigError(f"--rank-by {rank_by!r} is not a metric; e.g. {', '.join(metrics[:8])}")
    ordered = pd.concat([runs[runs["policy"] == p] for p in order], ignore_index=True)
    table = group_stats(ordered, "policy", metrics, paired=True, alpha=alpha)
    score = table[rank_by].astype(float)
    if higher_is_better(rank_by):
        score = -score
    rank = score.rank(method="min", na_option="bottom").astype(int)
    table.insert(2, "rank", rank)
    return table


def compare(
    trace: str | Path | AnyWorkload | None = None,
    cluster: str | Path | ClusterConfig | None = None,
    policies: str | Iterable[PolicyArg] = ("round_robin", "least_loaded", "session_affinity"),
    seeds: int = 1,
    seed: int = 0,
    *,
    load_scale: float = 1.0,
    slo: SLO | None = None,
    trace_format: str | None = None,
    rank_by: str = "session_s.mean",
    alpha: float = 0.05,
    labels: Sequence[str] | None = None,
    retime: bool = False,
    jitter: bool | None = None,
    faults: FaultSchedule | None = None,
    progress: bool = False,
    on_run: Callable[[str, int, Result], None] | None = None,
    **overrides: Any,
) -> Comparison:
    """Run every policy on the same workload with seeds ``seed .. seed + seeds - 1``.

    ``policies`` is a ``--policies`` string (``"a,b:x=1,c"``) or an iterable of policy
    arguments (see :func:`policy_dict`); the first is the baseline of significance
    tests.  ``rank_by`` is a flattened summary metric (``ttft_s.p99``,
    ``slo_attainment`` ...).  ``on_run(label, seed, result)`` is called after each run
    (the CLI writes its files there).  ``retime``: for each seed, move the session
    starts to a Poisson process of the trace's own session rate (seeded; calls inside
    a session keep their timing), so seeds vary the workload as well as the policies'
    randomness; every policy still sees the same workload for a given seed.
    ``jitter``: for each seed, shift every session by its own random offset of at most
    half the mean gap between session starts (:func:`jittered`), keeping the trace's
    arrival pattern; None (the default) turns it on when ``seeds > 1`` and ``retime``
    is off, so that seeds vary the arrivals even under deterministic policies (whose
    runs would otherwise all be identical), and leaves it off for a workload whose
    sessions all start at one instant.  ``faults``: the same fault schedule is injected
    into every run.  Returns a :class:`Comparison`; its ``table`` is the comparison
    DataFrame and its ``seeds_vary`` says what the seeds changed.
    """
    names, kinds = _policy_kinds(policies, labels)
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    wl = load_workload(trace, trace_format)
    base = cluster_config(cluster, None, **overrides)
    cfgs = [check_serves(apply_overrides(base, policies=k)) for k in kinds]
    slo = slo or SLO()
    seed_list = list(range(seed, seed + seeds))
    seeds_vary, jit = _seed_variation(wl, seeds, retime, jitter)
    workloads = {s: retimed(wl, s) if retime else jittered(wl, s) if jit else wl for s in seed_list}
    grid = [(n, c, s) for n, c in zip(names, cfgs, strict=True) for s in seed_list]
    specs = [
        workload_spec(
            f"{name}-seed{s}",
            {"policy": name},
            cfg,
            workloads[s],
            s,
            load_scale=load_scale,
            faults=faults,
            slo=slo,
            progress_label=f"[{k}/{len(grid)}] {name} seed {s}" if progress else None,
        )
        for k, (name, cfg, s) in enumerate(grid, 1)
    ]
    results: dict[str, list[Result]] = {n: [] for n in names}

    def keep(spec: RunSpec, raw: SimResult, summary: dict[str, Any]) -> None:
        res = Result(raw, slo, dict(summary))  # the runner computed it already
        results[spec.params["policy"]].append(res)
        if on_run is not None:
            on_run(spec.params["policy"], spec.seed, res)

    runs = run_experiment(specs, on_run=keep, drop=("policy",))
    table = summarize_runs(runs, names, rank_by, alpha)
    return Comparison(runs, table, rank_by, seed_list, results, alpha, seeds_vary)


def _policy_kinds(
    policies: str | Iterable[PolicyArg], labels: Sequence[str] | None
) -> tuple[list[str], list[dict[str, str]]]:
    """Each compared policy's label and policy specs by config field; a bad policy name
    or parameter fails here, before anything is simulated."""
    entries: list[PolicyArg] = (
        list(split_policies(policies)) if isinstance(policies, str) else list(policies)
    )
    if not entries:
        raise ConfigError("compare needs at least one policy")
    names = list(labels) if labels is not None else [_label(p) for p in entries]
    if len(names) != len(entries) or len(set(names)) != len(names):
        raise ConfigError(f"policy labels must be unique, one per policy: {names}")
    from policies import registry

    kinds = [policy_dict(p) for p in entries]
    for kind in kinds:
        for fld, text in kind.items():
            registry.create(REGISTRY_KIND[fld], text)
    return names, kinds


def _seed_variation(
    wl: Workload, seeds: int, retime: bool, jitter: bool | None
) -> tuple[str, bool]:
    """What the seeds of a comparison vary (a sentence) and whether to jitter."""
    if retime:
        return (
            "Per seed, session starts are re-drawn as a Poisson process at the trace's "
            "session rate (--retime); seeds also seed the policies.",
            False,
        )
    gap = mean_session_gap(wl)
    if jitter is None:
        jitter = seeds > 1 and gap > 0
    if jitter and gap <= 0:
        raise ConfigError(
            f"{wl.source or wl.name}: arrival jitter needs sessions starting at different times"
        )
    if jitter:
        return (
            f"Per seed, each session is shifted by a random offset within ±{gap / 2:.3g} s "
            "(half the mean gap between session starts: arrival jitter); seeds also seed "
            "the policies.",
            True,
        )
    if seeds > 1:
        why = " (every session starts at the same time)" if gap <= 0 else ""
        return (
            f"Arrivals as recorded{why}; seeds vary only the policies' randomness.",
            False,
        )
    return "Arrivals as recorded.", False


def _label(p: PolicyArg) -> str:
    if isinstance(p, Mapping):
        return "+".join(f"{k}={v}" for k, v in p.items())
    return str(p)
