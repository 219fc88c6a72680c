"""``agentsim calibrate record | replay | compare-e2e | serve``: the real-engine harness.

:func:`register` adds these subcommands to the ``calibrate`` group of
:mod:`sim.cli.calibrate`.

- ``record --engine torch|vllm --model NAME --grid GRID.toml -o records.jsonl``: time
  iteration shapes (resumable: rerunning continues where it stopped).
- ``record --engine http --url URL --trace TRACE -o records.jsonl``: replay a trace
  against an OpenAI-compatible streaming server, one ``call`` line per call.
- ``replay RECORDS... -o costmodel.toml [--check]``: rebuild a cost model from its records
  with the options stored in the existing TOML; ``--check`` compares the rebuild with the
  file value by value within the tolerances of :mod:`sim.calibration.check`.
- ``compare-e2e --records http.jsonl --costmodel FILE``: simulate the replayed trace on
  one replica and report simulated vs measured latency percentiles.
- ``serve --model NAME``: the OpenAI-compatible server of :mod:`sim.calibration.server`.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any

from sim.calibration.check import COEFFICIENT_RTOL, MAX_LISTED_OK, METRIC_ATOL
from sim.calibration.engines.devices import register_cpu
from sim.common.errors import AgentsimError, InputError

ENGINES = ("torch", "vllm", "http")


# long: flat argparse declarations of four subcommands, one argument per statement
def register(sub: Any) -> None:
    """Add ``record``, ``replay``, ``compare-e2e`` and ``serve`` to a subparsers object.

    Also registers the nominal ``"cpu"`` device (:mod:`sim.calibration.engines.devices`)
    so every ``calibrate`` command can fit and validate records measured on a CPU."""
    register_cpu()
    p = sub.add_parser(
        "record",
        help="time a real engine (torch, vllm, http) into a records file",
        description="Time real iterations over a grid (torch, vllm) or replay a trace against a server (http).",
    )
    p.add_argument("--engine", choices=ENGINES, required=True)
    p.add_argument(
        "--model",
        help="preset, HF alias or config.json path (torch, vllm; http: what the server runs)",
    )
    p.add_argument("--grid", help="grid TOML of shapes to time (torch, vllm)")
    p.add_argument(
        "-o", "--output", required=True, help="records file (.jsonl); appended to, resumable"
    )
    p.add_argument(
        "--device", choices=("cpu", "cuda"), help="torch: where to run (default: cuda if present)"
    )
    p.add_argument("--dtype", help="override the grid's dtype (auto, float32, float16, bfloat16)")
    p.add_argument("--layers", type=int, help="override the grid's decoder-layer count")
    p.add_argument(
        "--skip-memory-check",
        action="store_true",
        help="torch: build the model even when its estimated memory (weights + the grid's "
        "largest KV cache) exceeds what the device has free",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch on cpu: intra-op threads (default 1)"
    )
    p.add_argument(
        "--time-budget-s", type=float, help="stop starting shapes after this many seconds"
    )
    p.add_argument("--url", help="http: server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--trace", help="http: trace to replay")
    p.add_argument("--trace-format", help="http: trace format (auto-detected by default)")
    p.add_argument(
        "--api-model", help="http: model field of requests (default: the server's first model)"
    )
    p.add_argument(
        "--gpu", help="http: GPU key of the server's hardware (when the server does not report it)"
    )
    p.add_argument("--max-inflight", type=int, default=256, help="http: most concurrent requests")
    p.set_defaults(func=run_record)

    p = sub.add_parser(
        "replay",
        help="rebuild a cost model from its records (--check: is it the same model?)",
        description="Refit RECORDS with the name and fit options stored in the existing cost model (-o), "
        "or defaults when it does not exist yet.  With --check nothing is written: the rebuild must "
        f"equal the file value by value, fitted parameters within {COEFFICIENT_RTOL:g} relative and "
        f"validation errors within {METRIC_ATOL:g} percentage points (another CPU's BLAS moves a fit "
        "by ~1e-5); names, record hashes, "
        "counts and options exactly.  Each differing value is listed with both values, the relative "
        "difference and its tolerance.",
    )
    p.add_argument("records", nargs="+", help="records files the cost model was fitted from")
    p.add_argument("-o", "--output", required=True, help="cost model TOML to rebuild")
    p.add_argument(
        "--name", help="cost model name (default: the existing file's, else the file stem)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 unless the rebuild is the same model within tolerance",
    )
    p.set_defaults(func=run_replay)

    p = sub.add_parser(
        "compare-e2e",
        help="simulate an http replay on one replica and compare latencies",
        description="Simulate the trace of an http records file on one replica with a cost model and report "
        "simulated vs measured TTFT / ITL / end-to-end percentiles and their errors.",
    )
    p.add_argument("--records", required=True, help="records file written by record --engine http")
    p.add_argument("--costmodel", required=True, help="cost model TOML (or 'roofline')")
    p.add_argument(
        "--max-num-seqs", type=int, help="replica batch limit (default: the server's max_batch)"
    )
    p.add_argument(
        "--max-num-batched-tokens",
        type=int,
        help="token budget per iteration (default: the server's)",
    )
    p.add_argument("--json", dest="json_out", help="also write the comparison as JSON here")
    p.set_defaults(func=run_compare)

    from sim.calibration import server

    p = sub.add_parser(
        "serve", help="serve the torch engine over the OpenAI API (for http calibration)"
    )
    server.add_arguments(p)
    p.set_defaults(func=lambda a: server.serve(server.config_from_args(a)))


def _default_device() -> str:
    from sim.calibration.engines import require

    torch = require("torch")
    return "cuda" if torch.cuda.is_available() else "cpu"


def _output_parent(path: str) -> None:
    """Create the records file's directory up front (a missing one would otherwise
    fail only after the recording)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            path, None, None, f"cannot create its directory: {e.strerror or e}"
        ) from None


