"""benchmarks/memory_latency.py: the chain it times visits every cache line once per
cycle, one load per line (no timing is asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import load_file

probe = load_file(
    "bench_memory_latency", Path(__file__).resolve().parents[1] / "benchmarks" / "memory_latency.py"
)


@settings(max_examples=50, deadline=None)
@given(lines=st.integers(2, 3000), seed=st.integers(0, 2**32 - 1))
def test_chain_is_one_cycle_through_every_line(lines: int, seed: int) -> None:
    buf = probe.chain(lines * 64 + 63, seed)  # a partial last line is dropped
    assert len(buf) == lines * 8
    seen, i = set(), 0
    for _ in range(lines):
        assert i % 8 == 0 and i not in seen  # slot 0 of a line not visited yet
        seen.add(i)
        i = int(buf[i])
    assert i == 0 and len(seen) == lines  # back at the start after every line
    assert not buf.reshape(lines, 8)[:, 1:].any()  # only slot 0 of a line is used


def test_chain_order_depends_on_the_seed() -> None:
    assert (probe.chain(64 * 64, 1) != probe.chain(64 * 64, 2)).any()


def test_a_chain_needs_two_lines() -> None:
    with pytest.raises(ValueError, match="at least two 64-byte lines"):
        probe.chain(127)


def test_sizes_grow_by_four_and_end_at_the_maximum() -> None:
    assert probe.sizes_kib(1) == [32, 128, 512, 1024]
    assert probe.sizes_kib(1024)[-3:] == [131072, 524288, 1048576]
