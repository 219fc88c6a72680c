"""``agentsim calibrate fit-serving RUNS.csv -o calibration/costmodels/NAME.toml``.

Fits the vLLM step model's global coefficients to measured serving runs by running the
simulator in the loop (:mod:`sim.serving.fit`), validates the result on every run at
full length and writes the TOML (``kind = "vllm-step"``, loadable by ``--costmodel``)
with its provenance and validation errors.  ``--holdout-model NAME`` leaves that model's
runs out of the fit (its errors are stored as ``holdout_mape_*``); ``--lomo`` prints the
leave-one-model-out table instead of writing a model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(gsub: Any) -> None:
    p = gsub.add_parser(
        "fit-serving",
        help="fit the vLLM step model to measured serving runs (simulator in the loop)",
    )
    p.add_argument("runs", metavar="RUNS.csv", help="measured runs (see agentsim validate)")
    p.add_argument("-o", "--output", help="cost model TOML to write")
    p.add_argument("--name", help="cost model name (default: the output file's stem)")
    p.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    p.add_argument(
        "--stage-s",
        type=float,
        default=300.0,
        help="stage length of the simulator search, seconds (default 300)",
    )
    p.add_argument(
        "--sim-iterations",
        type=int,
        default=4,
        help="simulator-in-the-loop evaluations (default 4; 0: analytic surrogate only)",
    )
    p.add_argument("--workers", type=int, default=2, help="simulation processes (default 2)")
    p.add_argument("--holdout-model", help="leave this model's runs out of the fit")
    p.add_argument(
        "--lomo",
        action="store_true",
        help="leave-one-model-out: fit without each model, print its errors (no -o needed)",
    )
    p.set_defaults(func=run_fit_serving)


def run_fit_serving(args: argparse.Namespace) -> int:
    from sim.common.errors import InputError
    from sim.common.io import atomic_write_text
    from sim.serving.fit import FitOptions, fitted_model, leave_one_model_out
    from sim.serving.runs import read_runs

    runs = read_runs(args.runs)
    opts = FitOptions(
        seed=args.seed,
        stage_s=args.stage_s,
        sim_iterations=args.sim_iterations,
        workers=max(1, args.workers),
    )

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    if args.lomo:
        print(leave_one_model_out(runs, opts, log=log).format())
        return 0
    if not args.output:
        raise InputError("-o", None, "--output", "required (or --lomo)")
    from sim.serving.fit import model_key

    known = {r.model for r in runs} | {model_key(r) for r in runs}
    if args.holdout_model and args.holdout_model not in known:
        raise InputError(args.runs, None, "model", f"no runs of {args.holdout_model!r} to hold out")
    out = Path(args.output)
    name = args.name or out.stem
    model = fitted_model(args.runs, runs, name, opts, holdout_model=args.holdout_model, log=log)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, model.to_toml())
    print(f"wrote {out}")
    return 0
