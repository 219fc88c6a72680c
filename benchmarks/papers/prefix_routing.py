"""Prefix-cache-aware routing (llm-d's prefix scorer, SGLang's cache-aware router) vs round robin.

Two published results, each rebuilt on its own setup:

- **llm-d** ("KV-Cache Wins You Can See", llm-d blog, 2025): 8 vLLM pods of Qwen3-32B on
  16 H100s, a workload of 150 enterprise customers, each with a 6,000-token system
  prompt shared by its users, plus a 1,200-token question per request, under a rising
  request rate.  Prefix-cache-aware scheduling gave about 2x the throughput of a
  load-only baseline and a TTFT p90 lower by well over an order of magnitude (the post
  quotes 57x faster responses; a talk on the same run, 92 s -> 0.54 s p90 TTFT).
  agentsim: ``llmd_scorer`` (prefix 3 / KV 2 / queue 2) vs ``round_robin``.
- **SGLang v0.4** (LMSYS blog, Dec 2024): the cache-aware load balancer gave up to 1.9x
  the throughput of round robin with a 3.8x higher cache hit rate over data-parallel
  workers.  The post's exact workload is not given in what we could read; we use
  SGLang's own shared-prefix benchmark (``bench_serving --dataset-name
  generated-shared-prefix``: groups of prompts sharing a long system prompt) with the
  group count raised until the prefixes exceed one worker's KV cache, as in the
  multi-tenant case the router targets.  agentsim: ``prefix_affinity`` (SGLang router
  defaults) vs ``round_robin``, Llama-3.1-8B on 8 single-A100 workers, all requests at
  once (throughput mode).

Usage: python benchmarks/papers/prefix_routing.py [--fast] [--seed N] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

import sim  # noqa: E402
from papers.report import Headline, PaperResult, main  # noqa: E402
from sim.workload.calls import Call, Workload  # noqa: E402
from sim.workload.traces.hashing import chain_hashes  # noqa: E402

BLOCK = 16  # tokens per chain hash (the engine's block size)


def shared_prefix_workload(
    groups: int,
    per_group: int,
    system_tokens: int,
    question_tokens: int,
    output_tokens: int,
    rate: float,
    seed: int,
    name: str,
) -> Workload:
    """``groups x per_group`` single-call requests: each prompt is its group's system
    prompt followed by its own question.  ``rate`` > 0: Poisson arrivals at that many
    requests/s in random group order; 0: every request at t = 0 (throughput mode)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(groups * per_group)
    gaps = rng.exponential(1.0 / rate, len(order)) if rate > 0 else np.zeros(len(order))
    times = np.cumsum(gaps) - gaps[0]
    calls = []
    for k, (i, t) in enumerate(zip(order, times, strict=True)):
        g = int(i) // per_group
        system = [1 + g * system_tokens + j for j in range(system_tokens)]
        question = [(1 << 30) + int(i) * question_tokens + j for j in range(question_tokens)]
        calls.append(
            Call(
                call_id=f"r{k}",
                session_id=f"r{k}",
                issue_time_s=float(t),
                input_tokens=system_tokens + question_tokens,
                output_tokens=output_tokens,
                prefix_hashes=chain_hashes(system + question, BLOCK),
                block_size=BLOCK,
            )
        )
    return Workload(calls, name=name)


def measure(wl: Workload, router: str, **cluster: object) -> dict[str, float]:
    """TTFT (s), output throughput (tokens/s from first arrival to last finish) and
    prefix hit rate of ``wl`` under ``router``."""
    r = sim.run(wl, None, router, **cluster)
    c = r.calls
    done = c[c["status"] == "completed"]
    span = float(done["finish_s"].max() - c["issue_s"].min())
    s = r.summary
    return {
        "ttft_mean": float(s["ttft_s"]["mean"]),
        "ttft_p90": float(s["ttft_s"]["p90"]),
        "tput": float(done["output_tokens"].sum()) / span,
        "hit": float(s["prefix_hit_rate"]),
        "completed": float(len(done)),
    }


OUT = 128  # output tokens per llm-d request (assumed; the post does not give it)
LLMD_CLUSTER = {"gpu": "h100-80gb", "nodes": 2, "model": "qwen3-32b", "tp": 2, "replicas": 8}
SGL_CLUSTER = {"gpu": "a100-80gb", "nodes": 1, "model": "llama-3.1-8b", "tp": 1, "replicas": 8}


