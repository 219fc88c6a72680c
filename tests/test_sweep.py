"""Sweeps: dotted-path settings, grid expansion, run ids, backends, resuming, report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sim.cli.main import main
from sim.cluster.config import default_cluster_config
from sim.common.errors import ConfigError, InputError
from sim.common.paths import DEFAULT_TRACE
from sim.experiments.runner import ProcessBackend, RunSpec, SerialBackend, execute, make_backend
from sim.experiments.sweep import expand, load_sweep, parse_sweep, run_sweep, set_path
from sim.simulation import SimResult

# One DGX node, two small replicas: every run of the default trace takes well under 1 s.
SMALL = """
[sweep]
metrics = ["ttft_s.p99", "prefix_hit_rate"]

[base]
trace = "{trace}"
nodes = 1
model = "llama-3-8b"
tp = 1
replicas = 2
max_num_seqs = 4
"""


def write_sweep(tmp_path: Path, grid: str, base_extra: str = "", name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(SMALL.format(trace=DEFAULT_TRACE) + base_extra + "\n[grid]\n" + grid)
    return p


GRID_2X2 = 'policies = ["round_robin", "session_affinity"]\nload_scales = [1.0, 4.0]\n'


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values("run_id").reset_index(drop=True)


# ---- dotted paths -------------------------------------------------------------------------


def test_set_path_sets_nested_fields_and_keeps_the_rest() -> None:
    cfg = default_cluster_config()
    new = set_path(cfg, "deployments.0.max_num_seqs", 64, "x.toml")
    assert new.deployments[0].max_num_seqs == 64
    assert new.deployments[0].tp == cfg.deployments[0].tp
    assert cfg.deployments[0].max_num_seqs == 128  # frozen original untouched
    new = set_path(new, "policies.batching", "fcfs", "x.toml")
    assert new.policies.batching == "fcfs"
    new = set_path(new, "policies", {"router": "least_loaded"}, "x.toml")
    assert new.policies.router == "least_loaded" and new.policies.batching == "fcfs"
    new = set_path(new, "deployments.0.gpu_memory_utilization", 1, "x.toml")
    assert new.deployments[0].gpu_memory_utilization == 1.0
    new = set_path(new, "nodes", [{"builder": "dgx-a100", "count": 3, "gpus": 8}], "x.toml")
    assert new.num_gpus == 24


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "deployments.0.max_num_seq",
            4,
            "has no field 'max_num_seq' (did you mean 'max_num_seqs'?)",
        ),
        ("deployments.3.tp", 4, "index 3 out of range"),
        ("deployments.first.tp", 4, "expected an index"),
        ("deployments.0.tp", "four", "expected an integer"),
        ("gpu.kind", "x", "is a value"),
        ("policies", "fcfs", "expected a table of fields"),
        ("deployments..tp", 1, "not a dotted path"),
    ],
)
def test_set_path_errors_name_where_and_key(path: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        set_path(default_cluster_config(), path, value, 'sw.toml: grid."k"')
    assert str(e.value).startswith('sw.toml: grid."k": ')
    assert message in str(e.value)


# ---- the sweep file and expansion ------------------------------------------------------------


def test_expand_takes_the_product_in_grid_order(tmp_path: Path) -> None:
    p = write_sweep(
        tmp_path,
        'policies = ["round_robin", "least_loaded"]\nseeds = [0, 1, 2]\n'
        '"deployments.0.max_num_seqs" = [4, 8]\n',
    )
    specs = expand(load_sweep(p))
    assert len(specs) == 12
    assert len({s.run_id for s in specs}) == 12
    first = specs[0].params
    assert (first["policy"], first["seed"], first["deployments.0.max_num_seqs"]) == (
        "round_robin",
        0,
        4,
    )
    assert [s.seed for s in specs[:3]] == [0, 1, 2]
    assert all(s.cluster.deployments[0].model == "llama-3-8b" for s in specs)
    assert {s.cluster.deployments[0].max_num_seqs for s in specs} == {4, 8}


def test_run_ids_depend_on_the_resolved_config_only(tmp_path: Path) -> None:
    a = write_sweep(tmp_path, "seeds = [0, 1]\n", name="a.toml")
    # Same runs spelled differently: the seed in the grid vs a dotted path of the default.
    (tmp_path / "sub").mkdir()
    b = write_sweep(tmp_path / "sub", "seeds = [1, 0]\n", '"policies.router" = "round_robin"\n')
    ids_a = {s.run_id for s in expand(load_sweep(a))}
    ids_b = {s.run_id for s in expand(load_sweep(b))}
    assert ids_a == ids_b
    c = write_sweep(tmp_path, "seeds = [0, 1]\n", "load_scale = 2.0\n", name="c.toml")
    assert not ids_a & {s.run_id for s in expand(load_sweep(c))}


def test_command_line_overrides_base_and_conflicts_with_the_grid(tmp_path: Path) -> None:
    p = write_sweep(tmp_path, "seeds = [0]\n")
    (spec,) = expand(load_sweep(p, {"replicas": 1}))
    assert spec.cluster.deployments[0].replicas == 1
    with pytest.raises(ConfigError, match=r"s\.toml: grid\.seeds: the grid varies it"):
        load_sweep(p, {"seed": 3})


@pytest.mark.parametrize(
    ("grid", "base", "message"),
    [
        ("seeds = []\n", "", "grid.seeds: expected a non-empty list"),
        ("load_scales = [1, -2]\n", "", "grid.load_scales[1]: expected a positive number"),
        ("polices = [1]\n", "", "unknown axis (did you mean 'policies'?)"),
        ('"deployments.0.max_num_seqs" = [4, 4]\n', "", "lists a value twice"),
        ('"deployments.0.max_num_seqs" = [8192]\n', "", "max_num_batched_tokens: must be >="),
        ('"deployments.0.max_num_sqs" = [8]\n', "", 'grid."deployments.0.max_num_sqs"'),
        ("seeds = [0]\n", "replica = 3\n", "base.replica: unknown key (did you mean 'replicas'?)"),
        ("seeds = [0]\n", 'seed = "0"\n', "base.seed: expected int"),
    ],
)
def test_sweep_file_errors_name_the_file_and_key(
    tmp_path: Path, grid: str, base: str, message: str
) -> None:
    p = write_sweep(tmp_path, grid, base)
    with pytest.raises(ConfigError) as e:
        expand(load_sweep(p))
    assert str(e.value).startswith(str(p))
    assert message in str(e.value)


def test_unknown_table_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown table"):
        parse_sweep({"grids": {}}, "x.toml")
    p = tmp_path / "bad.toml"
    p.write_text("[grid\n")
    with pytest.raises(InputError, match=r"bad\.toml:1: invalid TOML"):
        load_sweep(p)


# ---- running, backends, resuming --------------------------------------------------------------


def test_serial_and_process_pool_give_identical_tables_and_rerun_skips(tmp_path: Path) -> None:
    specs = expand(load_sweep(write_sweep(tmp_path, GRID_2X2)))
    serial = run_sweep(specs, tmp_path / "serial", SerialBackend(), progress=False)
    pool = run_sweep(specs, tmp_path / "pool", ProcessBackend(2), progress=False)
    assert len(serial.ran) == len(pool.ran) == 4 and not serial.failed
    pd.testing.assert_frame_equal(comparable(serial.table), comparable(pool.table))
    # The parquet file on disk is the same table.
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "pool" / "sweep.parquet"), pool.table)
    for col in ("policy", "load_scale", "seed", "ttft_s.p99", "prefix_hit_rate", "cost_usd"):
        assert col in serial.table
    assert sorted(serial.table["run_id"]) == sorted(s.run_id for s in specs)
    # Runs differ where the config differs: 4x the load queues more.
    t = serial.table.set_index(["policy", "load_scale"])
    assert t.loc[("round_robin", 4.0), "ttft_s.p99"] > t.loc[("round_robin", 1.0), "ttft_s.p99"]
    # Every run directory holds the run contract plus its sweep params.
    run = tmp_path / "pool" / "runs" / specs[0].run_id
    for f in ("summary.json", "calls.parquet", "config.json", "report.md", "params.json"):
        assert (run / f).is_file()
    assert json.loads((run / "params.json").read_text())["run_id"] == specs[0].run_id
    # The wall times live apart from the deterministic table.
    perf = pd.read_csv(tmp_path / "pool" / "sweep_perf.csv")
    assert set(perf["run_id"]) == set(pool.table["run_id"]) and "wall_s" not in pool.table
    again = run_sweep(specs, tmp_path / "pool", ProcessBackend(2), progress=False)
    assert again.ran == [] and len(again.skipped) == 4


class InterruptAfter:
    """A runner that is 'killed' (KeyboardInterrupt) when it starts run number ``n + 1``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.started: list[str] = []

    def __call__(self, spec: RunSpec) -> SimResult:
        self.started.append(spec.run_id)
        if len(self.started) > self.n:
            raise KeyboardInterrupt
        return execute(spec)


