"""Autellix (arXiv 2502.13965): program-level scheduling (PLAS, ATLAS) and its load balancer.

The paper serves agentic programs (multi-turn chatbots, function-calling agents,
tree-search programs with parallel threads) and compares the latency-vs-arrival-rate
curves of Autellix and vLLM: at the same average program latency Autellix sustains 4x
to 15x the program throughput, because vLLM's FCFS lets the long calls of long
programs block the short ones (head-of-line blocking at call and at program level).
Here, three experiments on generated programs (the paper's traces are not public in a
form agentsim reads; the shapes are in the setup table):

1. single-threaded programs on one engine: ``plas`` vs ``fcfs``;
2. multi-threaded (fan-out DAG) programs on one engine: ``atlas`` vs ``fcfs``;
3. single-threaded programs on 4 engines: Autellix (``plas`` + ``autellix_lb``) vs
   vLLM (``fcfs`` + ``round_robin``), with both halves alone.

Throughput at equal latency: the highest program arrival rate whose mean program
latency stays within twice vLLM's light-load latency (interpolated on the rate grid).

Usage: python benchmarks/papers/autellix.py [--fast] [--seed N] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sim  # noqa: E402
from papers.infercept import rate_at  # noqa: E402
from papers.report import Headline, PaperResult, main  # noqa: E402
from sim.workload.calls import Workload  # noqa: E402
from sim.workload.traces.arrivals import ArrivalConfig  # noqa: E402
from sim.workload.traces.distributions import Dist, lognormal  # noqa: E402
from sim.workload.traces.synth import FanoutConfig, ReactConfig, SynthConfig, generate  # noqa: E402

#: Single-threaded programs (chatbot / function-calling agents): heavy-tailed program
#: length (most programs make a few calls, a few make dozens) and heavy-tailed outputs.
SINGLE = ReactConfig(
    task_tokens=lognormal(600, 0.6, lo=32),
    turns=Dist("empirical", values=(1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 4.0, 6.0, 10.0, 20.0, 40.0)),
    output_tokens=lognormal(250, 1.0, lo=1, hi=4096),
    tool_output_tokens=lognormal(100, 0.8, lo=0, hi=2048),
    tool_duration_s=lognormal(0.5, 0.8, hi=30),
    append_output=True,
)
#: Multi-threaded programs (tree-search / map-reduce agents): rounds of parallel
#: sub-agent threads whose results an orchestrator merges.
MULTI = FanoutConfig(rounds=2, subagents=4, subagent_turns=2, tool_duration_s=lognormal(0.5, 0.8))

VLLM = "fcfs"


def latency(
    agent: ReactConfig | FanoutConfig,
    rate: float,
    programs: int,
    seed: int,
    policies: dict[str, str],
    replicas: int = 1,
) -> float:
    """Mean program (session) latency in seconds at ``rate`` programs/s."""
    cfg = SynthConfig(
        seed=seed,
        sessions=programs,
        arrivals=ArrivalConfig(process="poisson", rate_per_s=rate),
        agents=(agent,),
    )
    wl = Workload(list(generate(cfg)), name=f"programs-{rate}")
    r = sim.run(
        wl, None, policies, gpu="a100-80gb", nodes=1,
        model="llama-3.1-8b", tp=1, replicas=replicas,
    )  # fmt: skip
    return float(r.summary["session_s"]["mean"])


def sweep(
    agent: ReactConfig | FanoutConfig,
    rates: list[float],
    programs: int,
    seed: int,
    systems: dict[str, dict[str, str]],
    replicas: int = 1,
) -> dict[str, list[float]]:
    """Mean program latency per system and rate."""
    return {
        name: [latency(agent, r, programs, seed, pol, replicas) for r in rates]
        for name, pol in systems.items()
    }


def gain(rates: list[float], lat: dict[str, list[float]], base: str, new: str) -> float:
    """Throughput at equal latency, ``new`` over ``base``: the latency target is twice
    ``base``'s latency at the lightest rate."""
    target = 2.0 * lat[base][0]
    b = rate_at(rates, lat[base], target)
    return rate_at(rates, lat[new], target) / b if b > 0 else float("inf")


def _rows(label: str, rates: list[float], lat: dict[str, list[float]]) -> list[dict[str, object]]:
    return [
        {"experiment": label, "programs/s": r, **{f"{n} (s)": lat[n][i] for n in lat}}
        for i, r in enumerate(rates)
    ]