def check_records_output(path: str, inputs: list[str | None]) -> None:
    """Vet ``record -o`` before any work: a file whose folder can be created and
    written, not one of the command's inputs, and, when it exists and is not empty, a
    calibration records file (recording appends to it and resumes); anything else is
    refused, never appended to.  Raises :class:`InputError` (one line)."""
    import json

    from sim.calibration.records import FORMAT, _open_text
    from sim.common.io import check_not_input, check_output_file

    p = check_output_file(path, "--output")
    check_not_input(p, [i for i in inputs if i], "--output")
    if not p.is_file() or p.stat().st_size == 0:
        return
    try:
        with _open_text(p, "r") as fh:
            first = json.loads(fh.readline())
    except (OSError, EOFError, UnicodeDecodeError, ValueError):
        first = None
    if not (isinstance(first, dict) and first.get("format") == FORMAT):
        raise InputError(
            str(p),
            1,
            "--output",
            f"exists and is not a calibration records file (no {FORMAT!r} header); "
            "refusing to append to it (name a new file or an earlier recording)",
        )


def run_record(args: argparse.Namespace) -> int:
    model_file = args.model if args.model and Path(args.model).is_file() else None
    check_records_output(args.output, [args.grid, args.trace, model_file])
    _output_parent(args.output)
    if args.engine == "http":
        return _record_http(args)
    if not args.model or not args.grid:
        raise AgentsimError(f"record --engine {args.engine} needs --model and --grid")
    from dataclasses import replace

    from sim.calibration.engines.recorder import IterationEngine, record_grid
    from sim.calibration.grid import DTYPES, load_grid

    grid = load_grid(args.grid)
    if args.dtype is not None:
        if args.dtype not in DTYPES:
            raise AgentsimError(f"--dtype must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
        grid = replace(grid, dtype=args.dtype)
    if args.layers is not None:
        grid = replace(grid, layers=args.layers)
    factory: Any
    if args.engine == "torch":
        from sim.calibration.engines.torch_engine import TorchEngine, TorchEngineConfig

        cfg = TorchEngineConfig(
            model=args.model,
            device=args.device or _default_device(),
            dtype=grid.dtype,
            layers=grid.layers,
            min_context=grid.max_context,
            threads=args.threads,
        )
        if not args.skip_memory_check:
            _check_memory(cfg, grid.shapes)
        print(
            f"torch engine: {args.model} on {cfg.device}, {len(grid.shapes)} shapes x {len(grid.tp)} TP",
            flush=True,
        )
        engine = TorchEngine(cfg)
        engine.warm_up()

        def factory(tp: int) -> IterationEngine:
            return engine

    else:
        from sim.calibration.engines.vllm_engine import VllmEngine, VllmEngineConfig

        if args.device == "cpu":
            raise AgentsimError("the vllm engine runs on CUDA GPUs only")
        max_seqs = max(max(s.num_prefill_seqs, s.num_decode_seqs) for s in grid.shapes)
        max_tokens = max(s.num_prefill_seqs * s.prefill_len for s in grid.shapes)

        def factory(tp: int) -> IterationEngine:
            return VllmEngine(
                VllmEngineConfig(
                    model=args.model,
                    tp=tp,
                    dtype=grid.dtype,
                    layers=grid.layers,
                    max_num_seqs=max(max_seqs, 1),
                    max_num_batched_tokens=max(max_tokens, 2048),
                    max_model_len=grid.max_context + 16,
                )
            )

    summary = record_grid(factory, grid, args.output, time_budget_s=args.time_budget_s, log=_log)
    print(
        f"recorded {summary.measured} shapes into {summary.path} in {summary.wall_s:.1f} s "
        f"({summary.skipped} already there, {len(summary.unsupported)} unsupported, {summary.remaining} left)",
        flush=True,
    )
    return 0


def _check_memory(cfg: Any, shapes: Any) -> None:
    """Refuse (one line, exit 2) a torch recording whose model and largest KV cache
    would not fit in the device's free memory, before building anything."""
    from sim.calibration.engines import memory, resolve_model_config

    if cfg.layers is not None and cfg.layers < 1:
        return  # the engine reports it
    name, model_cfg = resolve_model_config(cfg.model)
    dtype = memory.resolve_dtype(cfg.dtype, cfg.device)
    available = memory.available_bytes(cfg.device)
    memory.check_fits(name, model_cfg, shapes, dtype, cfg.layers, cfg.device, available)


def _log(msg: str) -> None:
    print(msg, flush=True)


def _record_http(args: argparse.Namespace) -> int:
    if not args.url or not args.trace:
        raise AgentsimError("record --engine http needs --url and --trace")
    import json
    import time

    from sim.calibration.engines import agentsim_commit, resolve_model_config, utc_now
    from sim.calibration.engines.http_engine import HttpReplayConfig, replay, server_info
    from sim.calibration.records import RecordHeader, append_samples
    from sim.workload.traces import load_trace

    workload = load_trace(args.trace, args.trace_format)
    info = server_info(args.url)
    served = info.get("agentsim") if isinstance(info.get("agentsim"), dict) else None
    if served is not None:
        model, model_config = str(served["model"]), dict(served.get("model_config") or {})
        device, gpu = str(served.get("device", "cuda")), str(served.get("gpu", "unknown"))
    else:
        if not args.model:
            raise AgentsimError(
                "the server does not describe itself: pass --model (and --gpu, --device)"
            )
        model, model_config = resolve_model_config(args.model)
        device, gpu = args.device or "cuda", args.gpu or "unknown"
    extra: dict[str, Any] = {
        "url": args.url,
        "trace": Path(args.trace).name,
        "trace_calls": len(workload.calls),
        "api_model": args.api_model,
    }
    if served is not None:
        extra["server"] = served
    header = RecordHeader(
        engine="http",
        engine_version=str(served.get("engine_version")) if served else None,
        device=device,
        gpu=gpu,
        gpu_count=int(served.get("gpu_count", 1)) if served else 1,
        driver=served.get("driver") if served else None,
        torch_version=served.get("torch_version") if served else None,
        vllm_version=served.get("vllm_version") if served else None,
        model=model,
        model_config=model_config,
        dtype=str(served.get("dtype", "")) if served else "",
        tp=int(served.get("tp", 1)) if served else 1,
        layers_measured=served.get("layers_measured") if served else None,
        agentsim_commit=agentsim_commit(),
        created_utc=utc_now(),
        source="agentsim calibrate record --engine http",
        notes="end-to-end replay: one call line per trace call (closed loop, real arrival times)",
        extra=extra,
    )
    print(f"replaying {len(workload.calls)} calls of {args.trace} against {args.url}", flush=True)
    t0 = time.perf_counter()
    results = replay(
        workload,
        HttpReplayConfig(url=args.url, api_model=args.api_model, max_inflight=args.max_inflight),
    )
    wall = time.perf_counter() - t0
    append_samples(args.output, header, [])
    with open(args.output, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(m.to_json(), separators=(",", ":")) + "\n" for m in results))
    errors = [m for m in results if m.error]
    print(f"replayed in {wall:.1f} s; wrote {len(results)} call lines to {args.output}", flush=True)
    if errors:
        print(
            f"{len(errors)} calls failed, first: {errors[0].call.call_id}: {errors[0].error}",
            file=sys.stderr,
        )
        return 1
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from sim.calibration.check import compare_costmodels
    from sim.calibration.fit import FitOptions, fit_files

    out = Path(args.output)
    name = args.name
    options = FitOptions()
    old: bytes | None = None
    if args.check and not out.exists():
        print(f"{out}: does not exist (nothing to check the rebuild against)", file=sys.stderr)
        return 1
    if out.exists():
        old = out.read_bytes()
        try:
            doc = tomllib.loads(old.decode())
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise InputError(str(out), None, None, f"not a cost model TOML: {e}") from None
        name = name or doc.get("name")
        stored = doc.get("fit_options")
        if isinstance(stored, dict):
            known = set(FitOptions.__dataclass_fields__)
            unknown = sorted(set(stored) - known)
            if unknown:
                raise InputError(str(out), None, f"fit_options.{unknown[0]}", "unknown fit option")
            options = FitOptions(**stored)
    text = fit_files(args.records, name or out.stem, options).encode()
    src = ", ".join(args.records)
    report = None if old is None else compare_costmodels(old.decode(), text.decode())
    if args.check:
        assert report is not None
        if report.ok:
            print(f"{out}: the rebuild from {src} matches: {report.summary()}")
            for line in report.lines(MAX_LISTED_OK):
                print(f"  {line}")
            return 0
        print(f"{out}: the rebuild from {src} differs: {report.summary()}", file=sys.stderr)
        for line in report.lines():
            print(f"  {line}", file=sys.stderr)
        return 1
    from sim.common.io import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text.decode())
    note = ""
    if report is not None:
        note = (
            " (unchanged)"
            if report.identical
            else f" (previous file: {report.summary() if report.ok else 'differs: ' + report.summary()})"
        )
    print(f"wrote {out}{note}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from sim.calibration.compare_e2e import compare, format_comparison
    from sim.common.io import atomic_write_text, check_not_input, check_output_file

    if args.json_out:  # vetted before simulating; written whole or not at all
        check_output_file(args.json_out, "--json")
        check_not_input(args.json_out, [args.records, args.costmodel], "--json")
    cmp = compare(
        args.records,
        args.costmodel,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
    )
    print(format_comparison(cmp))
    if args.json_out:
        import json

        text = json.dumps(cmp.to_dict(), indent=2, sort_keys=True) + "\n"
        atomic_write_text(args.json_out, text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sim.calibration.harness_cli SUBCOMMAND ...``: the harness without the rest
    of the CLI (recording then needs only torch and transformers, e.g. on a GPU box)."""
    parser = argparse.ArgumentParser(prog="python -m sim.calibration.harness_cli")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AgentsimError as e:
        print(f"agentsim: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
