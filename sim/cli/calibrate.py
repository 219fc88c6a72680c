"""``agentsim calibrate``: measured timings -> records -> fitted cost model -> its error.

- ``import --from vidur PROFILE_DIR -o records.jsonl[.gz]``: Vidur profiling CSVs to records.
- ``fit RECORDS... -o costmodel.toml [--name NAME]``: fit a cost model (deterministic).
- ``validate [--costmodel FILE] RECORDS... [--json]``: MAPE, p90 APE and count per
  operator, operator family and overall (default cost model: the committed one).

The real-engine harness (``record``, ``replay``, ``compare-e2e``, ``serve``) registers
its subcommands from :mod:`sim.calibration.harness_cli`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sim.common.errors import InputError


def register(sub: Any) -> None:
    group = sub.add_parser(
        "calibrate", help="import, fit and validate cost models from measured timings"
    )
    gsub = group.add_subparsers(dest="calibrate_command", metavar="SUBCOMMAND")
    gsub.required = True

    p = gsub.add_parser("import", help="convert a profiler's tables into calibration records")
    p.add_argument(
        "--from",
        dest="source",
        choices=("vidur",),
        required=True,
        help="profiler the tables come from",
    )
    p.add_argument(
        "profile_dir",
        metavar="PROFILE_DIR",
        help="Vidur profiling directory (compute/, network/, ...)",
    )
    p.add_argument(
        "-o", "--output", required=True, help="records file to write (.jsonl or .jsonl.gz)"
    )
    p.set_defaults(func=run_import)

    p = gsub.add_parser("fit", help="fit a cost model (TOML) to records, with held-out validation")
    p.add_argument(
        "records", nargs="+", metavar="RECORDS", help="records files (.jsonl or .jsonl.gz)"
    )
    p.add_argument("-o", "--output", required=True, help="cost model TOML to write")
    p.add_argument("--name", help="cost model name (default: the output file's stem)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random hold-out split")
    p.add_argument("--holdout", type=float, default=0.2, help="fraction held out for validation")
    p.set_defaults(func=run_fit)

    p = gsub.add_parser("validate", help="error of a cost model on records (MAPE, p90 APE, n)")
    p.add_argument("records", nargs="+", metavar="RECORDS", help="records files")
    p.add_argument("--costmodel", help="fitted cost model TOML (default: the committed default)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON (keys mape, p90_ape, n, by_operator, by_family)",
    )
    p.set_defaults(func=run_validate)

    # Serving-level fit of the vLLM step model (sim/serving/fit_cli.py).
    from sim.serving import fit_cli

    fit_cli.register(gsub)

    # The real-engine harness subcommands (record, replay, compare-e2e, serve).
    from sim.calibration import harness_cli

    harness_cli.register(gsub)


def run_import(args: argparse.Namespace) -> int:
    from sim.calibration.records import write_records
    from sim.calibration.vidur import import_vidur
    from sim.common.io import check_not_input, check_output_file

    out = check_output_file(args.output, "--output")
    check_not_input(out, [args.profile_dir], "--output")
    sections = import_vidur(args.profile_dir)
    write_records(out, sections)
    n = sum(len(s.samples) for s in sections)
    print(f"{out}: {len(sections)} sections, {n} samples")
    return 0


def run_fit(args: argparse.Namespace) -> int:
    from sim.calibration.fit import FitOptions, fit_files
    from sim.common.io import atomic_write_text, check_not_input, check_output_file
    from sim.costmodel.fitted import parse_costmodel

    if not 0.0 < args.holdout < 1.0:
        raise InputError("--holdout", None, None, f"must be between 0 and 1, got {args.holdout}")
    # -o is vetted before the fit (a directory, an unwritable folder or one of the
    # records files fails now, not after the work), then written whole or not at all.
    out = check_output_file(args.output, "--output")
    check_not_input(out, args.records, "--output")
    text = fit_files(
        args.records,
        args.name or out.stem,
        FitOptions(seed=args.seed, holdout_fraction=args.holdout),
    )
    model = parse_costmodel(text, str(out))
    atomic_write_text(out, text)
    val = model.meta.get("validation", {})
    rs = val.get("random_split", {})
    print(f"{out}: GPUs {', '.join(sorted(model.gpus))}")
    print(
        f"  random {args.holdout:.0%} hold-out: MAPE {rs.get('mape', float('nan')):.2f}% (n={rs.get('n', 0)})"
    )
    for lomo in val.get("leave_one_model_out", []):
        print(
            f"  fit {lomo['fit_model']} -> predict {lomo['eval_model']}: MAPE {lomo['mape']:.2f}% (n={lomo['n']})"
        )
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from sim.calibration.fit import FitOptions
    from sim.calibration.records import read_records
    from sim.calibration.validate import format_report, rows_of, validate_rows
    from sim.costmodel.fitted import default_costmodel_path, load_costmodel

    path = args.costmodel or default_costmodel_path()
    model = load_costmodel(path)
    topology = model.meta.get("fit_options", {}).get(
        "network_topology", FitOptions().network_topology
    )
    rows = rows_of(s for r in args.records for s in read_records(r))
    rep = validate_rows(rows, model.gpus, str(topology))
    if rep.overall.n == 0:
        raise InputError(
            ",".join(args.records), None, None, f"no rows cost model {model.name!r} can predict"
        )
    if args.json:
        print(json.dumps({"costmodel": str(path), **rep.to_dict()}, indent=2, sort_keys=True))
    else:
        print(format_report(f"cost model {model.name} ({path}) on {', '.join(args.records)}", rep))
    return 0
