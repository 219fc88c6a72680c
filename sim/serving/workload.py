"""The workload a measured serving run sent: inference-perf ``shared_prefix``.

What the load generator does (kubernetes-sigs/inference-perf,
``inference_perf/datagen/shared_prefix_datagen.py``; read to learn, not copied): it
pre-generates ``prefix_groups`` random system prompts of ``system_prompt_tokens``
tokens and, for each group, ``users_per_group`` random questions of
``question_tokens`` tokens, one per user; every prompt is its group's system prompt
followed by that user's question.  The ``groups x users`` prompts are shuffled once,
and request ``i`` sends prompt ``i mod (groups x users)``: questions are **fixed per
user and repeated**, so after the first round every prompt is an exact repeat whose
full KV blocks the server's prefix cache already holds.  Every request generates
exactly ``output_tokens`` tokens (``ignore_eos``).  Each stage sends
``rate x duration`` requests as a Poisson process (here: that many arrival times drawn
uniformly over the stage and sorted, i.e. a Poisson process conditioned on its count);
stages run back to back.

The measured prompts are about ``TEMPLATE_TOKENS`` longer than system + question
(the template around them); those tokens are put before the system prompt, shared by
every request.  ``questions="per-request"`` draws a fresh question for every request
instead (only the template and system prompt are shared), for the what-if.

Token ids are synthetic (distinct per group, user and position) and hashed into
16-token chain hashes (:func:`sim.workload.traces.hashing.chain_hashes`), so the engine's
prefix cache sees exactly the sharing the real prompts had.  Deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from sim.serving.runs import RunSpec
from sim.workload.calls import Call, Workload
from sim.workload.traces.hashing import chain_hashes

#: Prompt tokens besides system prompt and question (measured prompt lengths are about
#: system + question + 30, see the measurements' README).
TEMPLATE_TOKENS = 30

QuestionMode = Literal["per-user", "per-request"]


@dataclass(frozen=True, slots=True)
class ServingWorkload:
    """A run's requests as an agentsim workload, with the stage each request arrived in.

    Attributes:
        workload: one single-call session per request, in arrival order.
        stage_of: the load stage of each call (same order as ``workload.calls``).
        stage_bounds: (start, end) seconds of each stage.
    """

    workload: Workload
    stage_of: np.ndarray
    stage_bounds: tuple[tuple[float, float], ...]


def _tokens(kind: int, key: int, n: int) -> list[int]:
    """``n`` synthetic token ids unique to (kind < 8, key < 2**17), positions < 4096."""
    base = (kind << 29) | ((key & 0x1FFFF) << 12)
    return [base | (i & 0xFFF) for i in range(n)]


def build_workload(
    run: RunSpec,
    seed: int = 0,
    questions: QuestionMode = "per-user",
    block_size: int = 16,
    max_stage_s: float | None = None,
) -> ServingWorkload:
    """The requests of ``run``'s stages (see the module docstring).

    Args:
        seed: seeds the prompt order and the arrival times.
        questions: ``per-user`` (inference-perf: each user's question repeats) or
            ``per-request`` (a fresh question per request).
        block_size: tokens per prefix hash (the engine's KV block size).
        max_stage_s: shorten every stage to at most this many seconds (same rates;
            for fast searches), None: the measured durations.
    """
    rng = np.random.default_rng(seed)
    groups, users = run.prefix_groups, run.users_per_group
    n_prompts = groups * users
    order = rng.permutation(n_prompts)  # prompt sent by request i: order[i % n_prompts]
    template = _tokens(3, 0, TEMPLATE_TOKENS)
    system = [_tokens(1, g, run.system_prompt_tokens) for g in range(groups)]
    prompt_len = TEMPLATE_TOKENS + run.system_prompt_tokens + run.question_tokens
    per_user_hashes: dict[int, tuple[int, ...]] = {}

    def hashes_for(prompt: int, request: int) -> tuple[int, ...]:
        g, u = divmod(prompt, users)
        if questions == "per-user":
            h = per_user_hashes.get(prompt)
            if h is None:
                q = _tokens(2, prompt, run.question_tokens)
                h = per_user_hashes[prompt] = chain_hashes(template + system[g] + q, block_size)
            return h
        q = _tokens(4, request, run.question_tokens)
        return chain_hashes(template + system[g] + q, block_size)

    calls: list[Call] = []
    stage_of: list[int] = []
    bounds: list[tuple[float, float]] = []
    t0 = 0.0
    i = 0
    for s, st in enumerate(run.stages):
        dur = st.duration_s if max_stage_s is None else min(st.duration_s, max_stage_s)
        n = int(round(st.rate_rps * dur))
        times = np.sort(rng.uniform(0.0, dur, size=n)) + t0
        for t in times.tolist():
            prompt = int(order[i % n_prompts])
            calls.append(
                Call(
                    call_id=f"r{i}",
                    session_id=f"r{i}",
                    issue_time_s=float(t),
                    input_tokens=prompt_len,
                    output_tokens=run.output_tokens,
                    prefix_hashes=hashes_for(prompt, i),
                    block_size=block_size,
                )
            )
            stage_of.append(s)
            i += 1
        bounds.append((t0, t0 + dur))
        t0 += dur
    wl = Workload(
        calls=calls,
        name=f"run {run.run_id} ({run.workload})",
        source=f"{run.path}:{run.line}",
        meta={"questions": questions, "seed": seed},
    )
    return ServingWorkload(wl, np.asarray(stage_of, dtype=np.int64), tuple(bounds))
