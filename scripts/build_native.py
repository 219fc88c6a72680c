"""Compile the event loop's hottest modules with mypyc (``make native``).

Builds :data:`sim.common.native.MODULES` into ``build/native/`` and writes
``build/native/manifest.json`` last (atomically): each module's source SHA-256, the
interpreter, the compiled files.  ``import sim`` uses the build only while it matches
the sources (see :mod:`sim.common.native`).  When mypyc or a C compiler is missing, or
the build fails, the manifest says why and agentsim runs the same modules as Python:
slower, with identical results.  Exit status 0 either way, so ``make install`` works
on a machine without a compiler.

Choices, each for the results staying byte-identical and the build quick:
- ``-ffp-contract=off``: no fused multiply-add, which some compilers and CPUs (clang,
  arm64) would otherwise use, rounding once where Python rounds twice;
- mypy follows no imports outside the compiled modules (types from other modules are
  ``Any`` to mypyc): the build type-checks two files in seconds instead of the whole
  import graph, pandas' stubs included, in minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.common import native  # noqa: E402

MYPY_CONFIG = """\
[mypy]
python_version = {major}.{minor}
ignore_missing_imports = True
follow_imports = skip
"""


def write_manifest(entry: dict[str, object]) -> None:
    native.BUILD.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=native.BUILD, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(entry, f, indent=2)
        f.write("\n")
    os.replace(tmp, native.MANIFEST)


def compiled_file(module: str, out: Path) -> Path:
    from importlib.machinery import EXTENSION_SUFFIXES

    for suffix in EXTENSION_SUFFIXES:
        f = out.joinpath(*module.split(".")).with_name(module.rsplit(".", 1)[-1] + suffix)
        if f.exists():
            return f
    raise FileNotFoundError(f"mypyc built no extension for {module} under {out}")


def build() -> dict[str, object]:
    """Compile into a fresh directory; returns the manifest entry of the build."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    out = native.BUILD / "lib"
    shutil.rmtree(native.BUILD, ignore_errors=True)
    native.BUILD.mkdir(parents=True)
    ini = native.BUILD / "mypy.ini"
    ini.write_text(MYPY_CONFIG.format(major=sys.version_info[0], minor=sys.version_info[1]))
    sources = {m: native.source_of(m) for m in native.MODULES}
    digests = {m: native.digest(p) for m, p in sources.items()}  # before compiling
    os.environ["CFLAGS"] = (os.environ.get("CFLAGS", "") + " -ffp-contract=off").strip()
    cwd = os.getcwd()
    os.chdir(ROOT)  # mypyc names modules by their path from here
    try:
        ext = mypycify(
            ["--config-file", str(ini), *(str(p.relative_to(ROOT)) for p in sources.values())],
            opt_level="3",
            group_name=native.GROUP,
            target_dir=str(native.BUILD / "c"),
        )
        dist = Distribution({"name": "agentsim-native", "ext_modules": ext})
        cmd = dist.get_command_obj("build_ext")
        cmd.build_lib = str(out)  # type: ignore[attr-defined]
        cmd.build_temp = str(native.BUILD / "tmp")  # type: ignore[attr-defined]
        dist.run_command("build_ext")
    finally:
        os.chdir(cwd)
    return {
        "built": True,
        "abi": native.abi(),
        "group_file": str(compiled_file(native.GROUP + "__mypyc", out).relative_to(native.BUILD)),
        "modules": {
            m: {
                "source_sha256": digests[m],
                "file": str(compiled_file(m, out).relative_to(native.BUILD)),
            }
            for m in native.MODULES
        },
    }


def main() -> int:
    t0 = time.perf_counter()
    try:
        entry = build()
    except Exception as e:  # no mypyc, no compiler, a compile error: run as Python
        traceback.print_exc()
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        write_manifest({"built": False, "reason": reason})
        print(
            f"agentsim: the compiled event loop was not built ({reason}); agentsim runs "
            "its engine as plain Python (slower, same results)",
            file=sys.stderr,
        )
        return 0
    write_manifest(entry)
    print(f"agentsim: compiled {', '.join(native.MODULES)} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # skip the interpreter's teardown of mypy's type graph (about 90 s after a build)
    os._exit(rc)
