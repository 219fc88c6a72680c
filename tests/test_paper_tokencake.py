"""Tokencake's reproduction at CI scale: Tokencake (space + time schedulers) lowers the
mean end-to-end latency of both multi-agent applications against vLLM (fcfs + lru),
with the mechanisms the paper describes (fewer preemptions, more KV found in HBM)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from papers import tokencake  # noqa: E402


def test_tokencake_lowers_e2e_latency_against_vllm(tmp_path: Path) -> None:
    res = tokencake.run(fast=True, seed=0, out_dir=tmp_path)
    assert {r["application"] for r in res.rows} == {"Code-Writer", "Deep-Research"}
    for row in res.rows:
        assert row["Tokencake E2E (s)"] < row["vLLM E2E (s)"], row  # type: ignore[operator]
        base_p, tc_p = (int(x) for x in str(row["preemptions vLLM / Tokencake"]).split(" / "))
        assert tc_p < base_p, row  # critical agents are not preempted
        base_h, tc_h = (float(x) for x in str(row["prefix hit vLLM / Tokencake"]).split(" / "))
        assert tc_h > base_h, row  # uploaded contexts are found in HBM
    assert all(h.same_direction for h in res.headlines)
