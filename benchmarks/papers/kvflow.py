"""KVFlow (arXiv 2507.07400): workflow-aware prefix-cache eviction + overlapped prefetch vs
SGLang HiCache (LRU over a GPU + CPU hierarchy), end-to-end workflow latency.

The paper serves synthetic multi-agent workflows (agents with fixed, random-token
prompts, invoked step after step) on SGLang with its hierarchical radix cache, with
GPU memory too small for every agent's prompt, and reports the speedup of KVFlow over
HiCache for one workflow with large prompts (up to 1.83x) and for many concurrent
workflows (up to 2.19x).  Its workflows are generated from that description by
:func:`workflows` below; every assumption is in the setup table.

Usage: python benchmarks/papers/kvflow.py [--fast] [--seed N] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sim  # noqa: E402
from papers.report import Headline, PaperResult, main  # noqa: E402
from sim.workload.calls import Call, Workload  # noqa: E402

#: SGLang with HiCache: LRU eviction, every computed prompt block also written to host
#: memory, a prefix found only in host memory loaded back before the step that needs it.
HICACHE = {"batching": "fcfs", "retention": "lru"}
KVFLOW = {"batching": "fcfs", "retention": "kvflow"}
#: KVFlow's eviction alone (the ablation column).
KVFLOW_NO_PREFETCH = {"batching": "fcfs", "retention": "kvflow:prefetch_steps=0"}

BLOCK = 16  # tokens per chain hash of the generated prompts
MODEL, GPU = "llama-3.1-8b", "h100-80gb"
#: Host DRAM of the CPU tier (GiB per GPU): holds every agent's prompt.
HOST_GIB = 320.0


def workflows(
    n: int,
    agents: int,
    rounds: int,
    prompt_tokens: int,
    output_tokens: int,
    seed: int,
    input_tokens: int = 256,
    gap_s: float = 0.0,
) -> Workload:
    """``n`` concurrent sequential workflows, each of ``agents`` agents invoked in a fixed
    order for ``rounds`` rounds (``agents x rounds`` steps).  An agent's call is its fixed
    prompt of ``prompt_tokens`` (chain-hashed: shared by all its invocations) plus
    ``input_tokens`` of fresh input (the previous agent's output, never cached), and
    generates ``output_tokens``; the next step is issued ``gap_s`` after it ends.
    Workflows start within the first second (seeded) and have their own agents."""
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.uniform(0.0, 1.0, n)) if n > 1 else np.zeros(1)
    blocks = prompt_tokens // BLOCK
    calls: list[Call] = []
    for w in range(n):
        prev: tuple[str, ...] = ()
        for step in range(agents * rounds):
            a = step % agents
            base = ((w * agents + a) + 1) << 24  # distinct hashes per (workflow, agent)
            cid = f"w{w}-s{step}"
            calls.append(
                Call(
                    call_id=cid, session_id=f"w{w}", parents=prev,
                    issue_time_s=float(starts[w]), gap_s=gap_s if prev else 0.0,
                    input_tokens=prompt_tokens + input_tokens, output_tokens=output_tokens,
                    prefix_hashes=tuple(base + i for i in range(blocks)), block_size=BLOCK,
                )
            )  # fmt: skip
            prev = (cid,)
    calls.sort(key=lambda c: (c.issue_time_s, c.session_id))
    order = {c.call_id: i for i, c in enumerate(calls)}
    calls.sort(key=lambda c: (int(c.call_id.split("-s")[1]), order[c.call_id]))
    return Workload(calls, name=f"kvflow-{n}x{agents}x{rounds}-{prompt_tokens}")


def latency(
    wl: Workload, policies: dict[str, str], blocks: int, warm_from: int
) -> tuple[float, float]:
    """(makespan, warm time) in seconds on one replica with ``blocks`` KV blocks of HBM
    (0: the engine's memory plan) and a ``HOST_GIB`` CPU tier.  Warm time: from the issue
    of the first call of step ``warm_from`` (any workflow) to the last call's end."""
    r = sim.run(
        wl, None, policies, gpu=GPU, nodes=1, model=MODEL, tp=1, replicas=1,
        num_gpu_blocks_override=blocks, cpu_offload_gib=HOST_GIB, block_size=BLOCK,
    )  # fmt: skip
    calls = r.calls
    step = calls["call_id"].str.split("-s").str[1].astype(int)
    warm = float(calls["finish_s"].max() - calls.loc[step >= warm_from, "issue_s"].min())
    return float(r.summary["makespan_s"]), warm


#: Single workflow: agents, rounds, output tokens; prompt lengths (full, --fast).
SINGLE = (8, 4, 32)
SINGLE_PROMPTS = ((2048, 4096, 8192, 16384, 32768), (8192,))
#: HBM of the single-workflow runs: half the agents' prompts plus this many blocks (the
#: running call's fresh input and output).
SLACK_BLOCKS = 64
#: Concurrent workflows: agents, rounds, prompt and output tokens; counts (full, --fast).
MULTI = (4, 4, 4096, 32)
MULTI_COUNTS = ((16, 32, 48, 64, 96, 128), (32,))


def _row(
    kind: str, x: str, wl: Workload, blocks: int, warm_from: int, fast: bool
) -> dict[str, object]:
    base = latency(wl, HICACHE, blocks, warm_from)
    flow = latency(wl, KVFLOW, blocks, warm_from)
    row: dict[str, object] = {
        "experiment": kind, "x": x,
        "HiCache-like LRU (s)": base[0], "KVFlow (s)": flow[0],
        "agentsim speedup (x)": base[0] / flow[0],
        "warm rounds: LRU / KVFlow (s)": f"{base[1]:.2f} / {flow[1]:.2f}",
        "warm speedup (x)": base[1] / flow[1],
    }  # fmt: skip
    if not fast:
        row["KVFlow eviction only (s)"] = latency(wl, KVFLOW_NO_PREFETCH, blocks, warm_from)[0]
    return row


def run(fast: bool, seed: int, out_dir: Path) -> PaperResult:
    """KVFlow vs a HiCache-like LRU hierarchy: one workflow with large prompts, and many
    concurrent workflows."""
    agents, rounds, out = SINGLE
    rows = []
    for p in SINGLE_PROMPTS[fast]:
        wl = workflows(1, agents, rounds, p, out, seed)
        blocks = (p // BLOCK) * agents // 2 + SLACK_BLOCKS
        rows.append(_row("single workflow", f"prompt {p // 1024}k", wl, blocks, agents, fast))
    n_single = len(rows)
    m_agents, m_rounds, m_prompt, m_out = MULTI
    for n in MULTI_COUNTS[fast]:
        wl = workflows(n, m_agents, m_rounds, m_prompt, m_out, seed)
        rows.append(_row("concurrent workflows", f"{n} workflows", wl, 0, m_agents, fast))

    def best(rows: list[dict[str, object]], key: str) -> float:
        return max(float(r[key]) for r in rows)  # type: ignore[arg-type]

    return PaperResult(
        name="kvflow",
        title="KVFlow: workflow-aware prefix caching for multi-agent workflows",
        citation="Pan et al., NeurIPS 2025, arXiv 2507.07400: end-to-end workflow latency, "
        "KVFlow vs SGLang with HiCache (hierarchical radix cache)",
        setup={
            "engine": "SGLang-shaped replica (agentsim), one instance, FCFS, chunked "
            "prefill of 4096 tokens",
            "model / GPU": f"{MODEL} on one {GPU} (the paper's models are Llama-3.1-8B and "
            "Qwen2.5-32B; agentsim has no Qwen2.5-32B preset; the GPU is assumed)",
            "baseline (SGLang HiCache)": f"--retention lru --cpu-offload-gib {HOST_GIB:g} "
            "(every computed prompt block written through to host DRAM; a prefix found "
            "only there is loaded over PCIe, ~25 GB/s, before the step that needs it)",
            "KVFlow": "--retention kvflow (eviction by steps-to-execution on the session "
            "DAG, uncapped; prefetch of the next step's prompt overlapped with compute), "
            "same tiers",
            "single workflow": f"one sequential workflow of {agents} agents x {rounds} "
            f"rounds, each call = the agent's fixed prompt + 256 fresh tokens, {out} output "
            f"tokens, no gap between steps; HBM holds half the agents' prompts "
            f"(+{SLACK_BLOCKS} blocks)",
            "concurrent workflows": f"N workflows, each {m_agents} own agents x {m_rounds} "
            f"rounds, {m_prompt}-token prompts + 256 fresh tokens, {m_out} output tokens, "
            "started within 1 s; HBM = the engine's memory plan (90% of 80 GB)",
            "workload": "generated (random-token prompts in the paper; here distinct chain "
            f"hashes per agent, {BLOCK}-token blocks); seed {seed}",
            "metric": "makespan: first call issued to last call done (s); warm rounds: "
            "from the first call of round 2 on (round 1 prefills every prompt cold in "
            "both systems)",
        },
        rows=rows,
        headlines=[
            Headline(
                "speedup over HiCache, single workflow, best prompt size (makespan)",
                "1.83x",
                best(rows[:n_single], "agentsim speedup (x)"),
            ),
            Headline("same, warm rounds only", "1.83x", best(rows[:n_single], "warm speedup (x)")),
            Headline(
                "speedup over HiCache, concurrent workflows, best count (makespan)",
                "2.19x",
                best(rows[n_single:], "agentsim speedup (x)"),
            ),
            Headline("same, warm rounds only", "2.19x", best(rows[n_single:], "warm speedup (x)")),
        ],  # fmt: skip
        notes=NOTES,
    )


NOTES = """
Directions match the paper in every point where HBM is contended, and the effect has the
paper's shape: it grows with the prompt size for one workflow, and for concurrent
workflows it is zero while every agent's prompt fits in HBM (16 workflows), peaks when
the prompts just overflow it (32 workflows: 1.40x makespan, 2.18x over the warm rounds),
and falls as the running calls take more of HBM, to none at 128 workflows, where they
take all of it and nothing stays cached to rank or to prefetch into (at 96 the
eviction rank no longer helps and the prefetch alone gains 1.26x).  Where it comes from in agentsim (the
"eviction only" column): ranking by steps-to-execution keeps the prompts of the agents
that run soon, and the overlapped prefetch takes the host-to-GPU load of the next
agent's prompt off the critical path; for one workflow most of the gain is the
prefetch (each warm step of the baseline loads its prompt from host memory, 4 GiB at
32k tokens, ~0.17 s at PCIe Gen4's achieved rate, added to that step).

Why the ratios are lower than the paper's 1.83x / 2.19x.  (1) The makespan includes
round 1, in which both systems prefill every prompt cold; over the warm rounds the
single-workflow ratio is 1.61x at 32k-token prompts.  The paper's exact rounds, prompt
and output lengths, GPU and CPU-GPU bandwidth could not be read from the sources
available here (the abstract, the authors' code and the reviews: Llama-3.1-8B and
Qwen2.5-32B, random-token prompts, single workflows with large prompts and limited GPU
memory, many concurrent workflows), so they are assumed (setup table).  (2) agentsim
prices a host load at the link's achieved rate (~25 GB/s) with no per-page or per-layer
overhead; slower loads make every baseline miss, and so KVFlow's gain, larger.  (3) A
prefetch still copying when its call is admitted makes that step wait for the rest of
it, at most the copy's own time; KVFlow instead keeps such a request out of the batch
until its load ends, which agentsim does not model.  (4) agentsim does not model
SGLang's radix-tree node splitting or its scheduler overheads.
"""

if __name__ == "__main__":
    main(run)
