"""``agentsim sweep``: run a grid of configurations locally or on Ray.

Every ``agentsim run`` flag is accepted and acts as the base configuration that the
sweep file's ``[grid]`` varies (flags win over the file's ``[base]``).  See
:mod:`sim.experiments.sweep` and ``examples/sweeps/README.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sim.cli.common import POLICY_FLAGS, add_run_arguments, plugins_from_args, policy_overrides
from sim.cli.report import add_slo_arguments
from sim.cluster.config import QUICK_FIELDS
from sim.common.io import atomic_dir
from sim.common.paths import RESULTS_DIR
from sim.experiments.runner import make_backend
from sim.experiments.sweep import SweepOutcome, expand, is_done, load_sweep, run_sweep


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of traces x clusters x policies x loads x seeds (local or Ray)",
        description="Expand the grid of SWEEP.toml and run every configuration not finished "
        "yet. Writes OUT/runs/<id>/ per run, OUT/sweep.parquet (+ sweep.csv) with one row per "
        "run, OUT/sweep_perf.csv (wall times) and OUT/sweep_report.md with plots of metric vs "
        "load per policy. Run flags (--trace, --cluster, --replicas, ...) set the base config. "
        "Rerunning into the same OUT resumes (finished runs are kept); --force starts afresh.",
    )
    p.add_argument("sweep_file", metavar="SWEEP.toml", help="the sweep definition")
    p.add_argument(
        "--out", help="output directory (default: [sweep] out, else results/sweeps/<name>)"
    )
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local process pool (default) or Ray (needs pip install 'agentsim[ray]')",
    )
    p.add_argument(
        "--workers", type=int, help="local processes (default: CPU count; 1 runs in-process)"
    )
    p.add_argument(
        "--address", help="Ray cluster address (e.g. auto or ray://host:10001); default: local Ray"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="list the runs and which are done; run nothing"
    )
    p.add_argument(
        "--html", action="store_true", help="also write each run's report.html (slow: plots)"
    )
    p.add_argument(
        "--jitter",
        choices=("auto", "on", "off"),
        default="auto",
        help="arrival jitter: each run's sessions shifted by random offsets (within +-half "
        "the mean gap between session starts) seeded by the run's seed, so seeds vary the "
        "arrivals too. auto (default): [base] jitter, else on when the grid has several seeds",
    )
    add_run_arguments(p)
    # The SLO changes only the reported SLO metrics: a rerun with another SLO recomputes
    # them from the saved runs (no run is simulated again for it).
    add_slo_arguments(p, defaults=False)
    # None means "not given", so only explicit flags override the sweep file's [base].
    p.set_defaults(func=run, seed=None, load_scale=None)


def base_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The run flags given on the command line, as ``[base]`` settings."""
    out: dict[str, Any] = {}
    for key in ("trace", "cluster", "costmodel", "faults"):
        v = getattr(args, key)
        if v is not None:
            out[key] = str(v)
    pool_flags = ("prefill_replicas", "decode_replicas", "prefill_tp", "decode_tp")
    for key in ("trace_format", "seed", "load_scale", "gpu", "nodes", *QUICK_FIELDS, *pool_flags):
        v = getattr(args, key)
        if v is not None:
            out[key] = float(v) if key == "load_scale" else v
    for key in ("slo_ttft", "slo_tpot"):
        v = getattr(args, key, None)
        if v is not None:
            out[key] = float(v)
    pol = policy_overrides(args)
    out.update({k: pol[k] for k in POLICY_FLAGS if k in pol})
    plugins = plugins_from_args(args)
    if plugins:
        out["plugins"] = plugins
    if args.no_fast_forward:
        out["fast_forward"] = False
    if getattr(args, "jitter", "auto") != "auto":
        out["jitter"] = args.jitter == "on"
    return out


def is_sweep_dir(path: Path) -> bool:
    """Whether ``path`` holds an earlier sweep (a ``runs/`` folder, and not a run's or a
    comparison's files), which a rerun resumes."""
    return (
        (path / "runs").is_dir()
        and not (path / "summary.json").exists()
        and not (path / "comparison.csv").exists()
    )


def _check_out(out: Path, force: bool, sweep_file: str) -> bool:
    """Vet ``--out`` before running anything; returns whether to start it afresh.

    An absent or empty directory, or an earlier sweep's (resumed: its finished runs
    are kept, each run directory having been written whole), is used in place.
    ``--force`` starts afresh, replacing what is there whole at the end.  Anything
    else (a file, another command's results, a directory agentsim did not write) is
    an error, as in ``agentsim run``.
    """
    from sim.common.io import check_not_input, check_output_dir

    used = out.is_dir() and next(out.iterdir(), None) is not None
    if used and is_sweep_dir(out) and not force:
        return False
    check_output_dir(out, force=force)
    if used:
        check_not_input(out, [sweep_file], directory=True)
    return used


def run(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.sweep_file, base_overrides(args))
    specs = expand(sweep)
    out = Path(args.out or sweep.out or RESULTS_DIR / "sweeps" / Path(args.sweep_file).stem)
    if args.dry_run:
        for s in specs:
            state = "done" if is_done(out, s) else "todo"
            desc = " ".join(f"{k}={v}" for k, v in s.params.items() if k != "run_id")
            print(f"{s.run_id} {state} {desc}")
        done = sum(is_done(out, s) for s in specs)
        print(f"{len(specs)} runs, {done} done, {len(specs) - done} to run -> {out}")
        return 0
    fresh = _check_out(out, args.force, args.sweep_file)
    backend = make_backend(args.backend, args.workers, args.address)

    def go(d: Path) -> SweepOutcome:
        return run_sweep(
            specs,
            d,
            backend,
            progress=not args.quiet,
            metrics=sweep.metrics,
            title=sweep.name,
            html=args.html and not args.no_html,
        )

    if fresh:
        # --force over earlier results: the new sweep is built whole beside them and
        # swapped in at the end (Ctrl-C or an error leaves the old one as it was).
        with atomic_dir(out, replace=True) as tmp:
            result = go(tmp)
    else:
        result = go(out)
    if not args.quiet:
        rerep = f", {len(result.rereported)} re-reported for the SLO" if result.rereported else ""
        print(
            f"sweep {sweep.name}: {result.total} runs: {len(result.skipped)} already done, "
            f"{len(result.ran)} ran, {len(result.failed)} failed{rerep} "
            f"({backend.name}, {result.wall_s:.1f} s wall)",
            file=sys.stderr,
        )
    for rid, err in list(result.failed.items())[:5]:
        print(f"agentsim: run {rid} failed: {err}", file=sys.stderr)
    if len(result.failed) > 5:
        print(f"agentsim: ... see {out / 'failures.json'}", file=sys.stderr)
    print(f"table: {out / 'sweep.parquet'}")
    if not result.table.empty:
        print(f"report: {out / 'sweep_report.md'}")
    return 1 if result.failed else 0