def test_interrupted_sweep_resumes_without_redoing_finished_runs(tmp_path: Path) -> None:
    specs = expand(load_sweep(write_sweep(tmp_path, GRID_2X2)))
    out = tmp_path / "out"
    killed = InterruptAfter(2)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(specs, out, SerialBackend(killed), progress=False)
    done = sorted(p.name for p in (out / "runs").iterdir() if (p / "summary.json").exists())
    assert done == sorted(killed.started[:2])
    # A run directory without summary.json (killed mid-write) is redone.
    (out / "runs" / "partial").mkdir()
    stamp = {d: (out / "runs" / d / "summary.json").stat().st_mtime_ns for d in done}
    resumed = InterruptAfter(10)
    outcome = run_sweep(specs, out, SerialBackend(resumed), progress=False)
    assert sorted(resumed.started) == sorted(s.run_id for s in specs if s.run_id not in done)
    assert sorted(outcome.skipped) == done and len(outcome.ran) == 2
    assert stamp == {d: (out / "runs" / d / "summary.json").stat().st_mtime_ns for d in done}
    assert len(outcome.table) == 4


def finished_runs(out: Path) -> dict[str, int]:
    """Complete run directories (not the hidden temporary ones) -> summary.json mtime."""
    runs = (out / "runs").glob("[!.]*/summary.json")
    return {p.parent.name: p.stat().st_mtime_ns for p in runs}


