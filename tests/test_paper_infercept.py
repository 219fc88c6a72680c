"""InferCept's reproduction at CI scale: the min-waste choice beats vLLM's
discard-and-recompute at every load, as the paper's throughput/latency curves do."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from papers import infercept  # noqa: E402


def test_infercept_lowers_latency_against_discard(tmp_path: Path) -> None:
    res = infercept.run(fast=True, seed=0, out_dir=tmp_path)
    points = [r for r in res.rows if isinstance(r["sessions/s"], float)]
    assert len(points) == 2
    for row in points:
        assert row["InferCept JCT (s)"] < row["vLLM (discard) JCT (s)"], row
    assert res.headlines[1].same_direction


def test_rate_at_interpolates_the_latency_target() -> None:
    assert infercept.rate_at([1.0, 2.0, 4.0], [10.0, 20.0, 40.0], 30.0) == 3.0
    assert infercept.rate_at([1.0, 2.0], [10.0, 20.0], 50.0) == 2.0
    assert infercept.rate_at([1.0, 2.0], [10.0, 20.0], 5.0) == 0.0
