"""The regression gate: tolerance rule, baseline file, and the command end to end."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from policies import registry
from policies.base import ClusterView, ReplicaView, Router
from sim.cli.main import main
from sim.common.errors import ConfigError
from sim.common.paths import REPO_ROOT
from sim.experiments.regress import (
    CHANGED,
    IMPROVED,
    MISSING,
    NEW,
    OK,
    REGRESSED,
    Tolerance,
    compare,
    flat_expectations,
    judge,
    load_baseline,
    nest_expectations,
    scenario_spec,
)
from sim.workload.calls import Call

LOWER = Tolerance("lower", 0.1, 0.0)
HIGHER = Tolerance("higher", 0.0, 0.01)


@pytest.mark.parametrize(
    ("baseline", "now", "tol", "verdict"),
    [
        (1.0, 1.0, LOWER, OK),
        (1.0, 1.1, LOWER, OK),  # exactly at the relative tolerance
        (1.0, 1.1000001, LOWER, REGRESSED),
        (1.0, 0.9, LOWER, OK),
        (1.0, 0.85, LOWER, IMPROVED),  # better beyond tolerance passes, reported
        (0.3, 0.4, Tolerance("lower", 0.0, 0.1), OK),  # 0.4 - 0.3 > 0.1 in binary floats
        (0.5, 0.49, HIGHER, OK),
        (0.5, 0.489, HIGHER, REGRESSED),  # lower hit rate / throughput is worse
        (0.5, 0.52, HIGHER, IMPROVED),
        (0.001, 0.002, Tolerance("lower", 0.02, 0.001), OK),  # max(abs, rel) applies
        (100.0, 101.5, Tolerance("lower", 0.02, 0.001), OK),
        (100.0, 102.5, Tolerance("lower", 0.02, 0.001), REGRESSED),
        (0.0, 1e-9, Tolerance("lower", 0.5, 0.0), REGRESSED),  # relative to zero is zero
        (0, 0, Tolerance("lower", 0.0, 0.0), OK),
        (260, 261, Tolerance("equal", 0.0, 0.0), CHANGED),
        (260, 259, Tolerance("equal", 0.0, 0.0), CHANGED),  # either way
        (260, 260, Tolerance("equal", 0.0, 0.0), OK),
        (None, None, LOWER, OK),
        (None, 1.0, LOWER, CHANGED),
        (1.0, None, LOWER, CHANGED),
    ],
)
def test_judge(baseline: float | None, now: float | None, tol: Tolerance, verdict: str) -> None:
    assert judge(baseline, now, tol) == verdict


def test_compare_reports_missing_and_new_metrics() -> None:
    expected = {"ttft_s.p50": (0.1, LOWER), "gone": (3, LOWER)}
    rows = compare("s", expected, {"ttft_s.p50": 0.2, "fresh": 1.0})
    assert [(r.metric, r.verdict, r.failed) for r in rows] == [
        ("ttft_s.p50", REGRESSED, True),
        ("gone", MISSING, True),
        ("fresh", NEW, False),
    ]
    assert rows[0].delta == pytest.approx(0.1)


def test_expectations_round_trip_and_errors() -> None:
    flat = {"ttft_s.p50": (0.5, LOWER), "requests": (10, Tolerance("equal", 0.0, 0.0))}
    assert flat_expectations(nest_expectations(flat), "b.json") == flat
    bad = {"ttft_s": {"p50": {"value": 1.0, "better": "sideways"}}}
    with pytest.raises(ConfigError, match=r"b\.json: ttft_s\.p50\.better: expected one of"):
        flat_expectations(bad, "b.json")
    neg = {"cost_usd": {"value": 1.0, "rel_tol": -0.1}}
    with pytest.raises(ConfigError, match=r"cost_usd\.rel_tol: expected a number >= 0"):
        flat_expectations(neg, "b.json")


def test_committed_ci_baseline_is_valid() -> None:
    path = REPO_ROOT / "results" / "baselines" / "ci.json"
    baseline = load_baseline(path)
    assert len(baseline.configs) >= 3
    routers = set()
    for name, config in baseline.configs.items():
        spec = scenario_spec(path, name, config)
        routers.add(spec.cluster.policies.router)
        assert Path(spec.trace).is_file()
        metrics = baseline.expected[name]
        assert {"ttft_s.p50", "ttft_s.p99", "prefix_hit_rate", "cost_usd"} <= set(metrics)
        assert metrics["ttft_s.p99"][1].better == "lower"
        assert metrics["prefix_hit_rate"][1].better == "higher"
    assert len(routers) >= 3


# ---- end to end with a plugged-in policy ----------------------------------------------------


def _least_loaded(candidates: Sequence[ReplicaView]) -> int:
    return min(candidates, key=lambda r: (r.outstanding_requests, r.replica_id)).replica_id


class GoodProbe(Router):
    """Least outstanding requests."""

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        return _least_loaded(candidates)


class WorseProbe(Router):
    """Everything to the lowest replica id: a deliberately worse scheduler."""

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        return min(r.replica_id for r in candidates)


@pytest.fixture
def plug(monkeypatch: pytest.MonkeyPatch) -> Callable[[type], None]:
    """Register a router class as ``regress_probe`` for the duration of a test."""
    registry.list_policies()  # load the built-ins first
    table = registry._REGISTRY["routing"]
    monkeypatch.setitem(table, "regress_probe", table["round_robin"])  # removed afterwards

    def register(cls: type) -> None:
        registry.register("routing", "regress_probe")(cls)

    return register


def write_scenarios(path: Path) -> None:
    config = {
        "trace": "../../traces/default.jsonl",
        "router": "regress_probe",
        "nodes": 1,
        "model": "llama-3-8b",
        "tp": 1,
        "replicas": 2,
        "max_num_seqs": 4,
        "load_scale": 4.0,
        "seed": 0,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"scenarios": {"probe": {"config": config}}}))


def test_gate_passes_identical_code_and_fails_a_worse_policy(
    tmp_path: Path, plug: Callable[[type], None], capsys: pytest.CaptureFixture[str]
) -> None:
    # The baseline lives two levels below a copy of the trace, like results/baselines/.
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "default.jsonl").write_bytes(
        (REPO_ROOT / "traces" / "default.jsonl").read_bytes()
    )
    base = tmp_path / "results" / "baselines" / "mine.json"
    write_scenarios(base)
    plug(GoodProbe)

    assert main(["regress", "--baseline", str(base), "--update"]) == 0
    out = capsys.readouterr().out
    assert f"updated {base} (1 scenarios)" in out and " new" in out
    saved = json.loads(base.read_text())["scenarios"]["probe"]
    assert saved["config"]["router"] == "regress_probe"
    p99 = saved["metrics"]["ttft_s"]["p99"]
    assert p99["better"] == "lower" and p99["value"] > 0

    # Identical code passes, and the table is printed.
    assert main(["regress", "--baseline", str(base), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "metric" in out and "baseline" in out and "verdict" in out
    assert "ttft_s.p99" in out and "REGRESSED" not in out and "passed" in out
    assert (tmp_path / "o" / "regress.md").read_text().count("| probe |") > 10
    assert (tmp_path / "o" / "probe" / "summary.json").is_file()

    # A tolerance edited in the file survives --update.
    doc = json.loads(base.read_text())
    doc["scenarios"]["probe"]["metrics"]["ttft_s"]["p99"]["abs_tol"] = 0.25
    base.write_text(json.dumps(doc))
    assert main(["regress", "--baseline", str(base), "--update"]) == 0
    assert "no value changed" in capsys.readouterr().out
    after = json.loads(base.read_text())["scenarios"]["probe"]["metrics"]["ttft_s"]["p99"]
    assert after["abs_tol"] == 0.25

    # The same scenario with a worse policy plugged in fails the gate.
    plug(WorseProbe)
    assert main(["regress", "--baseline", str(base), "--changes-only"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    regressed = [ln.split()[1] for ln in lines if ln.endswith("REGRESSED")]
    assert "ttft_s.p99" in regressed or "e2e_s.p99" in regressed
    assert not [ln for ln in lines if ln.endswith(" ok")]  # --changes-only
    assert "FAILED" in captured.err and "--update" in captured.err

    # --update accepts the new numbers and prints what changed.
    assert main(["regress", "--baseline", str(base), "--update"]) == 0
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "values changed" in out
    assert main(["regress", "--baseline", str(base)]) == 0


def test_missing_baseline_and_bad_scenario_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.json"
    assert main(["regress", "--baseline", str(missing)]) == 2
    assert "--update" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"scenarios": {"x": {"config": {"routr": "round_robin"}}}}))
    assert main(["regress", "--baseline", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "scenarios.x: config.routr: unknown key (did you mean 'router'?)" in err


# ---- the metric registry -----------------------------------------------------------------


def _rich_summary() -> dict[str, Any]:
    """summary.json of a run that fills the optional keys too: a service mesh, a pod
    restart and a fault after the run's end, a prompt past max_model_len."""
    from dataclasses import replace

    from sim.api import Result
    from sim.cluster.faults import Fault, FaultSchedule
    from sim.simulation import simulate
    from tests.helpers import cluster, llm, workload

    cfg = cluster(replicas=2, max_model_len=4096, mesh_hops=2)
    cfg = replace(cfg, policies=replace(cfg.policies, persistence="host_offload"))
    calls = [llm(f"c{i}", f"s{i}", 500, 50, t=0.1 * i) for i in range(6)]
    calls.append(llm("long", "s9", 5000, 10, t=0.0))
    faults = FaultSchedule(
        (
            Fault(0.2, "replica_restart", replica=0, repair_s=0.0),
            Fault(1e6, "replica_restart", replica=1, repair_s=0.0),
        ),
        None,
        "<test>",
    )
    return Result(simulate(workload(calls), cfg, seed=0, faults=faults)).summary


