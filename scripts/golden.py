"""Byte-identity check for refactors: run fixed scenarios, hash every deterministic output.

A refactor must not change a result.  ``capture`` runs a fixed set of ``agentsim``
commands (default demo, Azure and Mooncake full traces, LMCache agents under several
retention policies, preemption-heavy and fault runs, a compare and a sweep) and writes
the SHA-256 of every deterministic output file (``perf.json``, reports and anything
holding wall times are left out) to a JSON file.  ``check`` runs them again and lists
every file whose hash differs.

Usage:
    python scripts/golden.py capture OUT.json [--only NAME,...]
    python scripts/golden.py check OUT.json [--only NAME,...]

Runs the ``agentsim`` of this interpreter's environment on this checkout (about two
minutes on two cores).  Scenarios whose shared data (``../shared/data``) is missing are
skipped, and say so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
AZURE = DATA / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
MOONCAKE = DATA / "mooncake" / "conversation_trace.jsonl"
MAGAGENT = ROOT / "traces" / "lmcache" / "magagent.jsonl.gz"
MINISWE = ROOT / "traces" / "lmcache" / "miniswe.jsonl.gz"
MOON_SAMPLE = ROOT / "traces" / "samples" / "mooncake_conversation_400s.jsonl.gz"

#: Output files that hold wall-clock times or rendered text, never compared.
SKIP = {
    "perf.json",
    "report.md",
    "report.html",
    "comparison.md",
    "comparison.html",
    "sweep_perf.csv",
}

_8B = ["--model", "llama-3.1-8b", "--tp", "1"]
_LM = ["--nodes", "1", "--replicas", "4", *_8B, "--gpu-kv-blocks", "3000"]

#: name -> (agentsim arguments before --out, data files needed)
SCENARIOS: dict[str, tuple[list[str], list[Path]]] = {
    "default": (["run"], []),
    "azure": (
        [
            "run",
            "--trace",
            str(AZURE),
            "--trace-format",
            "azure",
            "--gpu",
            "a100-80gb",
            "--nodes",
            "1",
            "--model",
            "llama-2-70b",
            "--tp",
            "2",
            "--replicas",
            "4",
            "--max-num-seqs",
            "128",
            "--policy",
            "round_robin",
        ],
        [AZURE],
    ),  # fmt: skip
    "mooncake": (
        [
            "run",
            "--trace",
            str(MOONCAKE),
            "--trace-format",
            "mooncake",
            "--nodes",
            "8",
            "--model",
            "llama-3.1-70b",
            "--tp",
            "4",
            "--replicas",
            "16",
            "--policy",
            "kv_aware",
        ],
        [MOONCAKE],
    ),  # fmt: skip
    "mooncake-preempt": (
        [
            "run",
            "--trace",
            str(MOON_SAMPLE),
            *_8B,
            "--nodes",
            "1",
            "--replicas",
            "2",
            "--max-num-seqs",
            "32",
            "--load-scale",
            "4",
        ],
        [],
    ),  # fmt: skip
    "magagent-lru": (["run", "--trace", str(MAGAGENT), *_LM, "--policy", "kv_aware"], []),
    "magagent-ttl": (
        ["run", "--trace", str(MAGAGENT), *_LM, "--policy", "kv_aware", "--retention", "ttl_pin"],
        [],
    ),
    "magagent-infercept": (
        ["run", "--trace", str(MAGAGENT), *_LM, "--retention", "infercept"],
        [],
    ),
    "miniswe-host": (
        [
            "run",
            "--trace",
            str(MINISWE),
            *_LM,
            "--persistence",
            "host_offload",
            "--policy",
            "session_affinity",
            "--batching",
            "vtc",
        ],
        [],
    ),  # fmt: skip
    "faults-node": (
        [
            "run",
            "--faults",
            str(ROOT / "examples/faults/node_failure.toml"),
            "--persistence",
            "migrate",
        ],
        [],
    ),  # fmt: skip
    # the fault-time persistence policies under faults (miniswe-host has no faults)
    "faults-remote-store": (
        [
            "run",
            "--faults",
            str(ROOT / "examples/faults/node_failure.toml"),
            "--persistence",
            "remote_store",
        ],
        [],
    ),  # fmt: skip
    "faults-host-offload": (
        [
            "run",
            "--faults",
            str(ROOT / "examples/faults/mtbf.toml"),
            "--persistence",
            "host_offload",
        ],
        [],
    ),  # fmt: skip
    "faults-link": (["run", "--faults", str(ROOT / "examples/faults/link_degradation.toml")], []),
    "faults-mtbf": (["run", "--faults", str(ROOT / "examples/faults/mtbf.toml")], []),
    "faults-spot": (["run", "--faults", str(ROOT / "examples/faults/spot_preemption.toml")], []),
    "multi-model": (["run", "--cluster", str(ROOT / "examples/clusters/multi-model.toml")], []),
    # synthetic workloads, generated session by session while they run
    "synth-default": (["run", "--trace", str(ROOT / "examples/synth/default.toml")], []),
    "synth-mixed": (
        [
            "run",
            "--trace",
            str(ROOT / "examples/synth/mixed_models.toml"),
            "--cluster",
            str(ROOT / "examples/clusters/multi-model.toml"),
        ],
        [],
    ),  # fmt: skip
    "k8s": (
        ["run", "--policy", "k8s_service", "--autoscaler", "hpa", "--placement", "k8s_default"],
        [],
    ),
    "compare": (
        ["compare", "--policies", "round_robin,kv_aware,prefix_affinity", "--seeds", "2"],
        [],
    ),
    "sweep": (["sweep", str(ROOT / "examples/sweeps/engine_limits.toml")], []),
}


def _agentsim() -> list[str]:
    return [sys.executable, "-m", "sim.cli"]


def _hash_tree(d: Path) -> dict[str, str]:
    """sha256 of every file under ``d``; the checkout's and the output's paths inside a
    file are replaced by placeholders first, so two checkouts hash alike."""
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file() and p.name not in SKIP:
            data = p.read_bytes()
            for path, mark in ((d, b"<OUT>"), (ROOT, b"<ROOT>")):
                data = data.replace(str(path).encode(), mark)
            out[str(p.relative_to(d))] = hashlib.sha256(data).hexdigest()
    return out


def run_all(only: set[str] | None) -> dict[str, dict[str, str]]:
    """Run each scenario into a temporary directory; name -> {file: sha256}."""
    got: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (args, needs) in SCENARIOS.items():
            if only and name not in only:
                continue
            missing = [p for p in needs if not p.exists()]
            if missing:
                print(f"{name}: skipped ({missing[0]} missing)", file=sys.stderr)
                continue
            out = Path(tmp) / name
            cmd = [*_agentsim(), *args, "--out", str(out)]
            if args[0] == "run":
                cmd.append("--no-html")
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
            got[name] = _hash_tree(out)
            print(f"{name}: {len(got[name])} files", file=sys.stderr)
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["capture", "check"])
    ap.add_argument("file", type=Path)
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    a = ap.parse_args(argv)
    only = {s for s in a.only.split(",") if s} or None
    got = run_all(only)
    if a.mode == "capture":
        a.file.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"wrote {a.file}: {sum(map(len, got.values()))} hashes")
        return 0
    want = json.loads(a.file.read_text())
    bad = 0
    for name, files in got.items():
        if name not in want:
            print(f"{name}: not in {a.file}")
            continue
        for f in sorted(set(files) | set(want[name])):
            if files.get(f) != want[name].get(f):
                bad += 1
                print(f"DIFF {name}/{f}")
    print(f"{'identical' if not bad else f'{bad} files differ'} ({len(got)} scenarios)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
