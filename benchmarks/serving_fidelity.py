"""Serving-level fidelity against measured vLLM runs (issue 20's targets).

Prints, for ``vllm-serving-measurements/runs.csv`` (measured by the BLIS project
(inference-sim) on vLLM v0.15.1):

1. the per-run, per-stage error table BEFORE (the old default cost model,
   ``calibration/costmodels/vidur-a100.toml``) and AFTER (the per-GPU defaults,
   ``calibration/costmodels/vllm-serving.toml``), with the MAPE per metric;
2. AFTER's MAPE per model, per GPU and per metric;
3. leave-one-model-out: for each model, a fit on the runs of all other models predicts
   the held-out model's runs (mean over models of each metric's MAPE);
4. the targets: LOMO mean E2E MAPE <= 8 %, TTFT <= 15 %, ITL <= 8 %; no stage the real
   server served (TTFT < 1 s) simulated overloaded; validating all runs < 2 min.

Run: ``.venv/bin/python benchmarks/serving_fidelity.py [--runs RUNS.csv] [--skip-lomo]
[--gpu-out]`` (``--gpu-out``: also leave the A100 and the L40S out in turn, ~4 min)
(on 2 idle cores: validation of both models about 1 min, LOMO about 20 min, 5 with
``--lomo-quick``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.serving.fit import FitOptions, fit_serving, leave_one_model_out, model_key  # noqa: E402
from sim.serving.runs import read_runs  # noqa: E402
from sim.serving.validate import MAPE_METRICS, Validation, format_table, validate_runs  # noqa: E402

RUNS = ROOT.parent / "shared" / "data" / "vllm-serving-measurements" / "runs.csv"
OLD = ROOT / "calibration" / "costmodels" / "vidur-a100.toml"
TARGETS = {"e2e_mean": 8.0, "ttft_mean": 15.0, "itl_mean": 8.0}


def mape_by(v: Validation, key: str) -> str:
    groups: dict[str, list] = defaultdict(list)
    for r in v.results:
        groups[model_key(r.run) if key == "model" else r.run.gpu].append(r.run)
    head = f"{key:<24} {'runs':>4} " + " ".join(f"{k:>10}" for k in MAPE_METRICS)
    lines = [head, "-" * len(head)]
    for name, runs in sorted(groups.items()):
        ids = {r.run_id for r in runs}
        m = v.mape(where=lambda r, ids=ids: r.run_id in ids)
        lines.append(
            f"{name:<24} {len(runs):>4} " + " ".join(f"{m[k]:10.1f}" for k in MAPE_METRICS)
        )
    m = v.mape()
    lines.append(
        f"{'all':<24} {len(v.results):>4} " + " ".join(f"{m[k]:10.1f}" for k in MAPE_METRICS)
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", default=str(RUNS))
    ap.add_argument("--skip-lomo", action="store_true")
    ap.add_argument(
        "--lomo-quick", action="store_true", help="LOMO folds refine only the client path"
    )
    ap.add_argument(
        "--gpu-out",
        action="store_true",
        help="also leave each non-H100 GPU out (fit on the other GPUs' runs, validate its runs)",
    )
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    runs = read_runs(args.runs)

    print(f"== BEFORE: {OLD.name} (the old default) ==")
    before = validate_runs(runs, costmodel=str(OLD), workers=args.workers)
    print(format_table(before))
    print(f"({before.wall_s:.0f} s)\n")

    print("== AFTER: the per-GPU defaults ==")
    after = validate_runs(runs, workers=args.workers)
    print(format_table(after))
    print(f"(validation of {len(runs)} runs: {after.wall_s:.0f} s)\n")
    print(mape_by(after, "model"))
    print()
    print(mape_by(after, "gpu"))
    print()

    ok = True
    if not args.skip_lomo:
        print("== leave-one-model-out ==")
        # each fold runs the committed model's whole fit procedure (FitOptions()); with
        # --lomo-quick only the client path is refined with the simulator
        opts = FitOptions(workers=args.workers)
        if args.lomo_quick:
            opts = FitOptions(sim_dynamic=(), workers=args.workers)
        lomo = leave_one_model_out(runs, opts, log=lambda m: print("  " + m, flush=True))
        print(lomo.format())
        mean = lomo.mean()
        for k, target in TARGETS.items():
            met = mean[k] <= target
            ok &= met
            print(
                f"target LOMO {k} MAPE <= {target:g}%: {mean[k]:.1f}% {'met' if met else 'NOT met'}"
            )
    if args.gpu_out:
        print("== leave-one-GPU-out (the committed fit procedure, FitOptions()) ==")
        for gpu in sorted({r.gpu for r in runs} - {"h100-80gb"}):
            rep = fit_serving([r for r in runs if r.gpu != gpu], FitOptions(workers=args.workers))
            held = validate_runs(
                [r for r in runs if r.gpu == gpu], cost_model=rep.model, workers=args.workers
            )
            m = held.mape()
            print(
                f"held out {gpu}: "
                + ", ".join(f"{k} {m[k]:.1f}%" for k in MAPE_METRICS)
                + f"; served stages simulated overloaded: {len(held.served_but_overloaded())}"
            )
        print()
    bad = after.served_but_overloaded()
    print(
        f"target no served stage simulated overloaded: {len(bad)} {'met' if not bad else 'NOT met'}"
    )
    fast = after.wall_s < 120
    print(
        f"target validation < 120 s: {after.wall_s:.0f} s {'met' if fast else 'NOT met (machine load?)'}"
    )
    return 0 if ok and not bad else 1


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"benchmark wall time {time.perf_counter() - t0:.0f} s")
    sys.exit(rc)