def test_every_numeric_summary_metric_has_a_registry_entry() -> None:
    from sim.metrics.recorder import SUMMARY_KEYS
    from sim.metrics.registry import IDENTITY_KEYS, METRICS, numeric_metrics

    summary = _rich_summary()
    names = numeric_metrics(summary)
    # the run reaches the optional parts of summary.json (else this test proves little)
    for key in ("mesh_calls", "faults.replicas_lost", "faults_ignored", "rejected_too_long"):
        assert key in names, key
    unknown = sorted({n.split(".")[0] for n in names} - set(METRICS))
    assert unknown == [], f"summary.json metrics missing from sim/metrics/registry.py: {unknown}"
    assert set(SUMMARY_KEYS) - set(IDENTITY_KEYS) <= set(METRICS)
    for m in METRICS.values():
        assert m.better in ("lower", "higher", "none") and m.unit
        assert m.rel_tol >= 0 and m.abs_tol >= 0


def test_regress_flags_a_worse_value_in_the_registry_direction_and_passes_a_better_one() -> None:
    from sim.experiments.regress import Baseline, check, updated

    # registry: ttft_s lower is better, rel 2% / abs 1 ms; prefix_hit_rate higher is
    # better, abs 0.005; requests has no direction (any move is a change)
    before = {"ttft_s": {"p50": 1.0}, "prefix_hit_rate": 0.5, "requests": 10, "seed": 0}
    base = Baseline(Path("b.json"), {"s": {}}, updated(None, {"s": before}))
    exp = base.expected["s"]
    assert exp["ttft_s.p50"][1] == Tolerance("lower", 0.02, 0.001)
    assert exp["prefix_hit_rate"][1] == Tolerance("higher", 0.0, 0.005)
    assert exp["requests"][1].better == "equal" and "seed" not in exp

    def verdicts(ttft: float, hit: float, requests: int) -> dict[str, str]:
        now = {"ttft_s": {"p50": ttft}, "prefix_hit_rate": hit, "requests": requests}
        return {r.metric: r.verdict for r in check(base, {"s": now})}

    # worse beyond tolerance: 1.0 -> 1.03 s is +3% (> 2%); 0.5 -> 0.49 is -0.01 (> 0.005)
    assert verdicts(1.03, 0.49, 10) == {
        "ttft_s.p50": REGRESSED,
        "prefix_hit_rate": REGRESSED,
        "requests": OK,
    }
    # better by as much: improvements pass
    assert verdicts(0.97, 0.51, 10) == {
        "ttft_s.p50": IMPROVED,
        "prefix_hit_rate": IMPROVED,
        "requests": OK,
    }
    # within tolerance either way; a count that moved is a change
    assert verdicts(1.019, 0.496, 11) == {
        "ttft_s.p50": OK,
        "prefix_hit_rate": OK,
        "requests": CHANGED,
    }
