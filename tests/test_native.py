"""The compiled event loop (``make native``, :mod:`sim.common.native`).

The mypyc build of the engine must give byte-identical outputs to the Python modules,
and must never be used once a compiled module's source changed."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from sim.common import native
from tests.helpers import load_file

ROOT = Path(__file__).resolve().parents[1]

#: golden scenarios that exercise the compiled paths: chunked prefill and prefix hits,
#: preemption, retention pins and the host tier, faults, a synthetic agent mix, two
#: models on one cluster, Kubernetes-style routing with autoscaling
SCENARIOS = {"default", "mooncake-preempt", "magagent-infercept", "miniswe-host", "faults-node",
             "synth-mixed", "multi-model", "k8s"}  # fmt: skip


def _golden() -> Any:
    return load_file("golden", ROOT / "scripts" / "golden.py")


def _can_build() -> bool:
    """Whether this machine has what ``make native`` needs: mypyc, a C compiler and
    the interpreter's headers (without them agentsim runs as Python, by design)."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return (
        importlib.util.find_spec("mypyc") is not None
        and shutil.which(cc) is not None
        and headers.exists()
    )


def _require_build() -> None:
    if native.state != "on":
        # CI runs `make test`, which runs `make native` first: where the machine can
        # build it, a build not in use is a broken build, not a reason to skip
        if os.environ.get("CI") and _can_build():
            pytest.fail(f"the compiled event loop is not in use in CI: {native.state}")
        pytest.skip(f"the compiled event loop is not in use: {native.state}")


def test_the_engine_modules_are_the_compiled_ones_when_built() -> None:
    _require_build()
    for name in native.MODULES:
        mod = importlib.import_module(name)
        assert Path(mod.__file__ or "").suffix in (".so", ".pyd"), name


def test_compiled_and_python_engines_write_identical_files(monkeypatch: Any) -> None:
    """Every deterministic output file (summary, calls, sessions, timeline, replicas)
    of each scenario hashes the same with the compiled modules and without them."""
    _require_build()
    golden = _golden()
    compiled = golden.run_all(SCENARIOS)
    monkeypatch.setenv(native.ENV, "0")
    python = golden.run_all(SCENARIOS)
    assert set(compiled) == set(python) and len(compiled) >= 4  # (data-less ones skip)
    assert compiled == python


def _manifest(tmp_path: Path, **change: Any) -> Path:
    """A manifest of a complete build in ``tmp_path`` (empty stand-in files)."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "group.so").touch()
    modules = {}
    for name in native.MODULES:
        (lib / f"{name}.so").touch()
        modules[name] = {
            "source_sha256": native.digest(native.source_of(name)),
            "file": f"lib/{name}.so",
        }
    entry = {"built": True, "abi": native.abi(), "group_file": "lib/group.so",
             "modules": modules, **change}  # fmt: skip
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(entry))
    return path


def test_a_current_build_is_used(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv(native.ENV, raising=False)
    files, why = native.check(_manifest(tmp_path))
    assert why == "on" and files is not None
    assert set(files) == {*native.MODULES, native.GROUP + "__mypyc"}


def test_a_changed_source_turns_the_build_off(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv(native.ENV, raising=False)
    m = _manifest(tmp_path)
    entry = json.loads(m.read_text())
    entry["modules"][native.MODULES[-1]]["source_sha256"] = "0" * 64
    m.write_text(json.dumps(entry))
    files, why = native.check(m)
    assert files is None and why.startswith("stale:")
    assert native.source_of(native.MODULES[-1]).name in why


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"abi": "cpython-39.so"}, "built for another interpreter"),
        ({"built": False, "reason": "no compiler"}, "not built: no compiler"),
        ({"group_file": "lib/missing.so"}, "incomplete build"),
    ],
)
def test_a_build_that_does_not_fit_is_not_used(
    tmp_path: Path, monkeypatch: Any, change: dict[str, Any], reason: str
) -> None:
    monkeypatch.delenv(native.ENV, raising=False)
    files, why = native.check(_manifest(tmp_path, **change))
    assert files is None and why.startswith(reason)


def test_the_environment_turns_the_build_off(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv(native.ENV, "0")
    assert native.check(_manifest(tmp_path)) == (None, f"off ({native.ENV}=0)")
    assert native.check(tmp_path / "none.json")[0] is None


def test_make_rebuilds_when_a_compiled_source_changes() -> None:
    """The Makefile's native target depends on every compiled module's source."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")  # (continued lines)
    m = re.search(r"^NATIVE_SRC\s*:=(.*)$", text, re.M)
    assert m is not None
    deps = set(m.group(1).split())
    for name in native.MODULES:
        assert str(native.source_of(name).relative_to(ROOT)) in deps


@pytest.mark.parametrize(
    "text", ["[1, 2]", '{"built": true, "abi": "%s"}', '{"built": true, "abi": "%s", "modules": 3}']
)
def test_a_manifest_that_cannot_be_read_turns_the_build_off(
    tmp_path: Path, monkeypatch: Any, text: str
) -> None:
    """Whatever ``build/`` holds, ``import sim`` never fails on it: the plain modules run."""
    monkeypatch.delenv(native.ENV, raising=False)
    m = tmp_path / "manifest.json"
    m.write_text(text.replace("%s", native.abi()))
    files, why = native.check(m)
    assert files is None and why.startswith("unreadable manifest.json")
