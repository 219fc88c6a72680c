"""The project's own error types.

Every problem caused by user input (a trace line, a config value, a policy name) is
raised as an :class:`AgentsimError` subclass whose message names where the problem is
(``path:line: field: what is wrong``).  The CLI prints the message on one line and
exits with status 2; it never shows a traceback for these.
"""

from __future__ import annotations


class AgentsimError(Exception):
    """Base class of every error agentsim raises for bad input or impossible configs."""


class InputError(AgentsimError):
    """A malformed input file: trace, config, record.  Names file, line and field."""

    def __init__(self, path: str, line: int | None, field: str | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        msg = f"{where}: {field}: {problem}" if field else f"{where}: {problem}"
        super().__init__(msg)


class ConfigError(AgentsimError):
    """A configuration that cannot work (model does not fit, unknown GPU, bad TP)."""


class PolicyError(AgentsimError):
    """Unknown policy name, bad policy parameters, or a policy returning an invalid decision."""
