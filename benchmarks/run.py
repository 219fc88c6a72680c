"""agentsim performance benchmark (``make bench``).

Runs a fixed set of scenarios, each as a fresh ``agentsim run`` process (so the wall
time includes interpreter start-up, imports, trace loading and writing results), and
prints a table of wall time, peak RSS, calls/s, simulated seconds per wall second and
events/s.  The table is written to ``results/bench/latest.json`` so runs can be
compared over time.

The fleet scenario (issue 19) is 1,000,000 LLM calls (50,000 ReAct sessions x 20
calls, contexts growing to ~30k tokens, tool gaps) on 1,024 A100s: 128 DGX nodes, 256
Llama-3.1-70B TP4 replicas (the Llama-3-70B architecture with the context the agents
need), kv_aware routing.  The replica-scaling series runs the same synthetic agents on
16, 64 and 256 replicas at the same load per replica (sessions and arrival rate scaled
with the replicas); its ``loop_us_per_call`` column is the event-loop time per call.
The ``native`` column says whether the compiled event loop ran (``make native``;
``AGENTSIM_NATIVE=0 python benchmarks/run.py ...`` times the same code as Python).

``--cachegrind`` runs the chosen synthetic scenarios under valgrind's cachegrind
instead of timing them, with a fixed simulated cache (``CACHE``), and reports per call:
instructions, L1 data misses, misses of the last level (a core's 2 MiB L2) and the
functions with the most of those.  Each scenario's start-up (imports, building the
cluster, writing the outputs) is taken out by running it with one session as well.
Counts do not depend on the machine's load, so they show what grows with the cluster
when wall times cannot: ``--only scale-16x70b-kv_aware,scale-64x70b-kv_aware
--cachegrind`` (about 15 minutes) writes results/bench/cachegrind.json.

Usage: python benchmarks/run.py [--only NAME[,NAME...]] [--quick] [--checkout DIR]
[--out FILE] [--cachegrind]  (``--checkout``: run another checkout's code with its own
.venv, for before/after tables; its rows go to ``--out``, default
results/bench/latest.json, or cachegrind.json beside it)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

from sim.common.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
AZURE_CONV = DATA / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
MOONCAKE = DATA / "mooncake" / "conversation_trace.jsonl"
SYNTH = ROOT / "benchmarks" / "scenarios" / "synthetic_agents.toml"


@dataclass
class Scenario:
    name: str
    args: list[str]
    target: str = ""
    needs: list[Path] = field(default_factory=list)
    synth_sessions: int = 0  # > 0: run the synthetic workload scaled to this many sessions
    synth_rate: float = 0.0  # > 0: its session arrival rate (per second)


def scenarios(quick: bool) -> list[Scenario]:
    azure = ["--trace", str(AZURE_CONV), "--trace-format", "azure", "--gpu", "a100-80gb", "--nodes", "1",
             "--model", "llama-2-70b", "--tp", "2", "--replicas", "4", "--max-num-seqs", "128"]  # fmt: skip
    mooncake = ["--trace", str(MOONCAKE), "--trace-format", "mooncake", "--nodes", "8",
                "--model", "llama-3.1-70b", "--tp", "4", "--replicas", "16"]  # fmt: skip
    synth = ["--trace-format", "synth", "--nodes", "8",
             "--model", "llama-3.1-70b", "--tp", "4", "--replicas", "16", "--policy", "kv_aware"]  # fmt: skip
    out = [
        Scenario("default", [], "demo trace"),
        Scenario(
            "azure-conv-4x70b-rr",
            azure + ["--policy", "round_robin"],
            "< 3 s, < 1 GiB",
            [AZURE_CONV],
        ),
        Scenario(
            "azure-conv-4x70b-rr-half-load",
            azure + ["--policy", "round_robin", "--load-scale", "0.5"],
            "",
            [AZURE_CONV],
        ),
        Scenario(
            "mooncake-16x70b-kv_aware", mooncake + ["--policy", "kv_aware"], "< 10 s", [MOONCAKE]
        ),
    ]
    if not quick:
        for pol in (
            "round_robin",
            "least_loaded",
            "power_of_two",
            "session_affinity",
            "prefix_affinity",
            "llmd_scorer",
        ):
            out.append(
                Scenario(f"mooncake-16x70b-{pol}", mooncake + ["--policy", pol], "", [MOONCAKE])
            )
        for mult in (1, 4, 16):
            out.append(
                Scenario(f"synth-{mult}x", synth, "time/call within 1.5x", [SYNTH], 250 * mult)
            )
        out.append(Scenario("synth-100k-calls", synth, "< 60 s, < 2 GiB", [SYNTH], 5000))
        for reps in SCALING_REPLICAS:
            out.append(scaling(reps))
        out.append(
            Scenario(
                "fleet-1m-256x70b-kv_aware",
                fleet(256),
                "< 300 s, < 4 GiB",
                [SYNTH],
                50_000,
                FLEET_RATE_PER_REPLICA * 256,
            )
        )
    return out


#: the replica-scaling series and its load per replica: half the synthetic agents' rate
#: (1 session/s per 16 replicas) and 500 sessions (10,000 calls) per 16.  This load is
#: past saturation: queues build for as long as sessions arrive (mean call latency ~5 s
#: in the first 100 s, ~45-58 s after 800 s; the fleet's 50,000 sessions reach ~180 s
#: and evict every session's cache between its calls), so the benchmark times the
#: simulator under heavy eviction and chunked re-prefill, its most expensive regime
#: per call (measured from the runs' calls.parquet, as ARCHITECTURE "Memory at scale" says).
SCALING_REPLICAS = (16, 64, 256)
FLEET_RATE_PER_REPLICA = 1.0 / 16
SESSIONS_PER_REPLICA = 500 / 16


def fleet(replicas: int) -> list[str]:
    """Llama-3.1-70B TP4 on DGX A100 nodes (two replicas a node), kv_aware routing."""
    return ["--trace-format", "synth", "--gpu", "a100-80gb", "--nodes", str(replicas // 2),
            "--model", "llama-3.1-70b", "--tp", "4", "--replicas", str(replicas),
            "--policy", "kv_aware"]  # fmt: skip


def scaling(replicas: int) -> Scenario:
    return Scenario(
        f"scale-{replicas}x70b-kv_aware",
        fleet(replicas),
        "loop time/call within 1.2x of 16 replicas",
        [SYNTH],
        round(SESSIONS_PER_REPLICA * replicas),
        FLEET_RATE_PER_REPLICA * replicas,
    )


def python_of(checkout: Path) -> str:
    """The interpreter that runs ``checkout``'s code: this one, or its own .venv's."""
    return sys.executable if checkout == ROOT else str(checkout / ".venv" / "bin" / "python")


def compile_checkout(checkout: Path) -> None:
    """Byte-compile ``checkout``'s packages into their ``__pycache__`` (ignored by git),
    so that every scenario starts as a user's runs after the first do.  Where nothing
    writes bytecode (``PYTHONDONTWRITEBYTECODE`` set, as in many containers) each run
    would otherwise compile sim/ and policies/ again: about 0.1 s of a small run."""
    cmd = [python_of(checkout), "-m", "compileall", "-q", "sim", "policies"]
    subprocess.run(cmd, cwd=checkout, check=True, capture_output=True)


def command(sc: Scenario, checkout: Path, out: str, inputs: str) -> list[str]:
    """The ``agentsim run`` command of ``sc`` with results in ``out``; a scaled
    synthetic config is written into ``inputs`` (outside ``out``: agentsim refuses an
    ``--out`` it did not write)."""
    args = list(sc.args)
    if sc.synth_sessions:
        toml = Path(inputs) / "synth.toml"
        text = re.sub(r"(?m)^sessions = \d+", f"sessions = {sc.synth_sessions}", SYNTH.read_text())
        if sc.synth_rate:
            text = re.sub(r"(?m)^rate_per_s = .*$", f"rate_per_s = {sc.synth_rate}", text)
        toml.write_text(text)
        args = ["--trace", str(toml), *args]
    return [
        python_of(checkout),
        "-m",
        "sim.cli",
        "run",
        "--quiet",
        "--no-html",
        "--out",
        out,
        *args,
    ]


def run_one(sc: Scenario, checkout: Path = ROOT) -> dict[str, object]:
    missing = [str(p) for p in sc.needs if not p.exists()]
    if missing:
        return {"scenario": sc.name, "skipped": f"missing {', '.join(missing)}"}
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as inputs:
        cmd = command(sc, checkout, tmp, inputs)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode:
            return {"scenario": sc.name, "error": proc.stderr.strip().splitlines()[-1:]}
        summary_bytes = (Path(tmp) / "summary.json").read_bytes()
        summary = json.loads(summary_bytes)
        perf = json.loads((Path(tmp) / "perf.json").read_text())
    calls = summary["requests"]
    return {
        "scenario": sc.name,
        "target": sc.target,
        "calls": calls,
        "wall_s": round(wall, 3),
        "sim_loop_s": round(perf["sim_wall_s"], 3),
        # ru_maxrss of children is the max over all children so far: only meaningful
        # when it grew, which it does for the larger scenarios run later.
        "peak_rss_mib": round(max(rss_kb, before) / 1024, 1),
        "calls_per_s": round(calls / wall, 1),
        "loop_us_per_call": round(1e6 * perf["sim_wall_s"] / calls, 1),
        "sim_s_per_wall_s": round(summary["makespan_s"] / wall, 1),
        "events": perf["events"],
        # speed never changes results: before/after rows of one scenario share this
        "summary_sha256": hashlib.sha256(summary_bytes).hexdigest()[:16],
        "events_per_s": round(perf["events_per_s"]),
        "iterations": perf["iterations"],
        # the compiled event loop ("on"), or why the engine ran as Python
        "native": perf.get("native", "not in this checkout"),
    }


#: cachegrind's simulated caches (size, ways, line bytes), fixed so that counts compare
#: across machines: the L1 caches and the per-core 2 MiB L2 of the Xeon the timings
#: were taken on; a miss of the last level goes to the shared L3 or to DRAM.
CACHE = ["--I1=32768,8,64", "--D1=49152,12,64", "--LL=2097152,16,64"]
#: the counts reported per call (cachegrind's event names): instructions, L1 data
#: read misses, last-level data read and write misses
EVENTS = {"Ir": "instr", "D1mr": "l1_read_miss", "DLmr": "ll_read_miss", "DLmw": "ll_write_miss"}


def cachegrind_counts(path: Path) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """The whole run's counts and each function's (summed over its files) from a
    cachegrind output file."""
    names: list[str] = []
    total: dict[str, int] = {}
    per_fn: dict[str, dict[str, int]] = {}
    fn: dict[str, int] | None = None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith("fn="):
            fn = per_fn.setdefault(line[3:], dict.fromkeys(names, 0))
        elif line.startswith("summary:"):
            total = dict(zip(names, map(int, line.split()[1:]), strict=True))
        elif fn is not None and line[:1].isdigit():
            for name, v in zip(names, line.split()[1:], strict=False):
                fn[name] += int(v)
    return total, per_fn


def cachegrind_one(sc: Scenario, checkout: Path = ROOT) -> dict[str, object]:
    """Per-call counts of ``sc`` under cachegrind, less those of its one-session run."""
    if not sc.synth_sessions:
        return {"scenario": sc.name, "skipped": "--cachegrind profiles synthetic scenarios"}
    if shutil.which("valgrind") is None:
        return {"scenario": sc.name, "skipped": "valgrind is not installed"}
    counts = []
    natives: set[str] = set()  # whether each run had the compiled engine, or why not
    for sessions in (1, sc.synth_sessions):
        run = replace(sc, synth_sessions=sessions)
        with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as inputs:
            cg = Path(inputs) / "cachegrind.out"
            cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=yes", *CACHE,
                   f"--cachegrind-out-file={cg}", *command(run, checkout, tmp, inputs)]  # fmt: skip
            proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True)
            if proc.returncode:
                return {"scenario": sc.name, "error": proc.stderr.strip().splitlines()[-1:]}
            calls = json.loads((Path(tmp) / "summary.json").read_text())["requests"]
            perf = json.loads((Path(tmp) / "perf.json").read_text())
            natives.add(str(perf.get("native", "not in this checkout")))
            counts.append((calls, *cachegrind_counts(cg)))
    (c0, t0, f0), (c1, t1, f1) = counts
    n = c1 - c0
    # both runs must be the same code: a source edited while it ran turns the build off
    native = natives.pop() if len(natives) == 1 else f"differs: {sorted(natives)}"
    row: dict[str, object] = {"scenario": sc.name, "calls": c1, "native": native}
    for ev, col in EVENTS.items():
        row[f"{col}_per_call"] = round((t1[ev] - t0[ev]) / n, 1)

    def ll(fn: str, f: dict[str, dict[str, int]]) -> int:
        got = f.get(fn)
        return got["DLmr"] + got["DLmw"] if got else 0

    top = sorted(f1, key=lambda fn: ll(fn, f0) - ll(fn, f1))[:12]
    row["top_ll_miss_per_call"] = {fn[:80]: round((ll(fn, f1) - ll(fn, f0)) / n, 1) for fn in top}
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--quick", action="store_true", help="only the small and target scenarios")
    ap.add_argument("--checkout", type=Path, default=ROOT, help="run this checkout's code")
    ap.add_argument("--out", type=Path, help="default results/bench/latest.json")
    ap.add_argument(
        "--cachegrind", action="store_true", help="count instructions and cache misses per call"
    )
    args = ap.parse_args()
    bench = ROOT / "results" / "bench"
    out = args.out or bench / ("cachegrind.json" if args.cachegrind else "latest.json")
    chosen = scenarios(args.quick)
    if args.only:
        names = set(args.only.split(","))
        chosen = [s for s in chosen if s.name in names]
    rows = []
    if args.cachegrind:
        cols = ["scenario", "calls", *(f"{c}_per_call" for c in EVENTS.values()), "native"]
    else:
        cols = [
            "scenario",
            "calls",
            "wall_s",
            "sim_loop_s",
            "peak_rss_mib",
            "calls_per_s",
            "loop_us_per_call",
            "sim_s_per_wall_s",
            "events_per_s",
            "native",
            "target",
        ]
    print(" | ".join(cols))
    compile_checkout(args.checkout.resolve())
    for sc in chosen:
        if args.cachegrind:
            row = cachegrind_one(sc, args.checkout.resolve())
        else:
            row = run_one(sc, args.checkout.resolve())
        rows.append(row)
        if "calls" in row:
            print(" | ".join(str(row.get(c, "")) for c in cols), flush=True)
            for fn, misses in cast(dict[str, float], row.get("top_ll_miss_per_call", {})).items():
                print(f"    {misses:8.1f} last-level misses/call  {fn}")
        else:
            print(f"{sc.name} | {row.get('skipped') or row.get('error')}", flush=True)
    out = out.resolve()
    atomic_write_json(out, {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "python": sys.version.split()[0],
                            "checkout": str(args.checkout), "rows": rows})  # fmt: skip
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
