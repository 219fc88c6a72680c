"""Issue 15 leftovers: sweep takes (and honours) every run flag, atomic and vetted
calibration / keynote outputs, costmodel predict's precision flags, the report's
cluster title under --gpu overrides."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from sim.cli.main import build_parser, main
from sim.common.paths import DEFAULT_TRACE

REPO = Path(__file__).resolve().parents[1]


def hidden_leftovers(root: Path) -> list[Path]:
    """Temporary siblings an atomic write leaves only when it goes wrong."""
    return [p for p in root.rglob(".*") if p.name.endswith((".tmp", ".partial", ".old"))]


# ---- 1. compare and sweep accept every flag run takes ----------------------------------


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _help_flags(cmd: str) -> set[str]:
    """The long flags ``agentsim CMD --help`` prints (as a user reads them)."""
    text = _subparsers()[cmd].format_help()
    found = re.findall(r"^ {2}(?:-\w(?: \S+)?, )?(--[a-z][a-z0-9-]*)", text, re.M)
    return set(found) - {"--help"}


def _sample_value(action: argparse.Action) -> list[str]:
    if action.nargs == 0:
        return []
    if action.choices:
        return [str(next(iter(action.choices)))]
    if action.type is int:
        return ["1"]
    if action.type is float:
        return ["0.5"]
    return ["x"]


@pytest.mark.parametrize("cmd", ["compare", "sweep"])
def test_every_run_flag_is_accepted_by_compare_and_sweep(cmd: str) -> None:
    run_flags = _help_flags("run")
    assert {"--slo-ttft", "--slo-tpot", "--faults", "--dtype", "--out"} <= run_flags
    assert run_flags - _help_flags(cmd) == set()
    # ... and parses there with a value like run's
    parsers = _subparsers()
    by_flag = {o: a for a in parsers["run"]._actions for o in a.option_strings}
    required = {"compare": ["--policies", "round_robin"], "sweep": ["s.toml"]}[cmd]
    for flag in sorted(run_flags):
        argv = [*required, flag, *_sample_value(by_flag[flag])]
        ns, unknown = parsers[cmd].parse_known_args(argv)
        assert unknown == [], (flag, unknown)
        assert getattr(ns, by_flag[flag].dest) is not None, flag


SMALL = """
[sweep]
metrics = ["ttft_s.p99"]

[base]
trace = "{trace}"
nodes = 1
model = "llama-3-8b"
tp = 1
replicas = 2
max_num_seqs = 4

