"""KVFlow's reproduction at CI scale: KVFlow (steps-to-execution eviction + overlapped
prefetch) finishes workflows sooner than the HiCache-like LRU hierarchy, for one
workflow with large prompts and for many concurrent workflows."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from papers import kvflow  # noqa: E402


def test_kvflow_speeds_up_workflows_against_hicache(tmp_path: Path) -> None:
    res = kvflow.run(fast=True, seed=0, out_dir=tmp_path)
    assert {r["experiment"] for r in res.rows} == {"single workflow", "concurrent workflows"}
    for row in res.rows:
        assert row["agentsim speedup (x)"] > 1.02, row
    assert all(h.same_direction for h in res.headlines)


def test_the_generated_workflows_have_the_papers_shape() -> None:
    wl = kvflow.workflows(3, 4, 2, 1024, 8, seed=0)
    sessions = wl.sessions()
    assert len(sessions) == 3 and all(len(c) == 8 for c in sessions.values())
    for calls in sessions.values():
        # a chain: each step waits for the previous one; an agent's fixed prompt is
        # the same chain hashes at every invocation, distinct from the other agents'
        assert all(c.parents == (p.call_id,) for p, c in zip(calls, calls[1:], strict=False))
        assert calls[0].prefix_hashes == calls[4].prefix_hashes
        assert len({c.prefix_hashes for c in calls}) == 4
    roots = {s: c[0].prefix_hashes for s, c in sessions.items()}
    assert len(set(roots.values())) == 3  # every workflow has its own agents
