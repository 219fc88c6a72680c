"""The notebook API: ``sim.run`` -> Result with frames, plots and save."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.figure import Figure

import sim
from sim.api import Result, cluster_config
from sim.report.results import SLO
from tests.helpers import cluster, llm, workload


def test_run_returns_result_with_frames_summary_and_plots(tmp_path: Path) -> None:
    w = workload([llm(f"c{i}", f"s{i % 2}", 200, 5, t=0.5 * i) for i in range(4)])
    r = sim.run(w, cluster(replicas=2), "least_loaded", seed=3, slo=SLO(ttft_s=10.0, tpot_s=1.0))
    assert isinstance(r, Result)
    assert r.summary["policy"] == "least_loaded" and r.summary["seed"] == 3
    assert r.summary["slo_attainment"] == 1.0  # generous SLO: every call meets it
    assert len(r.calls) == 4 and set(r.sessions["session_id"]) == {"s0", "s1"}
    assert set(r.timeline["replica"]) <= {0, 1} and len(r.replicas) == 2
    for plot in (r.plot_latency_cdf, r.plot_timeline, r.plot_kv, r.plot_cost, r.plot_heatmap,
                 r.plot_topology):  # fmt: skip
        assert isinstance(plot(), Figure)
    out = r.save(tmp_path / "run")
    saved = json.loads((out / "summary.json").read_text())
    assert saved == json.loads(json.dumps(r.summary))
    assert (out / "report.html").exists() and r.markdown() == (out / "report.md").read_text()


def test_policy_arguments_set_config_fields() -> None:
    cfg = cluster_config(None, {"router": "session_affinity", "batching": "fcfs"}, replicas=2)
    assert (cfg.policies.router, cfg.policies.batching) == ("session_affinity", "fcfs")
    assert cfg.deployments[0].replicas == 2
    assert cluster_config(None, "batching=fcfs").policies.router == "round_robin"


def test_import_sim_stays_light() -> None:
    code = "import sys, sim; print('pandas' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    with pytest.raises(AttributeError):
        sim.no_such_thing  # noqa: B018
