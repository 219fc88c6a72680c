"""This host's memory latency by working-set size: what a cache miss costs here.

The replica-scaling series (``benchmarks/run.py --only scale-16x70b-kv_aware,...``)
runs about the same instructions a call at 16 and at 256 replicas but misses a core's
own cache more often at 256 (``--cachegrind``); how much longer a call then takes
depends on what a miss costs on the machine.  This probe measures it: a dependent
chain of loads, one per cache line, in a random cyclic order over a buffer of each
size, so that no load can start before the previous one ends and no prefetcher can
guess the next line.  Each load is a read from a Python ``memoryview``, so every figure
includes the interpreter's fixed cost per step; ``above_smallest_ns`` takes the
smallest size's figure (a buffer that fits the L1 cache) out, leaving the memory's.

Run: ``python benchmarks/memory_latency.py [--max-mib 1024] [--steps 1000000]
[--out results/bench/memory_latency.json]`` (about 10 s; the buffer of the largest size
is held once, 1 GiB by default).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

from sim.common.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
LINE = 64  # bytes of a cache line
WORDS = LINE // 8  # int64 slots per line: the chain visits slot 0 of each line


def chain(nbytes: int, seed: int = 0) -> np.ndarray:
    """An int64 buffer of ``nbytes`` (rounded down to whole lines) whose slot 0 of each
    line holds the index of the next line's slot 0, in one random cycle through every
    line: following it from any line visits each line once before coming back."""
    lines = nbytes // LINE
    if lines < 2:
        raise ValueError(f"a chain needs at least two {LINE}-byte lines, got {nbytes} bytes")
    order = np.random.default_rng(seed).permutation(lines) * WORDS
    buf = np.zeros(lines * WORDS, dtype=np.int64)
    buf[order] = np.roll(order, -1)
    return buf


def ns_per_load(buf: np.ndarray, steps: int) -> float:
    """Nanoseconds per step of following ``buf``'s chain ``steps`` times, after one
    pass (at most ``steps`` loads) to bring the buffer in."""
    mem = memoryview(buf)
    i = 0
    for _ in range(min(len(buf) // WORDS, steps)):
        i = mem[i]
    t0 = time.perf_counter()
    for _ in range(steps):
        i = mem[i]
    return (time.perf_counter() - t0) / steps * 1e9


def sizes_kib(max_mib: int) -> list[int]:
    """32 KiB, then x4 up to ``max_mib`` MiB (the last size ``max_mib`` itself)."""
    out, kib = [], 32
    while kib < max_mib * 1024:
        out.append(kib)
        kib *= 4
    return [*out, max_mib * 1024]


def host_caches() -> dict[str, str]:
    """The CPU's cache sizes as Linux reports them (``{}`` elsewhere)."""
    out = {}
    for d in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind = (d / "level").read_text().strip(), (d / "type").read_text().strip()
            out[f"L{level} {kind}"] = (d / "size").read_text().strip()
        except OSError:
            continue
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-mib", type=int, default=1024, help="largest buffer, MiB (default 1024)")
    ap.add_argument("--steps", type=int, default=1_000_000, help="timed loads per size")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "memory_latency.json")
    args = ap.parse_args()
    if args.max_mib < 1 or args.steps < 1:
        ap.error("--max-mib and --steps must be >= 1")
    rows = []
    base: float | None = None  # the smallest buffer's ns per load, unrounded
    print("buffer KiB | ns/load | above smallest")
    for kib in sizes_kib(args.max_mib):
        ns = ns_per_load(chain(kib * 1024), args.steps)
        base = ns if base is None else base
        above = ns - base
        rows.append({"kib": kib, "ns_per_load": round(ns, 1), "above_smallest_ns": round(above, 1)})
        print(f"{kib:10d} | {ns:7.1f} | {above:7.1f}", flush=True)
    host = {"machine": platform.machine(), "processor": platform.processor(), **host_caches()}
    atomic_write_json(args.out, {"time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                 "python": sys.version.split()[0], "host": host,
                                 "steps": args.steps, "rows": rows})  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
