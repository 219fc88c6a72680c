"""Small file helpers shared by the trace readers: transparent gzip, text mode."""

from __future__ import annotations

import gzip
from typing import IO

from sim.errors import InputError


def open_text(path: str) -> IO[str]:
    """Open ``path`` for reading text, decompressing ``.gz`` transparently."""
    try:
        if path.endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8")
        return open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, None, None, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, None, None, "is a directory, expected a file") from None
