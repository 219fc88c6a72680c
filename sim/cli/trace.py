"""``agentsim trace``: convert, inspect, synthesise and sample traces.

* ``trace convert --from FMT IN -o OUT``: any supported format to canonical JSONL
  (streaming from reader to writer where the format allows);
* ``trace stats PATH [--json]``: volume, timing, tokens, sessions, prefix reuse, and
  the reader's lines-read vs calls-produced account;
* ``trace synth CONFIG.toml -o OUT``: a seeded synthetic agent workload;
* ``trace sample IN --sessions N -o OUT``: whole sessions out of a trace.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from sim.common.errors import InputError
from sim.common.io import atomic_write_stream, check_not_input, check_output_file
from sim.workload.traces import FORMATS, TraceOptions, detect_format, load_trace, stream_trace
from sim.workload.traces.canonical import HEADER_KEY, write_canonical
from sim.workload.traces.estimate import ServiceEstimate
from sim.workload.traces.generic import ColumnMap
from sim.workload.traces.sample import retime_sessions, sample_sessions
from sim.workload.traces.sessions import SHARED_FANOUT
from sim.workload.traces.stats import format_stats, trace_stats
from sim.workload.traces.synth import generate, load_synth_config


def add_reader_arguments(p: argparse.ArgumentParser, flag: str = "--trace-format") -> None:
    """Add ``--trace-format`` (or ``--from``) and the reader options to a parser;
    :func:`reader_options` turns the parsed arguments into :class:`TraceOptions`."""
    names = list(FORMATS)
    if flag == "--from":
        p.add_argument(
            "--from",
            "--trace-format",
            dest="trace_format",
            choices=names,
            help="input format (auto-detected by default)",
        )
    else:
        p.add_argument(
            "--trace-format", choices=names, help="input format (auto-detected by default)"
        )
    g = p.add_argument_group("reader options")
    g.add_argument(
        "--no-sessions",
        action="store_true",
        help="mooncake: keep every request its own session (no reconstruction)",
    )
    g.add_argument(
        "--shared-fanout",
        type=int,
        default=SHARED_FANOUT,
        metavar="N",
        help=f"mooncake: a prefix node branching N+ ways is a shared prompt, not a conversation (default {SHARED_FANOUT})",
    )
    g.add_argument(
        "--columns",
        metavar="ROLE=COL,...",
        help="csv: column mapping, roles time,input,output[,session][,model] (default: common names)",
    )
    g.add_argument(
        "--time-unit",
        default="s",
        help="csv: unit of the time column: s, ms, us, ns or iso (default s)",
    )
    est = ServiceEstimate()
    g.add_argument(
        "--est-ttft",
        type=float,
        default=est.ttft_s,
        metavar="S",
        help=f"service-time estimate used for gaps: first-token seconds (default {est.ttft_s})",
    )
    g.add_argument(
        "--est-tpot",
        type=float,
        default=est.tpot_s,
        metavar="S",
        help=f"service-time estimate used for gaps: seconds per output token (default {est.tpot_s})",
    )


def reader_options(args: argparse.Namespace) -> TraceOptions:
    """The :class:`TraceOptions` of arguments added by :func:`add_reader_arguments`."""
    cols = None
    if args.columns:
        cols = ColumnMap.parse(args.columns, args.time_unit)
    elif args.time_unit != "s":
        raise InputError(
            "--time-unit", None, None, "needs --columns to say which column it applies to"
        )
    if args.est_ttft < 0 or args.est_tpot < 0:
        raise InputError("--est-ttft/--est-tpot", None, None, "must be >= 0")
    if args.shared_fanout < 2:
        raise InputError("--shared-fanout", None, None, "must be >= 2")
    return TraceOptions(
        est=ServiceEstimate(args.est_ttft, args.est_tpot),
        sessions=not args.no_sessions,
        shared_fanout=args.shared_fanout,
        columns=cols,
    )


def register(sub: Any) -> None:
    p = sub.add_parser("trace", help="convert, inspect, synthesise and sample traces")
    tsub = p.add_subparsers(dest="trace_command", metavar="SUBCOMMAND")
    tsub.required = True

    c = tsub.add_parser("convert", help="convert a trace to the canonical agentsim format")
    c.add_argument(
        "input", metavar="IN", help="trace file, or a directory of per-session files (plain or .gz)"
    )
    c.add_argument(
        "-o", "--out", required=True, metavar="OUT.jsonl", help="output (.jsonl, or .jsonl.gz)"
    )
    c.add_argument(
        "--attribution", default="", help="attribution/license text stored in the output header"
    )
    add_reader_arguments(c, "--from")
    c.set_defaults(func=run_convert)

    s = tsub.add_parser("stats", help="summary statistics of a trace")
    s.add_argument("path", metavar="PATH")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    add_reader_arguments(s)
    s.set_defaults(func=run_stats)

    y = tsub.add_parser("synth", help="generate a synthetic agent workload from a TOML config")
    y.add_argument("config", metavar="CONFIG.toml")
    y.add_argument("-o", "--out", required=True, metavar="OUT.jsonl")
    y.add_argument("--seed", type=int, help="override the config's seed")
    y.add_argument("--sessions", type=int, help="override the config's session count")
    y.set_defaults(func=run_synth)

    m = tsub.add_parser("sample", help="keep N whole sessions of a trace")
    m.add_argument("input", metavar="IN")
    m.add_argument("--sessions", type=int, required=True, metavar="N")
    m.add_argument("-o", "--out", required=True, metavar="OUT")
    m.add_argument(
        "--seed", type=int, help="draw sessions at random with this seed (default: the first N)"
    )
    m.add_argument("--max-calls", type=int, metavar="K", help="only sessions of at most K calls")
    m.add_argument(
        "--rate",
        type=float,
        metavar="R",
        help="re-time session starts as a Poisson process of R sessions/s",
    )
    add_reader_arguments(m)
    m.set_defaults(func=run_sample)


def _fmt_of(args: argparse.Namespace, path: str) -> str:
    if not Path(path).exists():
        raise InputError(path, None, None, "file not found")
    return str(args.trace_format or detect_format(path))


def _check_out(args: argparse.Namespace, *inputs: str) -> None:
    """Vet ``-o`` before reading anything: a writable file path that is not an input
    (nor inside an input directory)."""
    check_output_file(args.out)
    check_not_input(args.out, inputs)


def _write(calls: Any, out: str, header: dict[str, Any]) -> int:
    """Write canonical JSONL to ``out`` atomically (nothing is left behind when the
    reader fails half-way or on Ctrl-C); returns the number of calls."""
    return atomic_write_stream(out, lambda fh: write_canonical(calls, fh, header))


def run_convert(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    _check_out(args, args.input)
    fmt = _fmt_of(args, args.input)
    st = stream_trace(args.input, fmt, reader_options(args))
    header: dict[str, Any] = {"source": Path(args.input).name, **st.meta}
    if args.attribution:
        header["attribution"] = args.attribution
    n = _write(st.calls, args.out, header)
    r = st.report
    skipped = sum(r.skipped.values())
    print(
        f"{args.input} ({fmt}): {r.files} file(s), {r.lines:,} lines, {r.records:,} records -> "
        f"{n:,} calls ({skipped:,} skipped) in {args.out} [{time.perf_counter() - t0:.2f} s]",
        file=sys.stderr,
    )
    for why, k in {**r.skipped, **r.notes}.items():
        print(f"  {why}: {k:,}", file=sys.stderr)
    return 0


def run_stats(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    w = load_trace(args.path, _fmt_of(args, args.path), reader_options(args))
    stats = trace_stats(w)
    if args.json:
        print(json.dumps(stats.as_dict(), indent=1, sort_keys=True))
    else:
        print(format_stats(stats, args.path))
        print(f"(loaded and summarised in {time.perf_counter() - t0:.2f} s)")
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from dataclasses import asdict, replace

    _check_out(args, args.config)
    cfg = load_synth_config(args.config)
    if args.seed is not None:
        cfg = replace(cfg, seed=args.seed)
    if args.sessions is not None:
        if args.sessions < 1:
            raise InputError("--sessions", None, None, "must be >= 1")
        cfg = replace(cfg, sessions=args.sessions)
    try:
        n = _write(
            generate(cfg),
            args.out,
            {
                "source": f"synth:{Path(args.config).name}",
                "format": "synth",
                "seed": cfg.seed,
                "service_estimate": asdict(cfg.estimate),
            },
        )
    except ValueError as e:
        raise InputError(args.config, None, "arrivals", str(e)) from None
    print(f"{args.config}: {cfg.sessions} sessions -> {n:,} calls in {args.out}", file=sys.stderr)
    return 0


def run_sample(args: argparse.Namespace) -> int:
    if args.sessions < 1:
        raise InputError("--sessions", None, None, "must be >= 1")
    _check_out(args, args.input)
    fmt = _fmt_of(args, args.input)
    w = load_trace(args.input, fmt, reader_options(args))
    calls = sample_sessions(w, args.sessions, args.seed, args.max_calls)
    if args.rate is not None:
        if args.rate <= 0:
            raise InputError("--rate", None, None, "must be > 0")
        calls = retime_sessions(calls, args.rate, args.seed or 0)
    header: dict[str, Any] = {
        **{
            k: v
            for k, v in w.meta.items()
            if k not in ("read", "skipped", HEADER_KEY, "reconstruction")
        },
        "source": w.meta.get("source") or Path(args.input).name,
        "sampled_from": Path(args.input).name,
        "format": "agentsim",
        "sampled_sessions": args.sessions,
    }
    if args.seed is not None:
        header["sample_seed"] = args.seed
    if args.rate is not None:
        header["retimed_sessions_per_s"] = args.rate
    n = _write(calls, args.out, header)
    print(
        f"{args.input}: kept {len({c.session_id for c in calls})} sessions, {n:,} calls -> {args.out}",
        file=sys.stderr,
    )
    return 0