def run(fast: bool, seed: int, out_dir: Path) -> PaperResult:
    """Autellix vs vLLM: program throughput at equal mean program latency."""
    programs = 150 if fast else 400
    one = [0.25, 1.0, 2.0] if fast else [0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
    four = [1.0, 4.0, 8.0] if fast else [1.0, 2.0, 3.0, 4.0, 6.0, 8.0]
    single = sweep(SINGLE, one, programs, seed, {"vLLM": {"batching": VLLM},
                                                 "PLAS": {"batching": "plas"}})  # fmt: skip
    multi = sweep(MULTI, one, programs, seed, {"vLLM": {"batching": VLLM},
                                               "ATLAS": {"batching": "atlas"}})  # fmt: skip
    engines = sweep(
        SINGLE, four, programs, seed,
        {
            "vLLM": {"batching": VLLM, "router": "round_robin"},
            "PLAS + RR": {"batching": "plas", "router": "round_robin"},
            "FCFS + Autellix LB": {"batching": VLLM, "router": "autellix_lb"},
            "Autellix": {"batching": "plas", "router": "autellix_lb"},
        },
        replicas=4,
    )  # fmt: skip
    g_single = gain(one, single, "vLLM", "PLAS")
    g_multi = gain(one, multi, "vLLM", "ATLAS")
    g_four = gain(four, engines, "vLLM", "Autellix")
    rows = [
        {"result": "single-threaded, 1 engine: PLAS / vLLM", "paper": "4x-15x",
         "agentsim": g_single},
        {"result": "multi-threaded, 1 engine: ATLAS / vLLM", "paper": "4x-15x",
         "agentsim": g_multi},
        {"result": "4 engines: Autellix (PLAS + LB) / vLLM (FCFS + RR)", "paper": "4x-15x",
         "agentsim": g_four},
        {"result": "4 engines, ablation: PLAS + RR / vLLM", "paper": "-",
         "agentsim": gain(four, engines, "vLLM", "PLAS + RR")},
        {"result": "4 engines, ablation: FCFS + LB / vLLM", "paper": "-",
         "agentsim": gain(four, engines, "vLLM", "FCFS + Autellix LB")},
    ]  # fmt: skip
    per_rate = (
        _rows("single, 1 engine", one, single)
        + _rows("multi, 1 engine", one, multi)
        + _rows("single, 4 engines", four, engines)
    )
    return PaperResult(
        name="autellix",
        title="Autellix: program-level attained service scheduling and locality-aware load balancing",
        citation="Luo et al., arXiv 2502.13965: 4x-15x program throughput at the same "
        "latency vs vLLM (abstract; Section 6)",
        setup={
            "engine": "vLLM-shaped replicas (agentsim), chunked prefill, LRU prefix cache",
            "GPU / model": "A100 80GB, Llama-3.1-8B TP=1 (the paper also serves 8B on A100s)",
            "vLLM": "--batching fcfs (--router round_robin across engines)",
            "Autellix": "--batching plas (atlas for multi-threaded programs), "
            "--router autellix_lb across engines",
            "single-threaded programs": "1-40 calls (heavy tail: most make 1-3), ~600-token "
            "task, outputs lognormal median 250 tokens sigma 1.0, each call's output and a "
            "~100-token tool answer appended to the next prompt, tools ~0.5 s (assumed)",
            "multi-threaded programs": "2 rounds x 4 parallel sub-agent threads x 2 turns, "
            "merged by an orchestrator (agentsim's fan-out generator, Magentic-One shape)",
            "arrivals": f"Poisson; {programs} programs per point; rates {one} programs/s "
            f"on one engine, {four} on four; seed {seed}",
            "metric": "mean program latency; throughput = highest rate within twice vLLM's "
            "light-load latency (interpolated)",
        },
        rows=rows,
        headlines=[
            Headline(
                "single-threaded throughput at equal latency, PLAS / vLLM", "4x-15x", g_single
            ),
            Headline("multi-threaded throughput at equal latency, ATLAS / vLLM", "4x-15x", g_multi),
            Headline("4-engine throughput at equal latency, Autellix / vLLM", "4x-15x", g_four),
        ],
        notes=NOTES,
        extra={"Mean program latency per rate": "\n".join(_md(per_rate))},
    )


def _md(rows: list[dict[str, object]]) -> list[str]:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [r.get(k) for k in keys]
        out.append(
            "| "
            + " | ".join(
                "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v) for v in cells
            )  # fmt: skip
            + " |"
        )
    return out


NOTES = """
Not reproduced yet: agentsim finds no throughput gain at equal latency (about 1x in
all three experiments), where the paper reports 4x-15x.  Why, as far as we can tell:
(1) below saturation a vLLM-shaped engine with an 80 GB KV cache admits every call at
once (continuous batching is processor sharing), so there is no queue for PLAS to
reorder: FCFS and PLAS give identical latencies up to the knee; (2) past it, agentsim's
PLAS and ATLAS only reorder admission and choose preemption victims, and without
Autellix's per-call quantum demotion and proactive preemption of running calls, a long
program's running calls keep their batch slots; worse, under memory pressure the
victims PLAS picks are long programs' calls, whose recompute costs capacity, so mean
program latency past the knee is a little higher than FCFS's (see the per-rate
table); (3) the programs are generated from the paper's description, and throughput at
equal latency is read off a coarse rate grid.  Next step: proactive preemption in the
engine (a batch-policy hook that lets a better-ranked waiting call preempt the worst
running one, at most one per step), then this run again.  The load balancer's effect
here is small and positive (about 4% lower mean latency on 4 engines), from keeping a
program's short calls where its context is cached.
"""

if __name__ == "__main__":
    main(run)