def llmd(fast: bool, seed: int) -> tuple[list[dict[str, object]], float, float, float]:
    """The llm-d ramp: one row per request rate; then, as the blog reads its ramp, the
    ratio of the two routers' best output throughput over the ramp, and the TTFT p90
    ratio (round robin / llm-d) at ``rate*``, the highest rate llm-d sustains (serves
    at least 95% of the offered output tokens/s), with ``rate*`` itself."""
    customers = 150
    rates = (20.0, 40.0) if fast else (10.0, 20.0, 40.0, 60.0, 80.0)
    duration = 30.0 if fast else 120.0
    rows: list[dict[str, object]] = []
    best_rr = best_pa = 0.0
    star = (float("nan"), float("nan"))
    for rate in rates:
        n = int(rate * duration)
        per_group = max(1, -(-n // customers))
        wl = shared_prefix_workload(customers, per_group, 6000, 1200, OUT, rate, seed, "llmd")
        wl = Workload(wl.calls[:n], name=wl.name)
        rr = measure(wl, "round_robin", **LLMD_CLUSTER)
        pa = measure(wl, "llmd_scorer", **LLMD_CLUSTER)
        best_rr, best_pa = max(best_rr, rr["tput"]), max(best_pa, pa["tput"])
        if pa["tput"] >= 0.95 * rate * OUT:
            star = (rr["ttft_p90"] / pa["ttft_p90"], rate)
        rows.append(
            {
                "req/s": rate,
                "RR TTFT p90 (s)": rr["ttft_p90"],
                "llm-d TTFT p90 (s)": pa["ttft_p90"],
                "RR out tok/s": rr["tput"],
                "llm-d out tok/s": pa["tput"],
                "RR hit rate": rr["hit"],
                "llm-d hit rate": pa["hit"],
            }
        )
    return rows, best_pa / best_rr, star[0], star[1]


def sglang(fast: bool, seed: int) -> tuple[list[dict[str, object]], float, float]:
    """The SGLang run: one row per router; throughput and hit-rate ratios."""
    groups, per_group = (64, 8) if fast else (256, 16)
    wl = shared_prefix_workload(groups, per_group, 4096, 128, 256, 0.0, seed, "gsp")
    rr = measure(wl, "round_robin", **SGL_CLUSTER)
    pa = measure(wl, "prefix_affinity", **SGL_CLUSTER)
    rows: list[dict[str, object]] = [
        {
            "router": name,
            "out tok/s": m["tput"],
            "TTFT mean (s)": m["ttft_mean"],
            "prefix hit rate": m["hit"],
        }
        for name, m in (("round_robin", rr), ("prefix_affinity (SGLang)", pa))
    ]
    return rows, pa["tput"] / rr["tput"], pa["hit"] / max(rr["hit"], 1e-12)


def run(fast: bool, seed: int, out_dir: Path) -> PaperResult:
    """Prefix-aware routing (llm-d, SGLang) vs round robin on shared-prefix workloads."""
    l_rows, l_tput, l_ttft, rate_star = llmd(fast, seed)
    s_rows, s_tput, s_hit = sglang(fast, seed)
    rows = [
        {
            "result": "llm-d best throughput over the ramp, x over load-only",
            "paper": "~2x",
            "agentsim": l_tput,
        },
        {
            "result": f"llm-d TTFT p90, baseline / llm-d, at {rate_star:g} req/s",
            "paper": "57x-170x",
            "agentsim": l_ttft,
        },
        {"result": "SGLang throughput, x over RR", "paper": "up to 1.9x", "agentsim": s_tput},
        {"result": "SGLang cache hit rate, x over RR", "paper": "3.8x", "agentsim": s_hit},
    ]
    setup = {
        "llm-d cluster": "2 x DGX H100 (16 GPUs), 8 x Qwen3-32B TP2, vLLM limits as agentsim's",
        "llm-d workload": "150 customers x 6,000-token system prompt + 1,200-token question, "
        "128 output tokens (assumed), Poisson arrivals at 10-80 req/s, 120 s per rate",
        "llm-d routers": "llmd_scorer (prefix 3, KV 2, queue 2; precise prefix scorer) vs "
        "round_robin (the blog's baseline balances load only)",
        "SGLang cluster": "1 x DGX A100 80GB, 8 x Llama-3.1-8B TP1 (data parallel)",
        "SGLang workload": "generated shared prefix: 256 groups x 16 prompts, 4,096-token system "
        "prompt, 128-token question, 256 output tokens, all at t = 0 (group count and "
        "system prompt assumed, so prefixes exceed one worker's KV cache)",
        "SGLang routers": "prefix_affinity (cache_threshold 0.5, balance 32 / 1.1) vs round_robin",
        "metric": "output tokens/s from first arrival to last finish; TTFT p90; prefix hit rate",
    }
    notes = (
        "Both effects have the papers' direction and mechanism: round robin spreads each "
        "shared prefix over every worker, so each worker recomputes it and the cache holds "
        "many copies; prefix-aware routing prefills each prefix once and keeps it resident. "
        "The llm-d TTFT ratio depends mostly on where round robin saturates: past that "
        "rate its queue grows for as long as the run lasts, so the ratio grows with the run "
        "length; it is read at the highest rate llm-d still sustains. Past that rate llm-d "
        "overloads too, its queue scorer then outweighs the prefix scorer, prefixes spread "
        "and its hit rate falls (see the per-rate table). The SGLang "
        "hit-rate ratio depends on how far the prefixes exceed one worker's cache: with "
        "bench_serving's default 64 groups of 2,048 tokens every worker holds every prefix "
        "after one pass, and round robin then loses only the first miss per worker."
    )
    return PaperResult(
        name="prefix_routing",
        title="Prefix-cache-aware routing (llm-d, SGLang) vs round robin",
        citation="llm-d blog 'KV-Cache Wins You Can See' (2025); LMSYS blog 'SGLang v0.4' (Dec 2024)",
        setup=setup,
        rows=rows,
        headlines=[
            Headline("llm-d throughput over load-only routing", "~2x", l_tput),
            Headline(f"llm-d TTFT p90 reduction at {rate_star:g} req/s", "57x", l_ttft),
            Headline("SGLang cache-aware throughput over RR", "up to 1.9x", s_tput),
            Headline("SGLang cache hit rate over RR", "3.8x", s_hit),
        ],
        notes=notes,
        extra={
            "llm-d run per rate": "\n".join(_md(l_rows)),
            "SGLang run": "\n".join(_md(s_rows)),
        },
    )


def _md(rows: list[dict[str, object]]) -> list[str]:
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()]
        out.append("| " + " | ".join(cells) + " |")
    return out


if __name__ == "__main__":
    main(run)
