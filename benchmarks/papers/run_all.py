"""``make papers``: run every reproduction in benchmarks/papers/ as its own process.

Usage: python benchmarks/papers/run_all.py [--fast] [--only NAME[,NAME...]]
Each writes results/papers/NAME.md; a failing one is reported and the rest still run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_PAPERS = {"__init__", "report", "run_all"}


def reproductions() -> list[str]:
    """The names of the reproduction modules, sorted."""
    return sorted(
        p.stem for p in HERE.glob("*.py") if p.stem not in NOT_PAPERS and not p.stem.startswith("_")
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--fast", action="store_true")
    p.add_argument("--only", default="", help="comma-separated names")
    args = p.parse_args()
    names = reproductions()
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            p.error(f"unknown reproduction(s) {', '.join(unknown)}; known: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    failed = []
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--fast"] if args.fast else [])
        print(f"== {name}", flush=True)
        if subprocess.run(cmd, check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
