"""Plugins: a new file under policies/<kind>/ registers itself; ``--plugin`` (a file or
module:Class) works in run, compare and sweep, in a cluster TOML and a sweep's [base];
every bad plugin is a one-line error naming the file."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import policies.routing
from policies import registry
from sim.cli.main import main
from sim.cluster.config import load_cluster_config
from sim.experiments.conformance import FakeCluster, FakeReplica

PLUGIN = Path(__file__).resolve().parent / "plugins" / "fewest_tokens.py"
FAST = ["--quiet", "--no-html", "--model", "llama-3.1-8b", "--tp", "1", "--replicas", "2"]
PROBE = '''
from policies import Router, register


@register("routing", "probe_first")
class ProbeFirst(Router):
    """Always the first offered replica."""

    def route(self, call, candidates, view):
        return candidates[0].replica_id
'''


@pytest.fixture
def extra_routing_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder searched as part of policies/routing/ (as if files were added there)."""
    policies.routing.__path__.append(str(tmp_path))
    registry._loaded = False
    try:
        yield tmp_path
    finally:
        policies.routing.__path__.remove(str(tmp_path))
        registry._REGISTRY["routing"].pop("probe_first", None)
        for mod in ("policies.routing.probe", "policies.routing.broken"):
            sys.modules.pop(mod, None)
        registry._loaded = False
        registry.list_policies()


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_new_file_under_a_kind_folder_registers_with_no_other_edit(
    extra_routing_dir: Path,
) -> None:
    assert "probe_first" not in {p.name for p in registry.list_policies("routing")}
    (extra_routing_dir / "probe.py").write_text(PROBE)
    registry._loaded = False
    assert "policies.routing.probe" in registry.builtin_modules()
    assert registry.get_info("routing", "probe_first").description.startswith("Always the first")


def test_a_broken_policy_file_is_one_error_naming_it(extra_routing_dir: Path) -> None:
    (extra_routing_dir / "broken.py").write_text("import no_such_module_xyz\n")
    with pytest.raises(registry.PolicyError, match=r"broken\.py: policy module failed to import"):
        registry.list_policies()


@pytest.mark.parametrize("command", ["run", "compare"])
def test_plugin_flag_in_run_and_compare(tmp_path: Path, command: str) -> None:
    out = tmp_path / "out"
    pol = (
        ["--policy", "fewest_tokens"]
        if command == "run"
        else ["--policies", "fewest_tokens,round_robin"]
    )
    assert main([command, "--plugin", str(PLUGIN), *pol, *FAST, "--out", str(out)]) == 0
    if command == "run":
        assert json.loads((out / "summary.json").read_text())["policy"] == "fewest_tokens"
    else:
        assert "fewest_tokens" in (out / "comparison.csv").read_text()


def test_plugin_flag_and_base_key_in_sweep(tmp_path: Path) -> None:
    (tmp_path / "p.py").write_text(PLUGIN.read_text())
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        '[base]\nplugins = ["p.py"]\nmodel = "llama-3.1-8b"\ntp = 1\nreplicas = 2\n'
        '[grid]\npolicies = ["fewest_tokens", "round_robin"]\n'
    )
    out = tmp_path / "sw"
    assert main(["sweep", str(sweep), "--workers", "2", "--quiet", "--out", str(out)]) == 0
    assert len(list((out / "runs").iterdir())) == 2
    # the flag works the same (the file's plugins plus the flag's)
    assert main(["sweep", str(sweep), "--plugin", str(PLUGIN), "--dry-run", "--out", str(out)]) == 0


def test_cluster_toml_plugins_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "r.py").write_text(PLUGIN.read_text())
    toml = tmp_path / "c.toml"
    toml.write_text('plugins = ["r.py"]\n[policies]\nrouter = "fewest_tokens"\n')
    cfg = load_cluster_config(toml)
    assert cfg.plugins == (str((tmp_path / "r.py").resolve()),)
    assert cfg.to_dict()["plugins"] == [str((tmp_path / "r.py").resolve())]
    assert "plugins" not in load_cluster_config("examples/clusters/default.toml").to_dict()


@pytest.mark.parametrize(
    ("entry", "body", "pattern"),
    [
        ("missing.py", None, r"c\.toml:2: plugins\[0\]: missing\.py: plugin file not found"),
        ("bad.py", "def f(:\n", r"c\.toml:2: plugins\[0\]: .*bad\.py:1: syntax error"),
        ("ok.py:Nope", PROBE, r"c\.toml:2: plugins\[0\]: .*ok\.py: defines no 'Nope'"),
        ("json:dumps", None, r"plugins\[0\]: .*json:dumps: 'dumps' is not a policy class"),
    ],
)
def test_bad_toml_plugin_is_one_line_naming_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str, body: str | None, pattern: str
) -> None:
    if body is not None:
        (tmp_path / entry.split(":")[0]).write_text(body)
    toml = tmp_path / "c.toml"
    toml.write_text(f'name = "x"\nplugins = ["{entry}"]\n')
    assert main(["run", "--cluster", str(toml), *FAST, "--out", str(tmp_path / "o")]) == 2
    assert re.search(pattern, one_line_error(capsys))


def test_bad_plugin_flags_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.py").write_text("X = 1\n")
    for ref, pattern in [
        (str(tmp_path / "nope.py"), "--plugin: .*nope.py: plugin file not found"),
        (str(tmp_path / "x.py"), "--plugin: .*x.py: registers no policy"),
        ("no_such_pkg_q:Cls", "--plugin: no_such_pkg_q:Cls: no module named 'no_such_pkg_q'"),
    ]:
        assert main(["run", "--plugin", ref, *FAST, "--out", str(tmp_path / "o")]) == 2
        assert re.search(pattern, one_line_error(capsys))


def test_module_class_registers_an_undecorated_policy() -> None:
    (info,) = registry.load_plugin("tests.plugins.undecorated:LowestId")
    assert (info.kind, info.name) == ("routing", "lowest_id")
    reps = [FakeReplica(3), FakeReplica(1), FakeReplica(2)]
    assert registry.create("routing", "lowest_id").route(None, reps, FakeCluster(reps)) == 1
