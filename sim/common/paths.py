"""Where the embedded defaults live (the default trace, example configs)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TRACE = REPO_ROOT / "traces" / "default.jsonl"
RESULTS_DIR = Path("results")
