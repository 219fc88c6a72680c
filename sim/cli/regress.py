"""``agentsim regress``: the CI regression gate on scheduling metrics.

Reruns the baseline file's scenarios, prints metric, baseline, now, delta and verdict
for every metric, and exits 1 when one regressed.  ``--update`` rewrites the
baseline's values (keeping its tolerances) and prints what changed.  See
:mod:`sim.experiments.regress` for the file format and the tolerance rule.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from sim.experiments import regress as rg


def register(sub: Any) -> None:
    p = sub.add_parser(
        "regress",
        help="rerun fixed scenarios and compare every metric with a baseline (CI gate)",
        description="Rerun the scenarios of a baseline file and compare every summary metric "
        "with the baseline under the tolerances stored in the file. Exits 1 on a regression "
        "(a metric worse than its tolerance, a count that changed, a metric that went "
        "missing); improvements beyond tolerance are reported but pass.",
    )
    p.add_argument(
        "--baseline",
        required=True,
        help="baseline JSON (agentsim's own: results/baselines/ci.json)",
    )
    p.add_argument(
        "--update",
        action="store_true",
        help="rewrite the baseline's values from this run (tolerances are kept) and print "
        "what changed; a missing file is created with the default scenarios",
    )
    p.add_argument(
        "--out",
        help="also write each scenario's results and regress.md (the table in Markdown) here "
        "(written whole at the end; an --out holding results needs --force)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace an --out directory that holds results"
    )
    p.add_argument(
        "--changes-only",
        action="store_true",
        help="print only rows whose verdict is not ok",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.baseline)
    if not args.out:
        return _run(args, path, None)
    from sim.common.io import atomic_dir, check_not_input, check_output_dir

    out = check_output_dir(args.out, force=args.force)
    check_not_input(out, [args.baseline], directory=True)
    # every scenario's directory and regress.md go into a temporary sibling that is
    # renamed onto --out at the end: Ctrl-C or an error leaves --out as it was
    with atomic_dir(out, replace=args.force) as tmp:
        return _run(args, path, tmp)


def _run(args: argparse.Namespace, path: Path, out: Path | None) -> int:
    t0 = time.perf_counter()
    if args.update:
        return _update(path, out, t0)
    baseline = rg.load_baseline(path)
    summaries = rg.run_scenarios(path, baseline.configs, out)
    rows = rg.check(baseline, summaries)
    shown = [r for r in rows if r.verdict != rg.OK] if args.changes_only else rows
    title = f"agentsim regress: {path} ({len(baseline.configs)} scenarios)"
    print(title)
    if shown:
        print(rg.format_table(shown))
    counts = rg.verdict_counts(rows)
    failed = sum(counts.get(v, 0) for v in rg.FAILING)
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    print(f"{len(rows)} metrics: {summary} ({time.perf_counter() - t0:.1f} s)")
    if out is not None:
        rg.write_markdown(out / "regress.md", rows, title)
    if failed:
        print(
            f"agentsim regress: FAILED: {failed} metric(s) regressed, changed or went missing. "
            f"If the change is intended, run: agentsim regress --baseline {path} --update",
            file=sys.stderr,
        )
        return 1
    print("agentsim regress: passed")
    return 0


def _update(path: Path, out: Path | None, t0: float) -> int:
    old = rg.load_baseline(path) if path.exists() else None
    configs = old.configs if old else rg.DEFAULT_SCENARIOS
    summaries = rg.run_scenarios(path, configs, out)
    new = rg.updated(old, summaries)
    changes = rg.update_rows(old, new)
    rg.write_baseline(path, configs, new)
    verb = "updated" if old else "created"
    print(f"agentsim regress: {verb} {path} ({len(configs)} scenarios)")
    if changes:
        print(rg.format_table(changes))
        counts = ", ".join(f"{n} {v}" for v, n in sorted(rg.verdict_counts(changes).items()))
        print(f"{len(changes)} values changed: {counts} ({time.perf_counter() - t0:.1f} s)")
    else:
        print(f"no value changed ({time.perf_counter() - t0:.1f} s)")
    return 0
