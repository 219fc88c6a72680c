"""Output safety: no command overwrites its input, every output file and directory is
written whole or not at all (failures and Ctrl-C leave nothing behind), ``--out`` is
vetted before simulating, and default directories are named by the configuration."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sim.cli.main import main
from sim.common.errors import InputError
from sim.common.io import atomic_dir, atomic_write_json, atomic_write_stream

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "traces" / "default.jsonl"
AZURE = (
    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2023-11-16 18:15:46.6805900,374,44\n"
    "2023-11-16 18:15:50.9951690,396,109\n"
    "2023-11-16 18:15:52.0000000,812,20\n"
)
#: A run of the default trace without the plots: about a second.
FAST = ["--quiet", "--no-html"]


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def interrupted_main(argv: list[str]) -> int:
    """``main(argv)`` for a test that makes it hit Ctrl-C: an interrupt escaping
    main() fails the test (instead of stopping pytest)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main()")


def listing(d: Path) -> list[str]:
    """Every entry under ``d`` (hidden ones included), relative, sorted."""
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def hidden_leftovers(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".")]


# ---- 1. input == output -------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    t = tmp_path / "t.jsonl"
    t.write_bytes(TRACE.read_bytes())
    az = tmp_path / "az.csv"
    az.write_text(AZURE)
    (tmp_path / "link.jsonl").symlink_to(t)
    os.link(t, tmp_path / "hard.jsonl")
    return {"trace": t, "azure": az}


