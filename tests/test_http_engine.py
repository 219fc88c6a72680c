"""The http engine against a real server: agentsim's OpenAI-compatible torch server.

The server runs the tiny random-weight Llama on CPU in a subprocess bound to 127.0.0.1
on an ephemeral port; it exits by itself (lifetime and idle limits) and the test ends it
by pid.  Client-measured TTFT and inter-token gaps must agree with the server's own log.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.calibration.engines.http_engine import HttpReplayConfig, prompt_tokens, replay
from sim.workload.calls import Call, Workload
from sim.workload.traces.canonical import write_canonical

from .test_calibration_harness import TINY, cli

ROOT = Path(__file__).resolve().parents[1]


def small_trace() -> list[Call]:
    """Four sessions: LLM -> tool -> LLM, overlapping so batches form."""
    calls: list[Call] = []
    for s in range(4):
        sid = f"s{s}"
        calls.append(
            Call(
                f"{sid}a",
                sid,
                issue_time_s=0.03 * s,
                input_tokens=120 + 40 * s,
                output_tokens=12,
                prefix_hashes=(s, 100 + s),
                block_size=16,
            )
        )
        calls.append(Call(f"{sid}t", sid, kind="tool", parents=(f"{sid}a",), tool_duration_s=0.05))
        calls.append(
            Call(
                f"{sid}b",
                sid,
                parents=(f"{sid}t",),
                gap_s=0.01,
                input_tokens=300,
                output_tokens=16,
                prefix_hashes=(s, 100 + s),
                block_size=16,
            )
        )
    return calls


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    log = tmp_path_factory.mktemp("server") / "server.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim.calibration.server",
            "--model",
            TINY,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--max-batch",
            "8",
            "--max-num-batched-tokens",
            "256",
            "--log",
            str(log),
            "--max-lifetime-s",
            "240",
            "--idle-exit-s",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert m, f"server did not start: {line!r}"
        yield m.group(1), log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _server_log(log: Path, n: int) -> dict[str, dict]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
        if len(rows) >= n:
            return {r["user"]: r for r in rows}
        time.sleep(0.05)
    raise AssertionError(f"server logged fewer than {n} requests")


def test_prompts_share_prefix_blocks() -> None:
    a = Call("a", "s", input_tokens=40, prefix_hashes=(7, 8), block_size=16)
    b = Call("b", "s", input_tokens=50, prefix_hashes=(7, 9), block_size=16)
    pa, pb = prompt_tokens(a, 0), prompt_tokens(b, 0)
    assert len(pa) == 40 and len(pb) == 50
    assert pa[:16] == pb[:16] and pa[16:32] != pb[16:32]


def test_http_timings_agree_with_server_log(server: tuple[str, Path]) -> None:
    url, log = server
    before = len(log.read_text().splitlines()) if log.exists() else 0
    calls = small_trace()
    ms = replay(Workload(calls), HttpReplayConfig(url=url))
    llm = [m for m in ms if m.call.is_llm]
    assert all(m.error is None for m in llm)
    logged = _server_log(log, before + len(llm))
    ttft_diff: list[float] = []
    itl_sum_diff: list[float] = []
    gap_diff: list[float] = []
    for m in llm:
        srv = logged[m.call.call_id]
        assert (
            m.chunks == m.call.output_tokens == srv["completion_tokens"] == m.output_tokens_reported
        )
        assert srv["prompt_tokens"] == m.call.input_tokens
        assert m.ttft_s is not None and len(m.itl_s) == len(srv["itl_s"])
        # the client cannot see a token before the server stamped and wrote it
        # (its clock starts before the server accepted the request; 5 ms of slack)
        assert m.ttft_s >= srv["ttft_s"] - 0.005
        ttft_diff.append(abs(m.ttft_s - srv["ttft_s"]))
        itl_sum_diff.append(abs(sum(m.itl_s) - sum(srv["itl_s"])))
        gap_diff += [abs(a - b) for a, b in zip(m.itl_s, srv["itl_s"], strict=True)]

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    # loopback trips, parsing and thread switches (on a busy 2-core machine): a few ms;
    # medians, because one descheduled client thread can stall a single call
    assert median(ttft_diff) <= 0.005
    assert median(itl_sum_diff) <= 0.005
    assert median(gap_diff) <= 0.002
    assert sorted(gap_diff)[int(0.9 * len(gap_diff))] <= 0.010
    # closed loop: the second call of a session is issued after the tool finished
    by = {m.call.call_id: m for m in ms}
    for s in range(4):
        a, t, b = by[f"s{s}a"], by[f"s{s}t"], by[f"s{s}b"]
        assert t.arrival_s >= a.arrival_s + a.e2e_s - 1e-6
        assert b.arrival_s >= t.arrival_s + 0.05 + 0.01 - 1e-3


def test_record_http_then_compare_e2e(server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = server
    trace = tmp_path / "trace.jsonl"
    write_canonical(small_trace(), trace)
    out = tmp_path / "http.jsonl"
    assert (
        cli("record", "--engine", "http", "--url", url, "--trace", str(trace), "-o", str(out)) == 0
    )
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    h = lines[0]
    assert h["engine"] == "http" and h["gpu"] == "cpu" and h["server"]["server"]["max_batch"] == 8
    calls = [x for x in lines if x["type"] == "call"]
    assert len(calls) == len(small_trace())

    from sim.calibration.compare_e2e import compare, format_comparison

    cmp = compare(out, "roofline")
    assert cmp.calls == 8
    assert cmp.replica["max_num_seqs"] == 8 and cmp.replica["prefix_caching"] is False
    for m in cmp.metrics:
        for k in ("mean", "p50", "p90", "p99"):
            assert m.measured[k] > 0 and m.simulated[k] > 0
    assert "ttft_s" in format_comparison(cmp)


def test_batched_decode_matches_each_request_alone() -> None:
    """The server's batched decode (left-padded static cache, rebuilt as requests join
    and leave and when its room fills) gives every request the greedy tokens it gets
    when served alone."""
    import random

    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from sim.calibration import server
    from sim.calibration.engines.torch_engine import TorchEngine, TorchEngineConfig

    eng = TorchEngine(TorchEngineConfig(model=TINY, device="cpu", threads=1))
    rnd = random.Random(3)
    prompts = [[rnd.randrange(eng.vocab_size) for _ in range(20 + 23 * i)] for i in range(5)]
    max_tokens = [server.DECODE_ROOM + 9, 5, 17, server.DECODE_ROOM * 2 + 3, 8]

    def run(indices: list[int], stagger: int) -> dict[int, list[int | None]]:
        sched = server.Scheduler(eng, 8, 64)
        reqs = {i: server._Request(str(i), prompts[i], max_tokens[i], True, 0.0) for i in indices}
        pending = list(indices)
        step = 0
        with eng.torch.inference_mode():
            while pending or sched.running or sched.prefilling or sched.waiting:
                if pending and step % stagger == 0:
                    sched.waiting.append(reqs[pending.pop(0)])
                sched._iteration()
                step += 1
        return {
            i: [r.tokens.get_nowait() for _ in range(r.tokens.qsize())] for i, r in reqs.items()
        }

    batched = run(list(range(5)), 3)
    for i in range(5):
        assert batched[i] == run([i], 1)[i]
        assert len(batched[i]) == max_tokens[i] + 1  # tokens, then the end marker
