"""The ``agentsim`` command line.

Each command group lives in its own module under :mod:`sim.cli` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable taking the
parsed namespace and returning an exit code).  Errors that are the user's
(:class:`~sim.common.errors.AgentsimError`) print as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence

from sim import __version__
from sim.common.errors import AgentsimError

#: Command modules, in the order their commands appear in ``agentsim --help``.
COMMAND_MODULES = (
    "sim.cli.run",
    "sim.cli.compare",
    "sim.cli.report",
    "sim.cli.policies",
    "sim.cli.calibrate",
    "sim.cli.validate",
    "sim.cli.costmodel",
    "sim.cli.trace",
    "sim.cli.sweep",
    "sim.cli.regress",
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``command`` alone (its module is then the
    only one imported: ``agentsim run`` starts without the calibration server, the
    sweep machinery and the rest)."""
    parser = argparse.ArgumentParser(
        prog="agentsim",
        description="Simulate GPU inference clusters serving LLM agent workloads.",
    )
    parser.add_argument("--version", action="version", version=f"agentsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    mods: tuple[str, ...] = COMMAND_MODULES
    if command is not None and f"sim.cli.{command}" in COMMAND_MODULES:
        mods = (f"sim.cli.{command}",)
    for mod in mods:
        importlib.import_module(mod).register(sub)
    return parser


#: Destinations of the flags that name an output file or directory.
OUTPUT_DESTS = ("out", "output")


def _path_values(args: argparse.Namespace) -> list[str]:
    """Every non-empty string argument (or list element) except the outputs."""
    vals: list[str] = []
    for k, v in vars(args).items():
        if k in OUTPUT_DESTS or k == "func":
            continue
        for x in v if isinstance(v, list | tuple) else [v]:
            if isinstance(x, str) and x:
                vals.append(x)
    return vals


def check_outputs_are_not_inputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output (``--out``, ``-o``) that is the same file as
    an input of the command (also through a symlink or a hard link)."""
    from sim.common.io import check_not_input

    inputs = None
    for dest in OUTPUT_DESTS:
        out = getattr(args, dest, None)
        if isinstance(out, str) and out:
            if inputs is None:
                inputs = [v for v in _path_values(args) if os.path.exists(v)]
            flag = "--out" if dest == "out" else "--output"
            check_not_input(out, inputs, flag=flag)


class _Interrupts:
    """Ctrl-C while a command runs: remembered, then raised as KeyboardInterrupt.

    Remembering it matters when the interrupt lands inside C code that turns it into
    another exception (matplotlib's renderer reports "Invalid bounding box"): the
    command still ends as interrupted, not with that error's traceback."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, signum: int, frame: object) -> None:
        self.seen = True
        raise KeyboardInterrupt


def _import_command(command: str | None, program: bool) -> argparse.ArgumentParser:
    """:func:`build_parser` (which imports the command's module and, through it,
    pandas, numpy, pyarrow, networkx, ...).  In a ``program`` (the process is this one
    command) the cyclic garbage collector is off meanwhile and what was imported is
    then frozen (:func:`gc.freeze`): imports make no garbage cycles, yet their
    allocations set off full collections (about 50 ms of a ``run``), and every later
    full collection would rescan the modules' objects again."""
    if not program:
        return build_parser(command)
    enabled = gc.isenabled()
    gc.disable()
    try:
        return build_parser(command)
    finally:
        if enabled:
            gc.enable()
        gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 a check failed, 2 a user
    error printed on one line, 130 interrupted: Ctrl-C at any point after this
    function starts prints one line, never a traceback, and leaves no partial output).

    ``argv`` None means the command line of this process (the ``agentsim``
    executable, ``python -m sim.cli``), which ends when this returns: then every
    object left is frozen on the way out (:func:`gc.freeze`), so the interpreter's
    final collection does not walk a simulation's heap (about 0.1 s after a run of
    20k calls) only to free memory the process gives back anyway.  Callers that go
    on (tests, scripts) pass ``argv`` and keep the collector as it was."""
    program = argv is None
    interrupts = _Interrupts()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupts) if main_thread else None
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        parser = _import_command(argv[0] if argv else None, program)
        args = parser.parse_args(argv)
        check_outputs_are_not_inputs(args)
        return int(args.func(args) or 0)
    except AgentsimError as e:
        print(f"agentsim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("agentsim: interrupted", file=sys.stderr)
        return 130
    except Exception:
        if not interrupts.seen:
            raise
        print("agentsim: interrupted", file=sys.stderr)
        return 130
    finally:
        if main_thread and previous is not None:
            # A program ends when this returns: a Ctrl-C from now on has nothing left to
            # interrupt (the outputs are complete, or were never written), and must not
            # turn a finished run into a -SIGINT exit during the interpreter's teardown.
            signal.signal(signal.SIGINT, signal.SIG_IGN if program else previous)
        if program:
            gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