@pytest.mark.parametrize(
    "argv",
    [
        ["trace", "convert", "{t}", "-o", "{t}"],
        ["trace", "convert", "{t}", "-o", "{d}/./t.jsonl"],
        ["trace", "convert", "{t}", "-o", "{d}/link.jsonl"],  # a symlink to the input
        ["trace", "convert", "{d}/link.jsonl", "-o", "{d}/hard.jsonl"],  # a hard link
        ["trace", "convert", "--from", "azure", "{az}", "-o", "{az}"],
        ["trace", "sample", "{t}", "--sessions", "2", "-o", "{t}"],
        ["trace", "sample", "{t}", "--sessions", "2", "-o", "{d}/hard.jsonl"],
    ],
    ids=["same", "same-spelled-differently", "symlink", "hardlink", "azure", "sample", "sample-hardlink"],
)  # fmt: skip
def test_output_on_the_input_is_refused_and_the_input_kept(
    tmp_path: Path, inputs: dict[str, Path], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    before = {p: p.read_bytes() for p in inputs.values()}
    args = [
        a.format(t=inputs["trace"], az=inputs["azure"], d=tmp_path) for a in argv
    ]  # fmt: skip
    assert main(args) == 2
    err = one_line_error(capsys)
    assert "--out: is the input" in err, err
    assert {p: p.read_bytes() for p in inputs.values()} == before
    assert not hidden_leftovers(tmp_path)


def test_synth_output_on_its_config_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_bytes((ROOT / "examples" / "synth" / "default.toml").read_bytes())
    text = cfg.read_bytes()
    assert main(["trace", "synth", str(cfg), "-o", str(cfg)]) == 2
    assert "is the input" in one_line_error(capsys)
    assert cfg.read_bytes() == text


def test_any_command_refuses_an_output_that_is_an_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The guard in sim.cli.main covers every command with --out/-o/--output."""
    shapes = tmp_path / "shapes.csv"
    shapes.write_text("phase,batch,context\nprefill,1,128\n")
    argv = ["costmodel", "predict", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--tp", "1"]
    assert main([*argv, "--shapes", str(shapes), "-o", str(shapes)]) == 2
    assert "--output: is the input" in one_line_error(capsys)
    assert shapes.read_text().startswith("phase,batch")


# ---- 2. output files are written whole ---------------------------------------------------


def test_a_failing_conversion_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "az.csv"
    src.write_text(AZURE + "2023-11-16 18:15:53.0000000,abc,109\n")  # bad after 3 good rows
    out = tmp_path / "out" / "az.jsonl"
    assert main(["trace", "convert", "--from", "azure", str(src), "-o", str(out)]) == 2
    assert "az.csv:5: ContextTokens" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()  # nor the folder made for it
    # An earlier complete output survives a failing conversion whole.
    good = tmp_path / "good.csv"
    good.write_text(AZURE)
    assert main(["trace", "convert", "--from", "azure", str(good), "-o", str(out)]) == 0
    kept = out.read_bytes()
    assert main(["trace", "convert", "--from", "azure", str(src), "-o", str(out)]) == 2
    assert out.read_bytes() == kept and listing(tmp_path / "out") == ["az.jsonl"]


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz"])
def test_ctrl_c_mid_conversion_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    import sim.cli.trace as tr

    real = tr.write_canonical

    def interrupted(calls: Any, fh: Any, header: Any) -> int:
        def some() -> Any:
            for i, c in enumerate(calls):
                if i == 50:
                    raise KeyboardInterrupt
                yield c

        return real(some(), fh, header)

    monkeypatch.setattr(tr, "write_canonical", interrupted)
    out = tmp_path / name
    assert interrupted_main(["trace", "convert", str(TRACE), "-o", str(out)]) == 130
    assert one_line_error(capsys) == "agentsim: interrupted"
    assert listing(tmp_path) == []


def test_atomic_stream_gives_the_bytes_of_a_direct_write(tmp_path: Path) -> None:
    from sim.workload.traces.io import open_write

    text = '{"a": 1}\n' * 100
    for name in ("x.jsonl", "x.jsonl.gz"):
        (tmp_path / "direct").mkdir(exist_ok=True)
        with open_write(str(tmp_path / "direct" / name)) as fh:
            fh.write(text)
        assert atomic_write_stream(tmp_path / name, lambda fh: fh.write(text)) == len(text)
        # .gz: mtime 0 and the target's own name in the header, not the temporary one
        assert (tmp_path / name).read_bytes() == (tmp_path / "direct" / name).read_bytes()


# ---- 3. output directories are written whole ---------------------------------------------


def test_atomic_dir_installs_whole_or_not_at_all(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "a" / "b" / "run") as d:
        atomic_write_json(d / "summary.json", {"run": 1})
        raise KeyboardInterrupt
    assert listing(tmp_path) == []  # the folders made for it are gone too
    target = tmp_path / "run"
    with atomic_dir(target) as d:
        atomic_write_json(d / "summary.json", {"run": 1})
        (d / "report.html").write_text("run 1")
    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        atomic_write_json(d / "summary.json", {"run": 2})
        raise RuntimeError("render failed")
    assert listing(tmp_path) == ["run", "run/report.html", "run/summary.json"]
    assert json.loads((target / "summary.json").read_text()) == {"run": 1}
    # replaced whole: run 2 has no report.html, so none is left from run 1
    with atomic_dir(target) as d:
        atomic_write_json(d / "summary.json", {"run": 2})
    assert listing(tmp_path) == ["run", "run/summary.json"]


def test_a_run_dir_that_appears_meanwhile_is_not_mixed_into(tmp_path: Path) -> None:
    """Two runs writing one --out (both checked it was free): the second one to finish
    fails with one line instead of mixing or silently replacing the first's files."""
    target = tmp_path / "run"
    late = pytest.raises(InputError, match="written by another run meanwhile")
    with late, atomic_dir(target, replace=False) as mine:
        atomic_write_json(mine / "summary.json", {"run": "mine"})
        with atomic_dir(target, replace=False) as other:
            atomic_write_json(other / "summary.json", {"run": "other"})
            (other / "report.html").write_text("other")
    assert listing(tmp_path) == ["run", "run/report.html", "run/summary.json"]
    assert json.loads((target / "summary.json").read_text()) == {"run": "other"}


def test_a_foreign_directory_is_never_replaced(tmp_path: Path) -> None:
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="agentsim did not write"), atomic_dir(mine) as d:
        atomic_write_json(d / "summary.json", {})
    assert listing(tmp_path) == ["notes", "notes/thesis.tex"]


def test_ctrl_c_during_report_rendering_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sim.report.html

    def boom(*a: Any, **k: Any) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(sim.report.html, "render_report_html", boom)
    out = tmp_path / "run"
    assert interrupted_main(["run", "--quiet", "--out", str(out)]) == 130
    assert one_line_error(capsys) == "agentsim: interrupted"
    assert listing(tmp_path) == []


