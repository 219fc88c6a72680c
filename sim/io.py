"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted run (Ctrl-C, crash) never leaves a half-written result file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    # mkstemp creates the file private (0600); results get the usual permissions
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    def w(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    atomic_write(path, w)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_toml(path: str | Path) -> tuple[dict[str, Any], str]:
    """Read a UTF-8 TOML file; returns the document and its text.

    Every failure (missing file, unreadable, not UTF-8, invalid TOML) raises
    :class:`~sim.errors.InputError` naming the file and, where known, the line.
    """
    import re
    import tomllib

    from sim.errors import InputError

    p = str(path)
    try:
        data = Path(p).read_bytes()
    except FileNotFoundError:
        raise InputError(p, None, None, "file not found") from None
    except OSError as e:
        raise InputError(p, None, None, f"cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(p, line, None, f"not UTF-8 text (byte {e.start}: {e.reason})") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"at line (\d+)", str(e))
        raise InputError(p, int(m.group(1)) if m else None, None, f"invalid TOML: {e}") from None
