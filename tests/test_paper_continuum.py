"""Continuum's reproduction at CI scale: Continuum (ttl_pin + program_fcfs) beats vLLM
(fcfs + lru) on average JCT on both agent workloads, and its pieces behave as the
paper describes."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from papers import continuum  # noqa: E402


def test_continuum_lowers_jct_against_vllm(tmp_path: Path) -> None:
    res = continuum.run(fast=True, seed=0, out_dir=tmp_path)
    assert {r["workload"] for r in res.rows} == {"SWE-bench", "BFCL"}
    for row in res.rows:
        assert row["agentsim speedup (x)"] > 1.0, row
    assert all(h.same_direction for h in res.headlines)
