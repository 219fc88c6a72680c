"""Where the embedded defaults live (the default trace, example configs).

The default trace is ``traces/default.jsonl`` in a checkout; a built wheel carries the
same file as package data, ``sim/data/default.jsonl`` (copied there by setup.py's
``build_py``), because an installed package has no ``traces/`` beside it.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = Path("results")


def _default_trace() -> Path:
    checkout = REPO_ROOT / "traces" / "default.jsonl"
    if checkout.exists():
        return checkout
    return Path(str(files("sim") / "data" / "default.jsonl"))


DEFAULT_TRACE = _default_trace()