def test_rerun_into_a_used_dir_needs_force_and_replaces_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()  # an empty directory is fine
    assert main(["run", *FAST, "--out", str(out)]) == 0
    (out / "report.html").write_text("an older run's report")
    first = (out / "summary.json").read_bytes()
    capsys.readouterr()
    assert main(["run", *FAST, "--seed", "1", "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert "already holds results; pass --force" in err, err
    assert (out / "summary.json").read_bytes() == first
    # --force, interrupted while rendering: the old directory is untouched
    import sim.report.results

    real = sim.report.results.write_reports

    def boom(*a: Any, **k: Any) -> float:
        raise KeyboardInterrupt

    monkeypatch.setattr(sim.report.results, "write_reports", boom)
    assert interrupted_main(["run", *FAST, "--seed", "1", "--force", "--out", str(out)]) == 130
    assert (out / "summary.json").read_bytes() == first and (out / "report.html").exists()
    assert not hidden_leftovers(tmp_path)
    monkeypatch.setattr(sim.report.results, "write_reports", real)
    assert main(["run", *FAST, "--seed", "1", "--force", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["seed"] == 1
    assert not (out / "report.html").exists()  # nothing left from the earlier run
    assert not hidden_leftovers(tmp_path)


def test_compare_is_written_whole_and_needs_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sim.api

    out = tmp_path / "cmp"
    argv = ["compare", "--policies", "round_robin,least_loaded", *FAST, "--out", str(out)]
    real = sim.api.Comparison.save

    def boom(self: Any, d: Any) -> Any:
        real(self, d)
        raise KeyboardInterrupt  # after every file but before the rename

    monkeypatch.setattr(sim.api.Comparison, "save", boom)
    assert interrupted_main(argv) == 130
    assert listing(tmp_path) == []
    monkeypatch.setattr(sim.api.Comparison, "save", real)
    assert main(argv) == 0
    assert (out / "comparison.csv").is_file() and len(list((out / "runs").iterdir())) == 2
    capsys.readouterr()
    assert main(argv) == 2
    assert "pass --force" in one_line_error(capsys)
    assert main([*argv, "--force"]) == 0
    assert not hidden_leftovers(tmp_path)


def test_sweep_out_over_other_results_needs_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["run", *FAST, "--out", str(run)]) == 0
    sweep = tmp_path / "s.toml"
    sweep.write_text(f'[base]\ntrace = "{TRACE}"\n[grid]\npolicies = ["round_robin"]\n')
    capsys.readouterr()
    assert main(["sweep", str(sweep), "--quiet", "--workers", "1", "--out", str(run)]) == 2
    assert "pass --force" in one_line_error(capsys)
    assert (run / "summary.json").is_file() and not (run / "runs").exists()
    assert (
        main(["sweep", str(sweep), "--quiet", "--workers", "1", "--out", str(run), "--force"]) == 0
    )
    assert (run / "sweep.parquet").is_file() and not (run / "summary.json").exists()
    assert not hidden_leftovers(tmp_path)


def test_report_rerender_interrupted_keeps_the_dir_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["run", *FAST, "--out", str(out)]) == 0
    (out / "report.html").write_text("rendered with the old SLO")
    before = {p: (out / p).read_bytes() for p in listing(out)}
    import sim.report.results

    def boom(*a: Any, **k: Any) -> float:
        raise KeyboardInterrupt

    monkeypatch.setattr(sim.report.results, "write_reports", boom)
    assert (
        interrupted_main(["report", str(out), "--slo-ttft", "0.1", "--no-html", "--quiet"]) == 130
    )
    assert {p: (out / p).read_bytes() for p in listing(out)} == before
    monkeypatch.undo()
    assert main(["report", str(out), "--slo-ttft", "0.1", "--no-html", "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["slo"]["ttft_s"] == 0.1
    # the old report.html would show other numbers than the new summary.json
    assert not (out / "report.html").exists()
    assert (out / "calls.parquet").read_bytes() == before["calls.parquet"]
    assert not hidden_leftovers(tmp_path)


def test_compare_and_sweep_take_every_run_flag() -> None:
    from sim.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    assert isinstance(sub.choices, dict)

    def flags(cmd: str) -> set[str]:
        return {o for a in sub.choices[cmd]._actions for o in a.option_strings}

    run = flags("run")
    assert "--force" in run
    assert run - flags("compare") == set()
    assert run - flags("sweep") == set()


# ---- 4. --out is vetted before simulating ------------------------------------------------


def _no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make loading a trace or running a sweep fail the test: the check comes first."""
    import sim.cli.compare
    import sim.cli.run
    import sim.cli.sweep
    import sim.cli.trace

    def never(*a: Any, **k: Any) -> Any:
        raise AssertionError("--out should have been refused before any work")

    for mod, name in (
        (sim.cli.run, "replay_from_args"),
        (sim.cli.compare, "workload_from_args"),
        (sim.cli.sweep, "run_sweep"),
        (sim.cli.trace, "stream_trace"),
    ):
        monkeypatch.setattr(mod, name, never)


def _commands(out: str, tmp_path: Path) -> dict[str, list[str]]:
    sweep = tmp_path / "s.toml"
    sweep.write_text(f'[base]\ntrace = "{TRACE}"\n[grid]\npolicies = ["round_robin"]\n')
    return {
        "run": ["run", "--quiet", "--out", out],
        "compare": ["compare", "--policies", "round_robin", "--quiet", "--out", out],
        "sweep": ["sweep", str(sweep), "--quiet", "--out", out],
        "convert": ["trace", "convert", str(TRACE), "-o", out],
    }


@pytest.mark.parametrize("cmd", ["run", "compare", "sweep", "convert"])
@pytest.mark.parametrize("case", ["existing file", "parent is a file", "existing results"])
def test_bad_out_fails_before_simulating(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cmd: str,
    case: str,
) -> None:
    _no_work(monkeypatch)
    f = tmp_path / "file.txt"
    f.write_text("not a directory")
    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.json").write_text("{}")
    out = {"existing file": f, "parent is a file": f / "sub", "existing results": results}[case]
    if cmd == "convert" and case != "parent is a file":
        out = results  # a file output: a directory is what it cannot be
    argv = _commands(str(out), tmp_path)[cmd]
    before = listing(tmp_path)
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"agentsim: error: {out}: "), err
    assert listing(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
@pytest.mark.parametrize("cmd", ["run", "compare", "sweep", "convert"])
def test_unwritable_out_parent_fails_before_simulating(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cmd: str,
) -> None:
    _no_work(monkeypatch)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(_commands(str(ro / "out"), tmp_path)[cmd]) == 2
        assert "is not writable" in one_line_error(capsys)
    finally:
        ro.chmod(0o755)


# ---- 5. default directory names ----------------------------------------------------------

NAME = re.compile(r"^default-round_robin-seed(\d+)-([0-9a-f]{8})$")


def test_default_dir_is_named_by_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    variants = [[], ["--replicas", "2"], ["--load-scale", "0.5"], ["--slo-ttft", "0.5"], []]
    for extra in variants:
        assert main(["run", *FAST, *extra]) == 0
    names = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert len(names) == 4, names  # the last run repeats the first: same directory
    assert all(NAME.match(n) for n in names), names
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == printed[-1] and len(set(printed)) == 4
    assert not hidden_leftovers(tmp_path / "results")


def _default_hash(cwd: Path, trace: str, seed_env: str) -> str:
    code = (
        "import sys; from sim.cli.main import build_parser; "
        "from sim.cli.common import cluster_from_args, run_config_hash; "
        "a = build_parser('run').parse_args(['run', '--trace', sys.argv[1]]); "
        "print(run_config_hash(a, cluster_from_args(a)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed_env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code, trace], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_config_hash_is_the_same_in_any_process_and_place(tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "default.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(TRACE.read_bytes())
    a = _default_hash(ROOT, "traces/default.jsonl", "1")
    b = _default_hash(tmp_path, str(copy), "2")  # other hash seed, cwd and path: same file
    assert a == b and re.fullmatch(r"[0-9a-f]{8}", a)
    copy.write_bytes(TRACE.read_bytes() + b"\n")  # other content: another hash
    assert _default_hash(tmp_path, str(copy), "1") != a


# ---- 6. Ctrl-C anywhere ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["start-up imports", "trace loading", "simulation"])
def test_ctrl_c_prints_one_line_and_exits_130(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    import importlib

    import sim.cli.run

    def boom(*a: Any, **k: Any) -> Any:
        raise KeyboardInterrupt

    if where == "start-up imports":
        monkeypatch.setattr(importlib, "import_module", boom)
    elif where == "trace loading":
        monkeypatch.setattr(sim.cli.run, "replay_from_args", boom)
    else:
        monkeypatch.setattr(sim.cli.run, "simulate", boom)
    out = tmp_path / "run"
    assert interrupted_main(["run", "--quiet", "--out", str(out)]) == 130
    assert one_line_error(capsys) == "agentsim: interrupted"
    assert listing(tmp_path) == []


# ---- 7. the README tour writes under results/ ---------------------------------------------


def test_readme_tour_outputs_land_in_ignored_places() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    outs = [m for b in blocks for m in re.findall(r"(?:-o|--out|--output) (\S+)", b)]
    assert len(outs) >= 4, outs
    bad = [o for o in outs if not (o.startswith("results/") or o.startswith("/tmp/"))]
    assert not bad, f"README tour writes into the repository: {bad}"
    ignore = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "results/*" in ignore
