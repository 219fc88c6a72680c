"""``agentsim report``: re-render reports of saved runs without re-simulating.

Also holds the SLO flags shared by ``run``, ``compare`` and ``report``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from sim.report.results import SLO


def add_slo_arguments(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    """``--slo-ttft`` and ``--slo-tpot`` (seconds); without ``defaults`` they are None."""
    d = SLO()
    p.add_argument(
        "--slo-ttft",
        type=float,
        default=d.ttft_s if defaults else None,
        metavar="S",
        help=f"TTFT objective in seconds for SLO attainment and goodput (default {d.ttft_s})",
    )
    p.add_argument(
        "--slo-tpot",
        type=float,
        default=d.tpot_s if defaults else None,
        metavar="S",
        help=f"TPOT objective in seconds (default {d.tpot_s})",
    )


def slo_from_args(args: argparse.Namespace, base: SLO | None = None) -> SLO:
    """The SLO named by the flags; flags left as None keep ``base`` (or the default)."""
    b = base or SLO()
    ttft = args.slo_ttft if args.slo_ttft is not None else b.ttft_s
    tpot = args.slo_tpot if args.slo_tpot is not None else b.tpot_s
    if not (ttft > 0 and tpot > 0):
        from sim.common.errors import ConfigError

        raise ConfigError(f"SLO objectives must be positive, got TTFT {ttft} s, TPOT {tpot} s")
    return SLO(ttft, tpot)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="re-render report.md and report.html of saved runs",
        description="Re-render the reports (report.md, report.html, and the report metrics in "
        "summary.json) of run directories written by 'agentsim run' or 'agentsim compare' "
        "(DIR/runs/*), without re-simulating.  SLO flags recompute SLO attainment and goodput; "
        "by default each run keeps the SLO it was written with.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories")
    add_slo_arguments(p, defaults=False)
    p.add_argument("--no-html", action="store_true", help="write report.md only")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sim.common.io import atomic_dir, atomic_write_json, link_or_copy_tree
    from sim.report.results import enrich_summary, load_results, write_reports

    for d in map(Path, args.dirs):
        t0 = time.perf_counter()
        result = load_results(d)
        saved = result.summary.get("slo")
        base = SLO(float(saved["ttft_s"]), float(saved["tpot_s"])) if saved else None
        summary = enrich_summary(result, slo_from_args(args, base))
        # The directory is rebuilt beside itself (its other files hard-linked, not
        # copied) and swapped in whole: Ctrl-C mid-render leaves it as it was, never a
        # new summary.json next to an old report.html.
        with atomic_dir(d, replace=True) as tmp:
            link_or_copy_tree(d, tmp)
            if args.no_html and summary != result.summary:
                # an old report.html would show other numbers than summary.json
                (tmp / "report.html").unlink(missing_ok=True)
            atomic_write_json(tmp / "summary.json", summary)
            render_s = write_reports(result, tmp, summary=summary, html=not args.no_html)
        if not args.quiet:
            print(
                f"rendered in {render_s:.2f} s (loaded in {time.perf_counter() - t0 - render_s:.2f} s)",
                file=sys.stderr,
            )
            print(d / ("report.md" if args.no_html else "report.html"))
    return 0
