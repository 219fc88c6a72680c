"""Tokencake (arXiv 2510.18586): space + time KV scheduling vs vLLM, end-to-end latency.

The paper serves two multi-agent applications built as agent DAGs with function
calls, Code-Writer and Deep-Research (requests drawn from ShareGPT and AgentCode,
Poisson application arrivals), on a vLLM-based engine, and reports the mean
end-to-end latency of an application against vLLM across arrival rates (47.06% lower
at the heaviest load).  The applications are not public in a form this simulator
reads, so both are generated (orchestrator / sub-agent DAGs,
``sim.workload.traces.synth.FanoutConfig``) from their description; the engine setup
(model size, GPU, 3,050 KV blocks, 8,192-token step budget, 100 GiB of CPU KV) is the
authors' published one (github.com/pku-lemonade/TokenCake README).  Every assumption
is in the setup table.

Usage: python benchmarks/papers/tokencake.py [--fast] [--seed N] [--out DIR]
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sim  # noqa: E402
from papers.report import Headline, PaperResult, main  # noqa: E402
from sim.api import cluster_config  # noqa: E402
from sim.workload.calls import Workload  # noqa: E402
from sim.workload.traces.arrivals import ArrivalConfig  # noqa: E402
from sim.workload.traces.distributions import lognormal  # noqa: E402
from sim.workload.traces.synth import FanoutConfig, SynthConfig, generate  # noqa: E402

VLLM = {"batching": "fcfs", "retention": "lru"}
TOKENCAKE = {"batching": "tokencake", "retention": "tokencake"}
#: The two schedulers alone (the full run's ablation columns, as the paper's breakdown).
TIME_ONLY = {"batching": "fcfs", "retention": "tokencake"}
SPACE_ONLY = {"batching": "tokencake", "retention": "lru"}

#: The two applications.  Code-Writer: a planner hands the task to three coding
#: agents that write, run the tests (tool calls of seconds) and fix, twice, then a
#: reviewer joins them.  Deep-Research: a planner sends four search agents that query
#: the web four times each (fast tools, long results), then a writer joins them.
#: Shared 512-token system prompts; outputs of a few hundred tokens (ShareGPT-like).
APPS = {
    "Code-Writer": FanoutConfig(
        system_prompt_tokens=512,
        task_tokens=lognormal(600, 0.3, lo=64),
        rounds=2,
        subagents=3,
        subagent_turns=3,
        subagent_system_prompt_tokens=512,
        output_tokens=lognormal(300, 0.6, lo=16, hi=2048),
        tool_output_tokens=lognormal(800, 0.8, lo=0, hi=8192),
        tool_duration_s=lognormal(4.0, 0.8, hi=120),
    ),
    "Deep-Research": FanoutConfig(
        system_prompt_tokens=512,
        task_tokens=lognormal(300, 0.3, lo=16),
        rounds=1,
        subagents=4,
        subagent_turns=4,
        subagent_system_prompt_tokens=512,
        output_tokens=lognormal(250, 0.6, lo=16, hi=2048),
        tool_output_tokens=lognormal(1500, 0.8, lo=0, hi=8192),
        tool_duration_s=lognormal(3.0, 0.8, hi=120),
    ),
}
#: Application arrival rates (applications/s); the paper's headline is at 1 QPS.
RATES = (0.1, 0.25, 0.5, 1.0)
#: Applications per point (full, fast).
APPS_PER_POINT = (80, 30)
#: The authors' engine: 3,050 KV blocks of 16 tokens (Qwen2.5-14B at 0.5 memory
#: utilization on an 80 GB A800), 8,192 batched tokens per step, 100 GiB of CPU KV.
ENGINE = {
    "gpu": "a100-80gb",
    "nodes": 1,
    "model": "qwen3-14b",
    "tp": 1,
    "replicas": 1,
    "num_gpu_blocks_override": 3050,
    "max_num_batched_tokens": 8192,
    "max_num_seqs": 256,
}
HOST_KV_GIB = 100.0


def workload(app: str, rate: float, n: int, seed: int) -> Workload:
    cfg = SynthConfig(
        seed=seed,
        sessions=n,
        arrivals=ArrivalConfig(process="poisson", rate_per_s=rate),
        agents=(APPS[app],),
    )
    return Workload(list(generate(cfg)), name=f"{app}-{rate}")


def e2e(wl: Workload, policies: dict[str, str]) -> tuple[float, int, float]:
    """Mean application end-to-end latency (s), preemptions and prefix hit rate."""
    cfg = cluster_config(None, policies, **ENGINE)
    cfg = replace(cfg, deployments=(replace(cfg.deployments[0], host_kv_gib=HOST_KV_GIB),))
    s = sim.run(wl, cfg).summary
    return float(s["session_s"]["mean"]), int(s["preemptions"]), float(s["prefix_hit_rate"])


def run(fast: bool, seed: int, out_dir: Path) -> PaperResult:
    """Tokencake vs vLLM: mean end-to-end application latency across arrival rates."""
    rates = RATES[-1:] if fast else RATES
    n = APPS_PER_POINT[1 if fast else 0]
    rows: list[dict[str, object]] = []
    cut: dict[tuple[str, float], float] = {}
    for app in APPS:
        for rate in rates:
            wl = workload(app, rate, n, seed)
            base, bp, bh = e2e(wl, VLLM)
            tc, tp, th = e2e(wl, TOKENCAKE)
            cut[(app, rate)] = 1.0 - tc / base
            row: dict[str, object] = {
                "application": app, "apps/s": rate,
                "paper reduction": "47.06%" if rate == 1.0 else None,
                "vLLM E2E (s)": base, "Tokencake E2E (s)": tc,
                "agentsim reduction": f"{100 * cut[(app, rate)]:.1f}%",
                "preemptions vLLM / Tokencake": f"{bp} / {tp}",
                "prefix hit vLLM / Tokencake": f"{bh:.2f} / {th:.2f}",
            }  # fmt: skip
            if not fast:
                row["time scheduler only E2E (s)"] = e2e(wl, TIME_ONLY)[0]
                row["space scheduler only E2E (s)"] = e2e(wl, SPACE_ONLY)[0]
            rows.append(row)
    heavy = rates[-1]
    best = max(cut.values())
    return PaperResult(
        name="tokencake",
        title="Tokencake: KV-cache-centric space and time scheduling for multi-agent apps",
        citation="Bian et al., arXiv 2510.18586 (EuroSys '27): end-to-end latency over "
        "47.06% lower than vLLM on Code-Writer and Deep-Research (abstract; at 1 QPS)",
        setup={
            "engine": "vLLM-shaped replica (agentsim), one instance",
            "GPU / model": "A100 80GB (the authors' A800 is an A100 variant), qwen3-14b "
            "(40 layers, same width and 8 KV heads as the authors' Qwen2.5-14B, which "
            "agentsim lacks), TP=1",
            "engine limits": "3,050 KV blocks of 16 tokens (the authors' count at "
            "gpu_memory_utilization 0.5), max_num_batched_tokens 8,192, max_num_seqs 256, "
            f"{HOST_KV_GIB:g} GiB host KV tier",
            "baseline (vLLM)": "--batching fcfs --retention lru (prefix caching, no offload)",
            "Tokencake": "--batching tokencake (space scheduler: DAG roots/joins first, a "
            "5-30% reserved KV partition) --retention tokencake (time scheduler: offload "
            "during tool calls, predictive upload)",
            "Code-Writer": "planner -> 3 coding agents x 3 turns with test-tool calls "
            "(lognormal median 4 s) -> planner, twice, then a reviewer join; 512-token "
            "system prompts, outputs ~300 tokens, tool results ~800 tokens (assumed)",
            "Deep-Research": "planner -> 4 search agents x 4 turns with search-tool calls "
            "(median 3 s, results ~1.5k tokens) -> writer join (assumed)",
            "arrivals": f"Poisson applications, rates {list(rates)} apps/s, {n} applications "
            f"per point, seed {seed}",
            "metric": "mean end-to-end latency of an application (first call issued to "
            "last call done); reduction = 1 - Tokencake / vLLM",
        },
        rows=rows,
        headlines=[
            Headline(
                f"E2E latency, vLLM / Tokencake, Deep-Research at {heavy:g} apps/s",
                "1.89x (47.06% lower)",
                1.0 / (1.0 - cut[("Deep-Research", heavy)]),
            ),
            Headline(
                f"E2E latency, vLLM / Tokencake, Code-Writer at {heavy:g} apps/s",
                "1.89x (47.06% lower)",
                1.0 / (1.0 - cut[("Code-Writer", heavy)]),
            ),
            Headline("E2E latency, vLLM / Tokencake, best point", "1.89x", 1.0 / (1.0 - best)),
        ],
        notes=NOTES,
    )


NOTES = """
Tokencake's effect has the paper's direction on both applications and at every load
run: the time scheduler moves a tool-waiting agent's context to host memory and back
before its tool returns, so other agents get that memory and the agent finds its KV
in HBM (higher prefix hit rate, no reload on the critical path); the space scheduler
keeps the orchestrator's turns (DAG roots and joins) from being preempted by
sub-agents (far fewer preemptions).  The reduction is smaller than the paper's 47%:
the applications are generated from the paper's description, not its Code-Writer /
Deep-Research code or its ShareGPT/AgentCode prompts; the paper's predicted function
durations come from the developer (``predict_time``), here from the observed mean
wait, so uploads of short tool calls land late (the call then loads its KV itself)
and long ones early; the vLLM baseline here already caches prefixes with LRU and
recomputes preempted calls without the Python-side overheads of a real engine; and
agentsim does not model the paper's CPU block buffer and progressive GPU reservation
(allocation costs). The authors' own re-implementation on vLLM v0.22 reports 22.7%
to 34.2% lower E2E than native vLLM on a 24-DAG workload (their README), closer to
what agentsim finds.  The paper's second metric (up to 16.9% higher effective GPU KV
utilization) is not reproduced.
"""

if __name__ == "__main__":
    main(run)