[grid]
policies = ["round_robin", "session_affinity"]
"""

# GPU 0 (replica 0's) fails at 100 s and is not repaired: its calls fail or move.
FAULTS = """
[[faults]]
at_s = 100.0
kind = "gpu"
gpu = 0
"""


def _table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "sweep.parquet").sort_values("policy").reset_index(drop=True)


def test_sweep_honours_faults_and_persistence(tmp_path: Path) -> None:
    """--faults and --persistence were parsed by sweep and silently dropped."""
    s = tmp_path / "s.toml"
    s.write_text(SMALL.format(trace=DEFAULT_TRACE))
    f = tmp_path / "f.toml"
    f.write_text(FAULTS)
    base = ["sweep", str(s), "--workers", "1", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--out", str(tmp_path / "f"), "--faults", str(f)]) == 0
    args = ["--faults", str(f), "--persistence", "remote_store"]
    assert main([*base, "--out", str(tmp_path / "fp"), *args]) == 0
    plain, faulty, kept = (_table(tmp_path / d) for d in ("plain", "f", "fp"))
    # the fault schedule is part of each run's identity, and of its results
    assert set(plain.run_id).isdisjoint(faulty.run_id)
    assert set(faulty.run_id).isdisjoint(kept.run_id)
    assert (faulty["faults"] == str(f)).all() and "faults" not in plain
    assert (kept["persistence"] == "remote_store").all() and "persistence" not in faulty
    assert "faults.injected.gpu" not in plain
    assert (faulty["faults.injected.gpu"] == 1).all() and (
        faulty["faults.replicas_lost"] == 1
    ).all()
    assert (faulty["faults.persistence"] == "none").all()
    assert (kept["faults.persistence"] == "remote_store").all()
    # the same runs as `agentsim run --faults` gives
    r = tmp_path / "r"
    argv = ["run", "--quiet", "--no-html", "--out", str(r), "--faults", str(f)]
    argv += ["--nodes", "1", "--model", "llama-3-8b", "--tp", "1", "--replicas", "2"]
    argv += ["--max-num-seqs", "4", "--policy", "round_robin"]
    assert main(argv) == 0
    single = json.loads((r / "summary.json").read_text())
    row = faulty[faulty.policy == "round_robin"].iloc[0]
    assert row["failed_requests"] == single["failed_requests"]
    assert row["ttft_s.p99"] == pytest.approx(single["ttft_s"]["p99"], rel=1e-12)


def test_sweep_slo_applies_at_report_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = tmp_path / "s.toml"
    s.write_text(SMALL.format(trace=DEFAULT_TRACE))
    out = tmp_path / "o"
    base = ["sweep", str(s), "--out", str(out), "--workers", "1", "--quiet"]
    assert main([*base, "--slo-ttft", "0.05", "--slo-tpot", "0.5"]) == 0
    t1 = _table(out)
    assert (t1["slo.ttft_s"] == 0.05).all() and (t1["slo.tpot_s"] == 0.5).all()
    perf = {p.parent.name: p.read_bytes() for p in (out / "runs").glob("*/perf.json")}
    # another SLO: the same runs (the SLO changes no simulated number), re-reported
    assert main([*base[:-1], "--slo-ttft", "100"]) == 0
    assert "2 already done, 0 ran, 0 failed, 2 re-reported for the SLO" in capsys.readouterr().err
    t2 = _table(out)
    assert t2.run_id.tolist() == t1.run_id.tolist()
    assert (t2["slo.ttft_s"] == 100.0).all() and (t2["slo.tpot_s"] == 0.1).all()
    assert (t2["ttft_slo_attainment"] >= t1["ttft_slo_attainment"]).all()
    assert (t2["ttft_slo_attainment"] > t1["ttft_slo_attainment"]).any()
    assert t2["ttft_s.p99"].tolist() == t1["ttft_s.p99"].tolist()
    # not simulated again: each run's perf.json (wall times) is the first run's
    assert {p.parent.name: p.read_bytes() for p in (out / "runs").glob("*/perf.json")} == perf
    # the run's report.md shows the new SLO; [base] slo_ttft does the same as the flag
    md = next((out / "runs").glob("*/report.md")).read_text()
    assert "TTFT <= 100" in md
    assert not hidden_leftovers(tmp_path)
    s2 = tmp_path / "s2.toml"
    s2.write_text(SMALL.format(trace=DEFAULT_TRACE).replace("[grid]", "slo_ttft = 100\n[grid]"))
    assert main(["sweep", str(s2), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    assert "re-reported" not in capsys.readouterr().err
    assert main(["sweep", str(s), "--out", str(out), "--slo-ttft", "-1", "--quiet"]) == 2
    assert "slo_ttft" in capsys.readouterr().err


# ---- 2/3. calibration outputs: vetted before the work, written whole or not at all -------

RECORDS = REPO / "calibration/records/torch-tiny-llama-cpu.jsonl"
COSTMODEL = REPO / "calibration/costmodels/torch-tiny-llama-cpu.toml"


def _no_work(*args: object, **kwargs: object) -> object:
    raise AssertionError("the work started before --output was vetted")


def _interrupting_write_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Path.write_text writes half of the text, then Ctrl-C."""
    real = Path.write_text

    def half(self: Path, data: str, *args: object, **kwargs: object) -> int:
        real(self, data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half)


