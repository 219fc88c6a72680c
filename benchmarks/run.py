"""agentsim performance benchmark (``make bench``).

Runs a fixed set of scenarios, each as a fresh ``agentsim run`` process (so the wall
time includes interpreter start-up, imports, trace loading and writing results), and
prints a table of wall time, peak RSS, calls/s, simulated seconds per wall second and
events/s.  The table is written to ``results/bench/latest.json`` so runs can be
compared over time.

Usage: python benchmarks/run.py [--only NAME[,NAME...]] [--quick]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

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
    return out


def run_one(sc: Scenario) -> dict[str, object]:
    missing = [str(p) for p in sc.needs if not p.exists()]
    if missing:
        return {"scenario": sc.name, "skipped": f"missing {', '.join(missing)}"}
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as inputs:
        args = list(sc.args)
        if sc.synth_sessions:
            # the scaled config lives outside --out: agentsim refuses an --out it did not write
            toml = Path(inputs) / "synth.toml"
            text = re.sub(
                r"(?m)^sessions = \d+", f"sessions = {sc.synth_sessions}", SYNTH.read_text()
            )
            toml.write_text(text)
            args = ["--trace", str(toml), *args]
        cmd = [sys.executable, "-m", "sim.cli", "run", "--quiet", "--no-html", "--out", tmp, *args]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode:
            return {"scenario": sc.name, "error": proc.stderr.strip().splitlines()[-1:]}
        summary = json.loads((Path(tmp) / "summary.json").read_text())
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
        "sim_s_per_wall_s": round(summary["makespan_s"] / wall, 1),
        "events": perf["events"],
        "events_per_s": round(perf["events_per_s"]),
        "iterations": perf["iterations"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--quick", action="store_true", help="only the small and target scenarios")
    args = ap.parse_args()
    chosen = scenarios(args.quick)
    if args.only:
        names = set(args.only.split(","))
        chosen = [s for s in chosen if s.name in names]
    rows = []
    cols = [
        "scenario",
        "calls",
        "wall_s",
        "sim_loop_s",
        "peak_rss_mib",
        "calls_per_s",
        "sim_s_per_wall_s",
        "events_per_s",
        "target",
    ]
    print(" | ".join(cols))
    for sc in chosen:
        row = run_one(sc)
        rows.append(row)
        if "calls" in row:
            print(" | ".join(str(row.get(c, "")) for c in cols), flush=True)
        else:
            print(f"{sc.name} | {row.get('skipped') or row.get('error')}", flush=True)
    out = ROOT / "results" / "bench" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "python": sys.version.split()[0],
                               "rows": rows}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
