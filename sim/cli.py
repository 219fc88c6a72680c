"""The ``agentsim`` command line.

Each command group lives in its own module under :mod:`sim.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable taking the
parsed namespace and returning an exit code).  Errors that are the user's
(:class:`~sim.errors.AgentsimError`) print as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sim import __version__
from sim.errors import AgentsimError

#: Command modules, in the order their commands appear in ``agentsim --help``.
COMMAND_MODULES = (
    "sim.commands.run",
    "sim.commands.compare",
    "sim.commands.report",
    "sim.commands.policies",
    "sim.commands.calibrate",
    "sim.commands.validate",
    "sim.commands.costmodel",
    "sim.commands.trace",
    "sim.commands.sweep",
    "sim.commands.regress",
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
    if command is not None and f"sim.commands.{command}" in COMMAND_MODULES:
        mods = (f"sim.commands.{command}",)
    for mod in mods:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AgentsimError as e:
        print(f"agentsim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("agentsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
