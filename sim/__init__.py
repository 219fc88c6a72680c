"""agentsim: a discrete-event simulator of GPU inference clusters serving LLM agents.

The public Python API lives in :mod:`sim.api`: ``sim.run(trace, cluster, policies,
seed)`` returns a :class:`sim.api.Result` (``.summary``, ``.calls``, ``.sessions``,
``.timeline``, ``.plot_*()``, ``.save(dir)``) and ``sim.api.compare(...)`` runs
several policies on the same workload.  The command line lives in :mod:`sim.cli.main`.
``import sim`` stays light: the API and its dependencies load on first use.  It does
put the compiled event loop in place when ``make native`` built it and it is current
(:mod:`sim.common.native`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sim.common import native

__version__ = "0.1.0"

native.install()

if TYPE_CHECKING:
    from sim.api import Result


def run(*args: Any, **kwargs: Any) -> Result:
    """Simulate one trace; see :func:`sim.api.run` for the arguments."""
    from sim.api import run as _run

    return _run(*args, **kwargs)


def __getattr__(name: str) -> Any:
    """``sim.api`` without an explicit ``import sim.api`` (loaded on first access)."""
    if name == "api":
        import importlib

        return importlib.import_module("sim.api")
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
