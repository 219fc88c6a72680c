"""agentsim: a discrete-event simulator of GPU inference clusters serving LLM agents.

The public Python API lives in :mod:`sim.api` (``sim.run``); the command line in
:mod:`sim.cli`.
"""

__version__ = "0.1.0"
