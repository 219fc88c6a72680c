"""``agentsim costmodel predict``: iteration times of batch shapes from a cost model.

``IN.csv`` has columns ``num_prefill_seqs,prefill_len,num_decode_seqs,decode_context_len``
(an iteration prefilling ``num_prefill_seqs`` sequences of ``prefill_len`` new tokens
and decoding ``num_decode_seqs`` sequences with ``decode_context_len`` tokens of context
each); ``OUT.csv`` repeats them and adds ``iteration_s`` (seconds).
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

from sim.common.errors import ConfigError, InputError

COLUMNS = ("num_prefill_seqs", "prefill_len", "num_decode_seqs", "decode_context_len")


def register(sub: Any) -> None:
    group = sub.add_parser("costmodel", help="query cost models")
    gsub = group.add_subparsers(dest="costmodel_command", metavar="SUBCOMMAND")
    gsub.required = True
    p = gsub.add_parser("predict", help="iteration time of each batch shape in a CSV")
    p.add_argument(
        "--model", help="preset (llama-2-7b, ...) or HF name (meta-llama/Llama-2-70b-hf)"
    )
    p.add_argument("--model-config", help="a Hugging Face config.json (instead of --model)")
    p.add_argument("--gpu", default="a100-80gb", help="GPU type (default a100-80gb)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel degree (default 1)")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel degree (default 1)")
    p.add_argument(
        "--dtype",
        choices=("fp16", "bf16", "fp8"),
        help="weight and KV precision (as agentsim run's --dtype; default: the model's own); "
        "fp8 = 1 byte per weight and per KV element and FP8 tensor-core GEMMs (not on A100)",
    )
    p.add_argument(
        "--kv-cache-dtype",
        choices=("auto", "fp16", "bf16", "fp8"),
        help="KV-cache precision (default auto: --dtype when given, else the model's own)",
    )
    p.add_argument(
        "--link",
        default="nvlink",
        choices=("nvlink", "pcie", "network"),
        help="TP interconnect (default nvlink: the GPU's NVLink bandwidth)",
    )
    p.add_argument(
        "--costmodel",
        help="cost model TOML of any kind (default: the GPU's calibrated default, as agentsim run)",
    )
    p.add_argument("--shapes", required=True, help="input CSV of batch shapes")
    p.add_argument("-o", "--output", required=True, help="output CSV (input columns + iteration_s)")
    p.set_defaults(func=run_predict)


def _read_shapes(path: str) -> list[dict[str, int]]:
    rows: list[dict[str, int]] = []
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(path, 1, missing[0], f"missing column (need {','.join(COLUMNS)})")
            for line, row in enumerate(reader, start=2):
                shape: dict[str, int] = {}
                for c in COLUMNS:
                    try:
                        v = int(str(row[c]).strip())
                    except ValueError:
                        raise InputError(path, line, c, f"not an integer: {row[c]!r}") from None
                    if v < 0:
                        raise InputError(path, line, c, f"must be >= 0, got {v}")
                    shape[c] = v
                rows.append(shape)
    except OSError as e:
        raise InputError(path, None, None, f"cannot read: {e.strerror or e}") from None
    return rows


def run_predict(args: argparse.Namespace) -> int:
    from sim.calibration.validate import iteration_batch
    from sim.common.io import atomic_write, check_not_input, check_output_file
    from sim.costmodel.base import ReplicaHardware
    from sim.costmodel.loader import resolve_cost_model
    from sim.specs.hardware import GPUS, get_gpu
    from sim.specs.models import get_model, load_model_config

    if bool(args.model) == bool(args.model_config):
        raise ConfigError("give exactly one of --model and --model-config")
    out = check_output_file(args.output, "--output")
    check_not_input(out, [i for i in (args.shapes, args.costmodel, args.model_config) if i])
    spec = load_model_config(args.model_config) if args.model_config else get_model(args.model)
    gpu = get_gpu(args.gpu)
    if (
        args.dtype == "fp8" and not gpu.supports_fp8
    ):  # as a deployment's dtype (sim/cluster/config.py)
        raise ConfigError(
            f"--dtype fp8 needs FP8 tensor cores, which {args.gpu} does not have "
            f"(GPUs with FP8: {', '.join(n for n, g in GPUS.items() if g.supports_fp8)})"
        )
    spec = spec.with_dtype(args.dtype or "", args.kv_cache_dtype or "")
    link_bw = {"nvlink": gpu.nvlink_bandwidth, "pcie": gpu.pcie_bandwidth, "network": 25e9}[
        args.link
    ]
    hw = ReplicaHardware(
        model=spec,
        gpu=gpu,
        tp=args.tp,
        pp=args.pp,
        allreduce_bandwidth=link_bw,
        allreduce_latency=5e-6 if args.link != "network" else 1e-5,
        link=args.link,
        pp_bandwidth=link_bw,
        pp_latency=5e-6,
    )
    # the same model `agentsim run` uses for this GPU unless --costmodel names one
    model = resolve_cost_model(args.costmodel, args.gpu)
    it = model.for_replica(hw)
    shapes = _read_shapes(args.shapes)
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow([*COLUMNS, "iteration_s"])
    for s in shapes:
        t = it.iteration_time(iteration_batch({k: float(v) for k, v in s.items()}))
        w.writerow([*(s[c] for c in COLUMNS), repr(t)])
    # written whole or not at all (a failure or Ctrl-C leaves no partial CSV)
    atomic_write(out, lambda tmp: Path(tmp).write_text(buf.getvalue(), "utf-8", newline=""))
    prec = f" {args.dtype}" if args.dtype else ""
    prec += f" (KV {args.kv_cache_dtype})" if args.kv_cache_dtype not in (None, "auto") else ""
    print(
        f"{out}: {len(shapes)} shapes, cost model {model.name}, {spec.name}{prec} on "
        f"{gpu.name} TP={args.tp}"
    )
    return 0