def test_killed_sweep_process_resumes(tmp_path: Path) -> None:
    """SIGKILL a real ``agentsim sweep``; the rerun runs exactly the runs not finished."""
    p = write_sweep(
        tmp_path,
        'policies = ["round_robin", "least_loaded", "session_affinity"]\n'
        "load_scales = [1.0, 2.0, 4.0]\n",
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sim.cli", "sweep", str(p), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        while proc.poll() is None and not finished_runs(out):
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = finished_runs(out)
    assert finished
    rc = main(["sweep", str(p), "--out", str(out), "--workers", "1", "--quiet"])
    assert rc == 0
    table = pd.read_parquet(out / "sweep.parquet")
    assert len(table) == 9
    now = finished_runs(out)
    assert {k: now[k] for k in finished} == finished


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path: Path) -> None:
    specs = expand(load_sweep(write_sweep(tmp_path, GRID_2X2)))

    def runner(spec: RunSpec) -> SimResult:
        if spec.params["policy"] == "session_affinity" and spec.load_scale == 4.0:
            raise ConfigError("boom")
        return execute(spec)

    outcome = run_sweep(specs, tmp_path / "o", SerialBackend(runner), progress=False)
    assert len(outcome.ran) == 3 and list(outcome.failed.values()) == ["boom"]
    failures = json.loads((tmp_path / "o" / "failures.json").read_text())
    assert failures[0]["error"] == "boom" and failures[0]["params"]["load_scale"] == 4.0


# ---- the command and the report -------------------------------------------------------------


def test_sweep_command_writes_table_report_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = write_sweep(tmp_path, GRID_2X2)
    out = tmp_path / "out"
    assert main(["sweep", str(p), "--out", str(out), "--dry-run"]) == 0
    assert "4 runs, 0 done, 4 to run" in capsys.readouterr().out
    assert main(["sweep", str(p), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    table = pd.read_parquet(out / "sweep.parquet")
    assert len(table) == 4
    assert pd.read_csv(out / "sweep.csv")["run_id"].tolist() == table["run_id"].tolist()
    report = (out / "sweep_report.md").read_text()
    assert "| load scale | round_robin | session_affinity |" in report
    assert (out / "sweep_ttft_s_p99.png").stat().st_size > 0
    # Run flags act as the base config: --replicas 1 gives new runs, not the finished ones.
    args = ["sweep", str(p), "--out", str(out), "--replicas", "1", "--workers", "1", "--quiet"]
    assert main(args) == 0
    assert len(pd.read_parquet(out / "sweep.parquet")) == 8
    capsys.readouterr()
    assert main(["sweep", str(p), "--out", str(out), "--load-scale", "2"]) == 2
    assert "grid.load_scales: the grid varies it" in capsys.readouterr().err


def test_ray_backend_without_ray_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'agentsim\[ray\]'"):
        make_backend("ray")
    p = write_sweep(tmp_path, GRID_2X2)
    assert main(["sweep", str(p), "--out", str(tmp_path / "o"), "--backend", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "agentsim[ray]" in err


def test_ray_and_local_backends_give_identical_tables(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    specs = expand(load_sweep(write_sweep(tmp_path, GRID_2X2)))
    local = run_sweep(specs, tmp_path / "local", make_backend("local", 1), progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_sweep(specs, tmp_path / "ray", make_backend("ray"), progress=False)
    finally:
        ray.shutdown()
    assert len(remote.ran) == 4 and not remote.failed
    pd.testing.assert_frame_equal(comparable(local.table), comparable(remote.table))
