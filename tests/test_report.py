"""Reports of tiny scenarios contain the numbers worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from sim.cli.main import main
from sim.metrics.recorder import CALL_COLUMNS, Recorder, session_frame, summarize
from sim.report.results import SLO, enrich_summary, load_results, render_markdown, write_results
from sim.simulation import TIMELINE_COLUMNS, SimResult, simulate
from sim.specs.hardware import get_gpu
from sim.specs.models import get_model
from sim.specs.topology import NVME_BW
from tests.helpers import ROOFLINE, cluster, llm, workload

PRICE = get_gpu("a100-80gb").price_per_hour


def _known_latencies() -> SimResult:
    """Ten calls issued at 0 on one 2-GPU replica, TTFT k/10 s (k = 1..10), 11 output
    tokens each; odd k decode at 50 ms/token, even k at 200 ms/token."""
    rec = Recorder()
    for k in range(1, 11):
        ttft = k / 10
        tpot = 0.05 if k % 2 else 0.2
        fin = ttft + 10 * tpot
        row = {"call_id": f"c{k}", "session_id": f"s{k}", "kind": "llm", "model": "m",
               "replica": 0, "status": "completed", "reason": "", "issue_s": 0.0,
               "admit_s": 0.0, "first_token_s": ttft, "finish_s": fin, "input_tokens": 100,
               "output_tokens": 11, "generated_tokens": 11}  # fmt: skip
        rec.add(tuple(row.get(c, 0) for c in CALL_COLUMNS))  # other counters: 0
    calls = rec.frame()
    sessions = session_frame(calls)
    makespan = float(calls["finish_s"].max())  # k = 10: 1.0 + 10 x 0.2 = 3.0 s
    summary = summarize(
        calls,
        sessions,
        sessions=10,
        makespan_s=makespan,
        prompt_tokens=1000,
        hit_tokens=250,
        preemptions=0,
        cold_starts=0,
        gpu_hours=2 * makespan / 3600,
        price_per_hour=PRICE,
        seed=0,
        policy="hand",
    )
    replicas = pd.DataFrame(
        [{"replica": 0, "model": "m", "gpus": "0,1", "node": 0, "start_s": 0.0, "ready_s": 0.0,
          "stop_s": makespan, "cold_start_s": 0.0, "busy_s": 1.5, "iterations": 10,
          "preemptions": 0, "kv_capacity_blocks": 100, "evictions": 7, "prompt_tokens": 1000,
          "hit_tokens": 250}]
    )  # fmt: skip
    # KV: 40 blocks used for the first 1.5 s, then 10 blocks
    timeline = pd.DataFrame(
        [(0.0, 0, 10, 0, 40, 40), (1.5, 0, 0, 0, 10, 0)], columns=TIMELINE_COLUMNS
    )
    cfg = cluster(model="llama-2-7b", tp=2)
    config = {"cluster": cfg.to_dict(), "trace": "hand.jsonl", "load_scale": 1.0, "seed": 0,
              "costmodel": {"name": "roofline"}, "memory": {}}  # fmt: skip
    return SimResult(summary, calls, sessions, timeline, replicas, config)


def test_percentiles_slo_and_goodput_of_known_latencies() -> None:
    r = _known_latencies()
    s = enrich_summary(r, SLO(ttft_s=0.5, tpot_s=0.1))
    # numpy's linear-interpolated percentiles of 0.1, 0.2, ..., 1.0
    assert s["ttft_s"]["p50"] == pytest.approx(0.55)
    assert s["ttft_s"]["p90"] == pytest.approx(0.91)
    # k = 1..5 meet TTFT; odd k meet TPOT; both: k = 1, 3, 5
    assert s["ttft_slo_attainment"] == pytest.approx(0.5)
    assert s["tpot_slo_attainment"] == pytest.approx(0.5)
    assert s["slo_attainment"] == pytest.approx(0.3)
    assert s["goodput_calls_per_s"] == pytest.approx(3 / 3.0)
    assert s["goodput_tokens_per_s"] == pytest.approx(33 / 3.0)
    # 2 GPUs x 3 s; busy 1.5 s x 2 GPUs
    cost = 2 * 3.0 / 3600 * PRICE
    assert s["cost_usd"] == pytest.approx(cost)
    assert s["usd_per_m_output_tokens"] == pytest.approx(cost / 110 * 1e6)
    assert s["usd_per_m_tokens"] == pytest.approx(cost / 1110 * 1e6)
    assert s["gpu_busy_hours"] == pytest.approx(2 * 1.5 / 3600)
    assert s["gpu_idle_hours"] == pytest.approx(2 * 1.5 / 3600)
    assert s["gpu_utilization"] == pytest.approx(0.5)
    # time-weighted KV: (40 x 1.5 + 10 x 1.5) / 3 / 100 blocks
    assert s["kv_occupancy_mean"] == pytest.approx(0.25)
    assert s["kv_occupancy_peak"] == pytest.approx(0.4)
    assert s["kv_evictions"] == 7
    md = render_markdown(s, r.config, r.replicas, r.timeline)
    for text in ("550.0 ms", "910.0 ms", "Attainment: 30.0%", "1 calls/s", "utilisation 50.0%",
                 "Prefix-cache hit rate: 25.0%", "mean 25.0%, peak 40.0%", "Evictions: 7 blocks",
                 f"(= {s['gpu_hours']:.4g} GPU-hours x ${PRICE:,.2f})", f"${cost:,.2f}"):  # fmt: skip
        assert text in md, text
    # the replica row: busy 1.5 s of 3 s, mean running (10 x 1.5 s) / 3 s = 5
    assert "| 0 | m | 0,1 | 1.5 | 50.0% | 5.00 | 0.00 | 0 | 25.0% |" in md


def test_simulated_cost_is_gpus_times_hours_times_price(tmp_path: Path) -> None:
    w = workload([llm("a", "s", 500, 50)])
    r = simulate(w, cluster(model="llama-2-70b", tp=4, replicas=2), cost_model=ROOFLINE)
    span = r.summary["makespan_s"]
    write_results(r, tmp_path)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["gpu_hours"] == pytest.approx(8 * span / 3600, rel=1e-9)
    assert s["cost_usd"] == pytest.approx(8 * span / 3600 * PRICE, rel=1e-9)
    # one call on replica 0 keeps it busy for the whole makespan; replica 1 idles
    assert s["gpu_busy_hours"] == pytest.approx(4 * span / 3600, rel=1e-9)
    assert s["gpu_idle_hours"] == pytest.approx(4 * span / 3600, rel=1e-9)
    md = (tmp_path / "report.md").read_text()
    assert f"cost: ${8 * span / 3600 * PRICE:,.2f}" in md
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6
    assert 'src="http' not in html and "<script" not in html
    assert f"${8 * span / 3600 * PRICE:,.2f}" in html
    assert json.loads((tmp_path / "perf.json").read_text())["report_render_s"] > 0


def test_cold_start_is_billed_and_weight_bytes_counted_per_link(tmp_path: Path) -> None:
    w = workload([llm("a", "s", 100, 2)])
    r = simulate(w, cluster(model="llama-2-7b", tp=2, cold_start=True), cost_model=ROOFLINE)
    s = enrich_summary(r)
    shard = -(-get_model("llama-2-7b").weight_bytes // 2)
    # pod start-up: scheduling + image pull (sim/cluster/config.py Deployment defaults), then the
    # weight load over the NVMe drive (its measured read rate, not derated) + init_s
    load_s = 5.0 + 90.0 + shard / NVME_BW + 20.0
    assert r.replicas.loc[0, "cold_start_s"] == pytest.approx(load_s)
    assert s["cold_start_gpu_hours"] == pytest.approx(2 * load_s / 3600)
    assert s["cold_start_usd"] == pytest.approx(2 * load_s / 3600 * PRICE)
    assert s["bytes_moved"] == {
        "nvlink": 0.0,
        "pcie": 0.0,
        "network": 0.0,
        "host": 0.0,
        "nvme": float(2 * shard),
    }
    busy_h = 2 * r.replicas.loc[0, "busy_s"] / 3600
    assert s["gpu_idle_hours"] == pytest.approx(s["gpu_hours"] - busy_h - 2 * load_s / 3600)


def test_report_command_rerenders_saved_run_without_simulating(tmp_path: Path, capsys) -> None:
    r = _known_latencies()
    write_results(r, tmp_path, slo=SLO(0.5, 0.1))
    before = (tmp_path / "report.md").read_text()
    (tmp_path / "report.md").unlink()
    (tmp_path / "report.html").unlink()
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")
    assert (tmp_path / "report.md").read_text() == before  # keeps the saved SLO
    assert (tmp_path / "report.html").exists()
    assert main(["report", "--quiet", "--slo-ttft", "1.0", "--no-html", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["slo"] == {"ttft_s": 1.0, "tpot_s": 0.1}
    assert s["ttft_slo_attainment"] == pytest.approx(1.0)
    assert s["slo_attainment"] == pytest.approx(0.5)
    loaded = load_results(tmp_path)
    pd.testing.assert_frame_equal(loaded.calls, r.calls)


def test_report_command_rejects_a_directory_without_a_run(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_run_prints_report_html_path_last(tmp_path: Path, capsys) -> None:
    assert main(["run", "--quiet", "--out", str(tmp_path / "r"), "--slo-ttft", "0.05"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(tmp_path / "r" / "report.html")
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["slo"]["ttft_s"] == 0.05
    calls = pd.read_parquet(tmp_path / "r" / "calls.parquet")
    ok = calls[(calls["kind"] == "llm") & (calls["status"] == "completed")]
    tpot_ok = ok["tpot_s"].isna() | (ok["tpot_s"] <= 0.1)
    expect = ((ok["ttft_s"] <= 0.05) & tpot_ok).sum() / (calls["kind"] == "llm").sum()
    assert math.isclose(s["slo_attainment"], expect, rel_tol=1e-9)
