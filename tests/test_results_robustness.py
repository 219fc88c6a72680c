"""Issue 15, results that were silently wrong or crashed: empty policy specs, empty
sweep grids, zero replicas, overloaded clusters, seeds that varied nothing, raw JSON in
reports, undocumented policy parameters, and README commands that are not on PATH."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.api import (
    Comparison,
    _fmt_ci,
    compare,
    jittered,
    mean_session_gap,
    policy_dict,
    summarize_runs,
)
from sim.cli.main import main
from sim.cluster.config import apply_overrides, check_serves
from sim.common.errors import ConfigError, InputError
from sim.experiments.sweep import expand, load_sweep, parse_sweep, run_id
from sim.metrics.recorder import CALL_COLUMNS, SUMMARY_KEYS, Recorder, overload
from sim.report.results import (
    costmodel_line,
    enrich_summary,
    fmt_duration,
    load_results,
    render_markdown,
    write_results,
)
from sim.simulation import simulate
from tests.helpers import ROOFLINE, cluster, llm, workload

ROOT = Path(__file__).resolve().parent.parent
TRACE = str(ROOT / "traces" / "default.jsonl")
#: A committed fitted cost model, pinned so these tests do not depend on the default.
VIDUR = str(ROOT / "sim" / "data" / "costmodels" / "vidur-a100.toml")


def _cl(**kw: object):  # noqa: ANN202
    """``tests.helpers.cluster`` priced by :data:`VIDUR` (compare() takes no cost model)."""
    return dataclasses.replace(cluster(**kw), costmodel=VIDUR)  # type: ignore[arg-type]


def _run(tmp_path: Path, *args: str) -> tuple[int, str, Path]:
    out = tmp_path / "out"
    return main(["run", "--trace", TRACE, "--out", str(out), "--quiet", *args]), str(out), out


# ---- 1. empty policy specs ------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--policy", "--router", "--batching", "--retention",
                                  "--placement", "--autoscaler", "--persistence"])  # fmt: skip
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_policy_flag_is_an_error_not_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    rc, _, out = _run(tmp_path, flag, value)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{flag}: empty policy spec" in err
    assert not out.exists()


def test_empty_policy_specs_in_the_api_and_sweep_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="empty policy spec"):
        policy_dict({"router": ""})
    with pytest.raises(ConfigError, match="batching= has an empty policy spec"):
        policy_dict("round_robin+batching=")
    with pytest.raises(ConfigError, match="empty policy spec"):
        policy_dict("")
    with pytest.raises(ConfigError, match=r"base\.router: empty policy spec"):
        parse_sweep({"base": {"router": ""}, "grid": {"seeds": [0, 1]}}, "s.toml")
    with pytest.raises(ConfigError, match=r"grid\.policies\[1\]: expected a non-empty string"):
        parse_sweep({"grid": {"policies": ["round_robin", ""]}}, "s.toml")


# ---- 2. empty sweep grid ----------------------------------------------------------------


@pytest.mark.parametrize(
    "grid,line,what",
    [("[grid]\n", 4, "is empty"), ("", None, "is missing")],
    ids=["empty", "missing"],
)
def test_a_sweep_without_a_grid_is_an_error_naming_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], grid: str, line: int | None, what: str
) -> None:
    p = tmp_path / "s.toml"
    p.write_text(f'[base]\ntrace = "{TRACE}"\nreplicas = 2\n' + grid)
    with pytest.raises(InputError) as e:
        load_sweep(p)
    where = f"{p}:{line}" if line else str(p)
    assert str(e.value).startswith(f"{where}: grid: {what}")
    out = tmp_path / "out"
    assert main(["sweep", str(p), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{where}: grid: {what}" in err and len(err.splitlines()) == 1
    assert not out.exists()


# ---- 3. zero replicas --------------------------------------------------------------------

ZERO = """
gpu = "a100-80gb"
[[nodes]]
builder = "dgx-a100"
count = 1
gpus = 8
[[deployments]]
model = "llama-3-8b"
tp = 1
replicas = 0
"""


@pytest.mark.parametrize(
    "args,expect",
    [
        (["--replicas", "0"], "<default> + command-line overrides: deployments[0].replicas: 0 replicas"),
        (["--cluster", "{c.toml}"], "c.toml: deployments[0].replicas: 0 replicas of llama-3-8b"),
        (["--replicas", "0", "--autoscaler", "hpa:min_replicas=0"], "deployments[0].replicas"),
    ],
    ids=["flag", "toml", "hpa-per-pod"],
)  # fmt: skip
def test_zero_replicas_that_never_scale_fail_before_simulating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expect: str
) -> None:
    (tmp_path / "c.toml").write_text(ZERO)
    args = [str(tmp_path / "c.toml") if a == "{c.toml}" else a for a in args]
    rc, _, out = _run(tmp_path, *args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert expect in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_zero_replicas_are_fine_with_an_autoscaler_that_scales_from_zero() -> None:
    base = cluster(replicas=0)
    for scaler in ("keep_warm", "queue_depth", "hpa:metric=queue,min_replicas=0", "hpa"):
        cfg = apply_overrides(base, policies={"autoscaler": scaler})
        assert check_serves(cfg) is cfg
    with pytest.raises(ConfigError, match=r"deployments\[0\]\.replicas"):
        check_serves(base)  # static


def test_a_run_without_any_replica_reports_instead_of_crashing(tmp_path: Path) -> None:
    """The state check_serves rules out for the CLI can still be built by hand (the API
    with a validated-only config): the report must not raise KeyError 'busy_s'."""
    w = workload([llm("a", "s", 100, 4), llm("b", "t", 100, 4, t=1.0)])
    r = simulate(w, cluster(replicas=0), cost_model=ROOFLINE)
    assert r.replicas.empty
    d = write_results(r, tmp_path / "run")
    s = json.loads((d / "summary.json").read_text())
    assert (s["completed_requests"], s["failed_requests"]) == (0, 2)
    assert s["overloaded"] is False and s["gpu_utilization"] == 0.0
    back = load_results(d)
    assert back.replicas.empty and "busy_s" in back.replicas.columns
    assert "## Replicas" in render_markdown(s, back.config, back.replicas, back.timeline)


# ---- 4. overload -------------------------------------------------------------------------


def _calls(rows: list[tuple[float, float, float]]) -> pd.DataFrame:
    """(issue, admit, finish) per completed LLM call, each its own session."""
    rec = Recorder()
    for k, (issue, admit, finish) in enumerate(rows):
        row = {"call_id": f"c{k}", "session_id": f"s{k}", "kind": "llm", "model": "m",
               "replica": 0, "status": "completed", "reason": "", "issue_s": issue,
               "admit_s": admit, "first_token_s": admit + 0.1, "finish_s": finish,
               "input_tokens": 100, "output_tokens": 10}  # fmt: skip
        rec.add(tuple(row.get(c, 0) for c in CALL_COLUMNS))
    return rec.frame()


def _serial(arrivals: list[float], service: list[float]) -> pd.DataFrame:
    """One server, one call at a time, first come first served."""
    rows, free = [], 0.0
    for t, s in zip(arrivals, service, strict=True):
        start = max(t, free)
        free = start + s
        rows.append((t, start, free))
    return _calls(rows)


def test_overload_of_a_queue_that_grows_by_a_second_per_call() -> None:
    # calls every 1 s that each take 2 s: call k starts at 2k, waits k s (mean 4.5 s)
    ov = overload(_serial([float(k) for k in range(10)], [2.0] * 10))
    assert ov["overloaded"] is True
    assert ov["mean_queue_s"] == pytest.approx(4.5) and ov["mean_service_s"] == pytest.approx(2.0)
    assert ov["offered_load_rps"] == pytest.approx(10 / 9)  # 10 issues in 9 s
    assert ov["served_load_rps"] == pytest.approx(10 / 18)  # completions at 2, 4, ..., 20


def test_no_overload_when_the_server_keeps_up() -> None:
    # calls every 3 s that each take 2 s: nobody waits
    ov = overload(_serial([3.0 * k for k in range(10)], [2.0] * 10))
    assert ov["overloaded"] is False
    assert ov["mean_queue_s"] == 0.0
    assert ov["offered_load_rps"] == pytest.approx(10 / 27)
    assert ov["served_load_rps"] == pytest.approx(10 / 27)  # completions at 2, 5, ..., 29


def test_overload_by_backlog_after_a_final_burst() -> None:
    # 9 calls every 2 s (1 s each, no queue), then 2 more at 16 s: they wait 1 and 2 s.
    # Mean queue 3/11 s < half the 1 s service, but completions span 1..19 s = 18 s
    # against 16 s of arrivals: 0.9 x 18 = 16.2 > 16, a backlog drained after the end.
    ov = overload(_serial([2.0 * k for k in range(9)] + [16.0, 16.0], [1.0] * 11))
    assert ov["mean_queue_s"] == pytest.approx(3 / 11)
    assert ov["served_load_rps"] < 0.9 * ov["offered_load_rps"]
    assert ov["overloaded"] is True


def test_a_long_last_call_without_queueing_is_not_overload() -> None:
    # the completion window outlasts the arrivals because the last call is long, not
    # because anything waited
    ov = overload(_serial([float(k) for k in range(10)], [0.5] * 9 + [5.0]))
    assert ov["served_load_rps"] < 0.9 * ov["offered_load_rps"]
    assert ov["mean_queue_s"] == 0.0 and ov["overloaded"] is False


def _stream(gap_s: float, n: int = 12) -> list:
    return [llm(f"c{k}", f"s{k}", 100, 200, t=gap_s * k) for k in range(n)]


def test_simulated_overload_is_flagged_in_summary_report_and_html(tmp_path: Path) -> None:
    cfg = cluster(replicas=1, max_num_seqs=1)
    calm = simulate(workload(_stream(gap_s=30.0)), cfg, cost_model=ROOFLINE)
    busy = simulate(workload(_stream(gap_s=0.2)), cfg, cost_model=ROOFLINE)
    s_calm, s_busy = enrich_summary(calm), enrich_summary(busy)
    assert s_calm["overloaded"] is False and s_calm["mean_queue_s"] == pytest.approx(0, abs=1e-6)
    assert s_busy["overloaded"] is True
    assert s_busy["mean_queue_s"] > 2 * s_busy["mean_service_s"]
    assert s_busy["served_load_rps"] < s_busy["offered_load_rps"]
    # extra keys come after the fixed contract keys
    keys = list(s_busy)
    assert keys[: len(SUMMARY_KEYS)] == list(SUMMARY_KEYS)
    assert keys.index("overloaded") > keys.index("policy")
    d = write_results(busy, tmp_path / "busy")
    assert json.loads((d / "summary.json").read_text())["overloaded"] is True
    assert "**Warning: overloaded.**" in (d / "report.md").read_text()
    assert '<div class="warning"><b>Warning: overloaded.</b>' in (d / "report.html").read_text()
    d = write_results(calm, tmp_path / "calm", html=False)
    assert "overloaded" not in (d / "report.md").read_text().lower()


def test_agentsim_run_prints_the_overload_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "burst.jsonl"
    trace.write_text(
        "".join(
            json.dumps({"session_id": f"s{k}", "call_id": f"c{k}", "type": "llm",
                        "issue_time_s": 0.2 * k, "input_tokens": 200, "output_tokens": 300})
            + "\n"
            for k in range(16)
        )
    )  # fmt: skip
    args = ["run", "--trace", str(trace), "--out", str(tmp_path / "o"), "--no-html",
            "--gpu", "a100-80gb", "--nodes", "1", "--model", "llama-3-8b", "--tp", "1",
            "--replicas", "1", "--max-num-seqs", "1", "--costmodel", VIDUR]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    warn = [line for line in err.splitlines() if "warning: overloaded" in line]
    assert len(warn) == 1 and "offered" in warn[0] and "served" in warn[0], err


def test_large_latencies_print_in_human_units() -> None:
    assert fmt_duration(8536.9288) == "2.4 h"
    assert fmt_duration(0.0234) == "23.4 ms"
    assert fmt_duration(12.345) == "12.35 s"
    assert fmt_duration(600.0) == "10.0 min"
    assert fmt_duration(None) == "n/a"
    w = workload(_stream(gap_s=30.0, n=3))
    r = simulate(w, cluster(), cost_model=ROOFLINE)
    s = enrich_summary(r)
    s["ttft_s"] = {**s["ttft_s"], "p50": 8536.9288}
    md = render_markdown(s, r.config, r.replicas, r.timeline)
    ttft_row = next(line for line in md.splitlines() if line.startswith("| TTFT |"))
    assert "2.4 h" in ttft_row and "8536928.8" not in md


def test_compare_flags_overloaded_policies() -> None:
    cfg = _cl(replicas=1, max_num_seqs=1)
    cmp = compare(workload(_stream(gap_s=0.2)), cfg, ["round_robin", "least_loaded"])
    md = cmp.markdown()
    assert "| round_robin ⚠ overloaded | " in md and "| least_loaded ⚠ overloaded | " in md
    assert "⚠ Overloaded (arrivals outpaced service" in md
    calm = compare(workload(_stream(gap_s=30.0)), cfg, ["round_robin"])
    assert "overloaded" not in calm.markdown().lower()


# ---- 5. seeds vary the arrivals ---------------------------------------------------------


def _sessions(n: int = 6, gap: float = 4.0) -> list:
    calls = []
    for k in range(n):
        calls.append(llm(f"a{k}", f"s{k}", 300, 20, t=gap * k))
        calls.append(llm(f"b{k}", f"s{k}", 600, 20, t=gap * k + 2.0, parents=(f"a{k}",), gap=1.0))
    return calls


def test_jitter_moves_whole_sessions_by_at_most_half_the_mean_gap() -> None:
    w = workload(_sessions())
    assert mean_session_gap(w) == pytest.approx(4.0)  # starts 0, 4, ..., 20
    a, b, a2 = jittered(w, 1), jittered(w, 2), jittered(w, 1)
    t = {c.call_id: c.issue_time_s for c in w.calls}
    ta = {c.call_id: c.issue_time_s for c in a.calls}
    assert ta == {c.call_id: c.issue_time_s for c in a2.calls}  # seeded
    assert ta != {c.call_id: c.issue_time_s for c in b.calls}
    for k in range(6):
        shift = ta[f"a{k}"] - t[f"a{k}"]
        assert abs(shift) <= 2.0 or (t[f"a{k}"] == 0.0 and ta[f"a{k}"] >= 0.0)
        if t[f"a{k}"] > 0:
            assert ta[f"b{k}"] - ta[f"a{k}"] == pytest.approx(2.0)  # the session keeps its shape
    one = workload([llm("x", "s", 10, 2)])
    assert jittered(one, 3) is one and mean_session_gap(one) == 0.0


def test_compare_seeds_differ_for_a_deterministic_router_by_default() -> None:
    # sessions 0.5 s apart on two replicas of two sequences each: calls contend
    w, cfg = workload(_sessions(n=8, gap=0.5)), _cl(replicas=2, max_num_seqs=2)
    on = compare(w, cfg, ["round_robin"], seeds=3)
    off = compare(w, cfg, ["round_robin"], seeds=3, jitter=False)
    for m in ("makespan_s", "e2e_s.mean"):
        assert on.runs[m].nunique() > 1, m  # the seeds are three samples
        assert on.table.loc[0, f"{m}.ci95"] > 0
        assert off.runs[m].nunique() == 1  # round robin repeats itself
        assert off.table.loc[0, f"{m}.ci95"] == 0.0
    assert "arrival jitter" in on.markdown() and "only the policies' randomness" in off.markdown()
    single = compare(w, cfg, ["round_robin"], seeds=1)  # one seed: the recorded arrivals
    assert single.runs.loc[0, "e2e_s.mean"] == pytest.approx(
        compare(w, cfg, ["round_robin"], seeds=1, jitter=False).runs.loc[0, "e2e_s.mean"]
    )
    with pytest.raises(ConfigError, match="jitter needs sessions"):
        compare(workload([llm("x", "s", 10, 2)]), cfg, ["round_robin"], seeds=2, jitter=True)


def test_a_zero_interval_prints_as_zero_not_float_noise() -> None:
    # (0.1 + 0.1 + 0.1) / 3 != 0.1 in floating point: the raw std is ~1e-17, not 0
    assert np.std([0.1, 0.1, 0.1], ddof=1) > 0 or np.mean([0.1] * 3) != 0.1
    runs = pd.DataFrame({"policy": ["a"] * 3, "seed": [0, 1, 2], "cost_usd": [0.1] * 3,
                         "ttft_s.p50": [0.02, 0.03, 0.025]})  # fmt: skip
    t = summarize_runs(runs, ["a"], "cost_usd")
    assert t.loc[0, "cost_usd"] == 0.1 and t.loc[0, "cost_usd.ci95"] == 0.0
    md = Comparison(runs, t, "cost_usd", [0, 1, 2], {"a": []}).markdown()
    assert "| 0.1 ± 0 |" in md and "e-1" not in md
    assert _fmt_ci(4.324e-14, 92.1, "") == "0"
    assert _fmt_ci(0.2547, 92.1, "") == "0.25"
    assert _fmt_ci(0.0018, 0.0236, "ms") == "1.8"


def test_sweeps_with_several_seeds_jitter_and_single_seed_runs_keep_their_ids(
    tmp_path: Path,
) -> None:
    p = tmp_path / "s.toml"
    base = f'[base]\ntrace = "{TRACE}"\nnodes = 1\nmodel = "llama-3-8b"\ntp = 1\nreplicas = 2\n'
    p.write_text(base + "[grid]\nseeds = [0, 1]\n")
    specs = expand(load_sweep(p))
    assert [s.jitter for s in specs] == [True, True]
    assert all(s.params["jitter"] is True for s in specs)
    p.write_text(base + "jitter = false\n[grid]\nseeds = [0, 1]\n")
    plain = expand(load_sweep(p))
    assert [s.jitter for s in plain] == [False, False]
    assert {s.run_id for s in plain}.isdisjoint(s.run_id for s in specs)
    # one seed (the regression gate's scenarios): no jitter, the id as before
    p.write_text(base + "seed = 0\n[grid]\nload_scales = [1.0]\n")
    (one,) = expand(load_sweep(p))
    assert not one.jitter and "jitter" not in one.params
    assert one.run_id == run_id(one.cluster, one.trace, one.trace_format, 0, 1.0)
    assert one.run_id == plain[0].run_id  # seed 0, no jitter, same config


# ---- 6. cost-model line --------------------------------------------------------------------


def test_report_cost_model_line_is_short_and_human() -> None:
    fold = {"mape": 9.6194, "n": 10440, "p90_ape": 21.13, "by_operator": {f"op{i}": {"mape": 1.0} for i in range(40)}}  # fmt: skip
    cm = {
        "name": "vidur-a100",
        "kind": "fitted roofline",
        "source": "vidur-a100.toml",
        "validation": {
            "leave_one_model_out": [fold, {**fold, "mape": 7.2439}],
            "random_split": {**fold, "mape": 5.8118, "n": 7895, "p90_ape": 13.4972},
        },
    }
    assert len(json.dumps(cm)) > 2000
    line = costmodel_line(cm)
    assert len(line) < 300 and "{" not in line, line
    for text in ("vidur-a100", "fitted roofline", "vidur-a100.toml", "random split MAPE 5.8%",
                 "p90 13.5%", "leave one model out MAPE 7.2-9.6% (2 folds)"):  # fmt: skip
        assert text in line, text
    assert costmodel_line(
        {"name": "roofline", "kind": "analytic roofline", "validation": None}
    ) == ("- Cost model: roofline (analytic roofline); not validated against measurements")


def test_report_md_keeps_the_full_description_in_config_json(tmp_path: Path) -> None:
    r = simulate(workload(_stream(gap_s=30.0, n=2)), _cl())
    d = write_results(r, tmp_path / "r", html=False)
    cm = json.loads((d / "config.json").read_text())["costmodel"]
    line = next(x for x in (d / "report.md").read_text().splitlines() if "Cost model" in x)
    assert cm.get("validation") and len(line) < 400 and "{" not in line


# ---- 7. policy parameters ------------------------------------------------------------------


def test_agentsim_policies_lists_parameters_and_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["policies", "--kind", "routing"]) == 0
    out = capsys.readouterr().out
    block = re.split(r"\n  (?=\S)", out[out.index("prefix_affinity") :])[0]
    assert "cache_threshold=0.5 (float)" in block and "balance_abs_threshold=32 (int)" in block
    assert "vnodes=64 (int)" in out and "migrate=false (bool)" in out
    assert "seed=" not in out  # set by --seed, not by a spec
    from policies.registry import create, get_info

    params = {p.name: p.default for p in get_info("routing", "prefix_affinity").parameters()}
    assert params["cache_threshold"] == 0.5
    assert create("routing", "prefix_affinity:cache_threshold=0.25").cache_threshold == 0.25


# ---- 8. README commands ----------------------------------------------------------------------


def test_readme_commands_run_from_the_venv_or_after_activating_it() -> None:
    text = (ROOT / "README.md").read_text()
    assert "source .venv/bin/activate" in text
    # each fenced block from its opening fence to its closing one (not from a closing
    # fence to the next opening one: the prose between blocks is not a command)
    fenced = re.findall(r"^```([\w-]*)\n(.*?)^```$", text, flags=re.S | re.M)
    blocks = [body for lang, body in fenced if lang in ("", "bash", "sh")]
    assert 2 * len(fenced) == text.count("```")
    bare = [
        line
        for b in blocks
        for line in b.splitlines()
        if re.match(r"\s*agentsim\b", line) or re.search(r"&& agentsim\b", line)
    ]
    assert not bare, bare