@pytest.mark.parametrize(
    "output, problem",
    [("dir", "is a directory"), ("records", "is the input"), ("file/x.toml", "not a directory")],
)
def test_calibrate_fit_output_is_vetted_before_fitting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    output: str,
    problem: str,
) -> None:
    import sim.calibration.fit as fit

    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    records = tmp_path / "records.jsonl"
    records.write_bytes(RECORDS.read_bytes())
    monkeypatch.setattr(fit, "fit_files", _no_work)
    out = records if output == "records" else tmp_path / output
    assert main(["calibrate", "fit", str(records), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--output" in err and problem in err and "Traceback" not in err
    assert records.read_bytes() == RECORDS.read_bytes()


def test_calibrate_fit_writes_whole_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sim.calibration.fit as fit

    text = COSTMODEL.read_text()
    out = tmp_path / "new" / "cm.toml"
    # a fit whose TOML does not parse: nothing written (it was written, then refused)
    monkeypatch.setattr(fit, "fit_files", lambda *a, **k: text.replace("[", "[[", 1))
    assert main(["calibrate", "fit", str(RECORDS), "-o", str(out)]) == 2
    assert not (tmp_path / "new").exists()
    # Ctrl-C in the middle of the write: no partial TOML, no temporary file
    monkeypatch.setattr(fit, "fit_files", lambda *a, **k: text)
    _interrupting_write_text(monkeypatch)
    assert main(["calibrate", "fit", str(RECORDS), "-o", str(out)]) == 130
    assert not (tmp_path / "new").exists() and not hidden_leftovers(tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(fit, "fit_files", lambda *a, **k: text)
    capsys.readouterr()
    assert main(["calibrate", "fit", str(RECORDS), "-o", str(out)]) == 0
    assert out.read_text() == text


def test_calibrate_import_output_is_vetted_before_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sim.calibration.vidur as vidur

    monkeypatch.setattr(vidur, "import_vidur", _no_work)
    (tmp_path / "d").mkdir()
    prof = tmp_path / "profile"
    prof.mkdir()
    argv = ["calibrate", "import", "--from", "vidur", str(prof), "-o", str(tmp_path / "d")]
    assert main(argv) == 2
    assert "is a directory" in capsys.readouterr().err
    argv[-1] = str(prof / "inside.jsonl")  # inside the profile directory it reads
    assert main(argv) == 2
    assert "inside the input directory" in capsys.readouterr().err


def test_write_records_leaves_nothing_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sim.calibration import records as rec

    sections = rec.read_records(RECORDS)
    out = tmp_path / "r.jsonl"
    real_open = open

    def failing_open(path: object, mode: str = "r", *a: object, **k: object) -> object:
        fh = real_open(path, mode, *a, **k)  # type: ignore[call-overload]
        if "w" in mode:
            fh.write(b"partial")
            fh.close()
            raise KeyboardInterrupt
        return fh

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(KeyboardInterrupt):
        rec.write_records(out, sections)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    rec.write_records(out, sections)
    assert [len(s.samples) for s in rec.read_records(out)] == [len(s.samples) for s in sections]


def test_calibrate_record_output_is_vetted_before_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sim.calibration.grid as grid

    monkeypatch.setattr(grid, "load_grid", _no_work)
    g = REPO / "examples/calibration/tiny-cpu.toml"

    def base_for(grid_file: Path) -> list[str]:
        argv = ["calibrate", "record", "--engine", "torch", "--model", "tiny-llama"]
        return [*argv, "--grid", str(grid_file), "--device", "cpu", "-o"]

    base = base_for(g)
    (tmp_path / "d").mkdir()
    assert main([*base, str(tmp_path / "d")]) == 2
    assert "is a directory" in capsys.readouterr().err
    toml = tmp_path / "costmodel.toml"  # a typo'd -o: never appended to
    toml.write_text('name = "x"\n')
    assert main([*base, str(toml)]) == 2
    assert "is not a calibration records file" in capsys.readouterr().err
    assert toml.read_text() == 'name = "x"\n'
    copy = tmp_path / "grid.toml"
    copy.write_bytes(g.read_bytes())
    assert main([*base_for(copy), str(copy)]) == 2
    assert "is the input" in capsys.readouterr().err
    assert copy.read_bytes() == g.read_bytes()
    # an earlier recording (resumed) and a new file pass the check and reach the work
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_bytes(RECORDS.read_bytes())
    for out in (earlier, tmp_path / "new" / "r.jsonl"):
        with pytest.raises(AssertionError, match="work started"):
            main([*base, str(out)])


class _FakeComparison:
    def to_dict(self) -> dict[str, object]:
        return {"b": 2.0, "a": {"p50": 1.0, "text": "x" * 1000}}


def test_compare_e2e_json_is_vetted_first_and_written_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sim.calibration.compare_e2e as ce

    monkeypatch.setattr(ce, "compare", _no_work)
    rec = REPO / "calibration/records/http-llama-3-8b-h100-80gb.jsonl"
    base = ["calibrate", "compare-e2e", "--records", str(rec), "--costmodel", str(COSTMODEL)]
    (tmp_path / "d").mkdir()
    assert main([*base, "--json", str(tmp_path / "d")]) == 2
    assert "--json" in capsys.readouterr().err
    assert main([*base, "--json", str(COSTMODEL)]) == 2
    assert "is the input" in capsys.readouterr().err
    monkeypatch.setattr(ce, "compare", lambda *a, **k: _FakeComparison())
    monkeypatch.setattr(ce, "format_comparison", lambda c: "table")
    out = tmp_path / "new" / "cmp.json"
    _interrupting_write_text(monkeypatch)
    assert main([*base, "--json", str(out)]) == 130
    assert not (tmp_path / "new").exists() and not hidden_leftovers(tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(ce, "compare", lambda *a, **k: _FakeComparison())
    monkeypatch.setattr(ce, "format_comparison", lambda c: "table")
    assert main([*base, "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == _FakeComparison().to_dict()
    assert out.read_text().index('"a"') < out.read_text().index('"b"')  # sorted keys


# ---- 2. keynote outputs ------------------------------------------------------------------


def _answer(key: str, plot: object) -> object:
    import keynote

    return keynote.Answer(
        key, "9. A demo", "x saves 3 ± 1", pd.DataFrame({"a": [1.0]}), {"k": "v"}, [0, 1],
        plot, {"per_size": pd.DataFrame({"b": [2]})},
    )  # fmt: skip


def _fig() -> object:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    return fig


def test_keynote_outputs_are_written_as_one_directory(tmp_path: Path) -> None:
    import keynote

    def broken() -> object:
        raise RuntimeError("plot failed")

    out = tmp_path / "k"
    with pytest.raises(RuntimeError):
        keynote.write_answers([_answer("q1", _fig), _answer("q2", broken)], out, keynote.CI)
    assert not out.exists() and not hidden_leftovers(tmp_path)  # not q1.csv alone
    keynote.write_answers([_answer("q1", _fig), _answer("q2", _fig)], out, keynote.CI)
    assert {p.name for p in out.iterdir()} >= {"q1.csv", "q2.png", "keynote.md"}
    # a rerun replaces the earlier results whole: no file of the old run survives
    keynote.write_answers([_answer("q3", _fig)], out, keynote.CI)
    assert sorted(p.name for p in out.iterdir()) == [
        "keynote.md", "q3.csv", "q3.png", "q3_per_size.csv"
    ]  # fmt: skip
    # a directory agentsim did not write is refused before any experiment runs
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(Exception, match="did not write"):
        keynote.main(["--out", str(mine), "--scale", "ci"])
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


# ---- 4. the deployment's precision reaches costmodel predict and the keynote ---------------


def test_keynote_prefill_price_uses_the_deployments_dtype() -> None:
    from dataclasses import replace

    import keynote

    from sim.cluster.config import validate

    cfg = keynote.cluster("llama-3-70b", 4, 1, 1, gpu="h100-80gb")
    fp8 = validate(replace(cfg, deployments=(replace(cfg.deployments[0], dtype="fp8"),)))
    bf16, f8 = (keynote.prefill_usd_per_token(c, 8192) for c in (cfg, fp8))
    # FP8 GEMMs at the FP8 peak: a compute-bound prefill chunk is clearly cheaper
    assert f8 < 0.8 * bf16


def _predict(tmp_path: Path, *flags: str) -> list[float]:
    shapes = tmp_path / "shapes.csv"
    shapes.write_text(
        "num_prefill_seqs,prefill_len,num_decode_seqs,decode_context_len\n1,4096,0,0\n0,0,64,8192\n"
    )
    out = tmp_path / "out.csv"
    argv = ["costmodel", "predict", "--model", "llama-3-70b", "--gpu", "h100-80gb", "--tp", "4"]
    assert main([*argv, *flags, "--shapes", str(shapes), "-o", str(out)]) == 0
    return pd.read_csv(out)["iteration_s"].tolist()


def test_costmodel_predict_takes_dtype_and_kv_cache_dtype(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefill, decode = _predict(tmp_path)
    assert _predict(tmp_path, "--dtype", "bf16") == [prefill, decode]  # the model's own
    fp8_prefill, fp8_decode = _predict(tmp_path, "--dtype", "fp8")
    assert fp8_prefill < 0.8 * prefill and fp8_decode < 0.8 * decode
    kv_prefill, kv_decode = _predict(tmp_path, "--kv-cache-dtype", "fp8")
    # an FP8 KV cache halves the KV reads of decode (64 x 8k context), weights unchanged
    assert kv_decode < 0.95 * decode and fp8_decode < kv_decode
    assert kv_prefill == pytest.approx(prefill, rel=0.02)
    # the same cost model, hardware and precision as `agentsim run --dtype fp8` prices
    from sim.calibration.validate import iteration_batch
    from sim.costmodel.base import ReplicaHardware
    from sim.costmodel.loader import resolve_cost_model
    from sim.specs.hardware import get_gpu
    from sim.specs.models import get_model

    gpu = get_gpu("h100-80gb")
    hw = ReplicaHardware(
        get_model("llama-3-70b").with_dtype("fp8"), gpu, 4, 1,
        gpu.nvlink_bandwidth, 5e-6, "nvlink", gpu.nvlink_bandwidth, 5e-6,
    )  # fmt: skip
    it = resolve_cost_model(None, "h100-80gb").for_replica(hw)
    shape = {"num_prefill_seqs": 1.0, "prefill_len": 4096.0}
    shape |= {"num_decode_seqs": 0.0, "decode_context_len": 0.0}
    assert fp8_prefill == it.iteration_time(iteration_batch(shape))
    capsys.readouterr()
    shapes = str(tmp_path / "shapes.csv")
    argv = ["costmodel", "predict", "--model", "llama-3-70b", "--dtype", "fp8"]
    assert main([*argv, "--shapes", shapes, "-o", str(tmp_path / "x.csv")]) == 2
    assert "fp8 needs FP8 tensor cores, which a100-80gb does not have" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
    # the shapes file as the output: refused, not overwritten
    before = Path(shapes).read_bytes()
    assert (
        main(["costmodel", "predict", "--model", "llama-3-8b", "--shapes", shapes, "-o", shapes])
        == 2
    )
    assert Path(shapes).read_bytes() == before


# ---- 6. the report's cluster title follows --gpu / --nodes overrides -------------------


def test_report_titles_the_cluster_by_the_simulated_hardware(tmp_path: Path) -> None:
    from sim.cluster.config import apply_overrides, default_cluster_config
    from sim.report.results import cluster_title

    d = default_cluster_config()
    assert cluster_title(d.to_dict()) == "2x DGX A100 80GB"
    assert cluster_title(apply_overrides(d, gpu="h200-141gb").to_dict()) == "2x DGX H200 141GB"
    l40s = apply_overrides(d, gpu="l40s-48gb", nodes=3).to_dict()
    assert cluster_title(l40s) == "3x PCIe server (8x L40S 48GB)"
    from dataclasses import replace

    named = replace(d, name="rack 7")
    assert cluster_title(named.to_dict()) == "rack 7"
    assert (
        cluster_title(apply_overrides(named, gpu="h100-80gb").to_dict())
        == '2x DGX H100 80GB (config "rack 7" with overrides)'
    )
    out = tmp_path / "r"
    argv = ["run", "--quiet", "--no-html", "--out", str(out), "--gpu", "h100-80gb"]
    argv += ["--nodes", "1", "--model", "llama-3-8b", "--tp", "1", "--replicas", "2"]
    assert main(argv) == 0
    md = (out / "report.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("- Cluster:"))
    assert line.startswith("- Cluster: 1x DGX H100 80GB — 8 x h100-80gb (1 x dgx-a100)")
    assert "A100 80GB" not in md.split("## Requests")[0]


def test_write_canonical_to_a_path_is_atomic(tmp_path: Path) -> None:
    """The API's write_canonical(calls, path) left a header-only file when the calls
    failed midway (trace convert was atomic, the function it calls was not)."""
    from sim.workload.traces import load_trace
    from sim.workload.traces.canonical import write_canonical

    calls = load_trace(str(DEFAULT_TRACE)).calls

    def failing() -> object:
        yield from calls[:5]
        raise RuntimeError("reader failed")

    for name in ("t.jsonl", "t.jsonl.gz"):
        out = tmp_path / f"new-{name}" / name
        with pytest.raises(RuntimeError):
            write_canonical(failing(), out)
        assert not out.parent.exists() and not hidden_leftovers(tmp_path)
        assert write_canonical(calls, out) == len(calls)
        assert len(load_trace(str(out)).calls) == len(calls)


def test_sweep_base_takes_the_precision_flags(tmp_path: Path) -> None:
    """[base] accepted only part of the quick flags (dtype, max_model_len, ... were
    'unknown key'), although the same flags on the command line worked."""
    from sim.experiments.sweep import expand, load_sweep

    s = tmp_path / "s.toml"
    extra = 'gpu = "h100-80gb"\ndtype = "fp8"\nkv_cache_dtype = "fp8"\nmax_model_len = 4096\n'
    extra += "gpu_memory_utilization = 0.8\n"
    s.write_text(SMALL.format(trace=DEFAULT_TRACE).replace("[grid]", extra + "[grid]"))
    dep = expand(load_sweep(s))[0].cluster.deployments[0]
    assert (dep.dtype, dep.kv_cache_dtype, dep.max_model_len) == ("fp8", "fp8", 4096)
    assert dep.gpu_memory_utilization == 0.8


# ---- 5. calibration docs: a replay is the same model within tolerances, not bytes -------


def test_docs_do_not_promise_byte_for_byte_calibration_replays() -> None:
    files = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), REPO / "calibration/README.md"]
    files += [*(REPO / "scripts").glob("*.sh")]
    bad = []
    for f in files:
        lines = f.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            near = " ".join(lines[max(0, i - 1) : i + 2]).lower()
            if re.search(r"byte[- ]for[- ]byte", line) and re.search(
                r"replay|calibrat|refit", near
            ):
                bad.append(f"{f.relative_to(REPO)}:{i + 1}: {line.strip()}")
    assert bad == []
