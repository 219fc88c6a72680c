"""The compiled event loop: the engine's hottest modules built with mypyc, when current.

``make native`` (a step of ``make install``, ``make run``, ``make test``, ...) runs
``scripts/build_native.py``, which compiles :data:`MODULES` from their unchanged
sources with mypyc into ``build/native/`` and writes ``build/native/manifest.json``
last: each module's source SHA-256, the interpreter the build is for, the compiled
files.  At ``import sim``, :func:`install` puts a finder first on ``sys.meta_path``
that imports those modules from the build, but only while every source still has the
digest it was built from and the interpreter matches; otherwise the plain Python
modules run.  ``AGENTSIM_NATIVE=0`` turns the build off (a profiler then sees the
engine's Python frames).

The compiled modules are the same source, so they compute the same results (C doubles
are Python floats, integers stay unbounded; the build turns off fused multiply-add so
every CPU rounds as Python does).  ``tests/test_native.py`` runs the same scenarios
both ways and compares the output files byte for byte.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

#: the modules compiled by ``make native``: the replica's scheduler and its KV cache,
#: where a run spends most of its event loop, and the cluster and the driver around them
MODULES = ("sim.engine.kvcache", "sim.engine.replica", "sim.cluster.cluster", "sim.simulation")
#: mypyc's shared library for the group is the top-level module ``GROUP + "__mypyc"``
GROUP = "agentsim_native"
ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "native"
MANIFEST = BUILD / "manifest.json"
ENV = "AGENTSIM_NATIVE"

#: why the compiled modules are (``"on"``) or are not in use; set by :func:`install`
state = "not checked"


def source_of(module: str) -> Path:
    """The checkout's source file of a dotted module name."""
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def abi() -> str:
    """The interpreter a build is for: its cache tag and extension-module suffix."""
    return f"{sys.implementation.cache_tag}{importlib.machinery.EXTENSION_SUFFIXES[0]}"


class _Finder:
    """Imports each compiled module (and the group's shared library) from its file (a
    meta path finder needs only ``find_spec``; ``importlib.abc`` costs 11 ms to import)."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        f = self.files.get(fullname)
        return None if f is None else importlib.util.spec_from_file_location(fullname, f)


def check(manifest: Path = MANIFEST) -> tuple[dict[str, Path] | None, str]:
    """The compiled files to import, by module name, or None; and why (``"on"`` or
    the reason the plain modules run).  Never raises: whatever is in ``build/``, a
    manifest that cannot be read only means the plain modules run."""
    if os.environ.get(ENV, "1") == "0":
        return None, f"off ({ENV}=0)"
    try:
        m = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, "not built (make native)"
    try:
        return _files(m, manifest.parent)
    except (AttributeError, KeyError, TypeError, ValueError, OSError) as e:
        return None, f"unreadable {manifest.name} ({type(e).__name__}: {e}; make native)"


def _files(m: dict[str, Any], build: Path) -> tuple[dict[str, Path] | None, str]:
    """:func:`check` of a parsed manifest (``build``: its directory)."""
    if not m.get("built"):
        return None, f"not built: {m.get('reason', 'unknown')}"
    if m.get("abi") != abi():
        return None, f"built for another interpreter ({m.get('abi')}; make native)"
    files: dict[str, Path] = {}
    for name, entry in m["modules"].items():
        src = source_of(name)
        if not src.exists() or digest(src) != entry["source_sha256"]:
            return None, f"stale: {src.relative_to(ROOT)} changed since the build (make native)"
        files[name] = build / entry["file"]
    files[GROUP + "__mypyc"] = build / m["group_file"]
    if set(m["modules"]) != set(MODULES) or not all(f.exists() for f in files.values()):
        return None, "incomplete build (make native)"
    return files, "on"


def install() -> str:
    """Serve :data:`MODULES` from the current build, if there is one (idempotent, and a
    no-op once any of them was imported as Python).  Returns :data:`state`."""
    global state
    if state != "not checked":
        return state
    files, state = check()
    if files is not None:
        if any(name in sys.modules for name in MODULES):
            state = "off (the Python modules were imported first)"
        else:
            sys.meta_path.insert(0, _Finder(files))
    return state
