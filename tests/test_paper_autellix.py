"""CI-sized Autellix reproduction: the direction of the paper's effects (Figures 12, 14)."""

from __future__ import annotations

from pathlib import Path

from papers import autellix


def _last_row(table: str) -> list[float]:
    cells = [x.strip() for x in table.splitlines()[-1].split("|")[1:-1]]
    return [float(x) for x in cells[1:]]


def test_autellix_beats_vllm_and_vllm_opt_and_its_balancer_beats_least_used(
    tmp_path: Path,
) -> None:
    r = autellix.run(True, 0, tmp_path)
    (row,) = r.rows
    # one engine, BFCL: throughput at the same program latency, Autellix > vLLM-opt > vLLM
    assert row["Autellix max rate"] > row["vLLM-opt max rate"] > row["vLLM max rate (prog/s)"]  # type: ignore[operator]
    assert all(h.same_direction for h in r.headlines if h.metric.startswith("BFCL"))
    # at the overloading rate Autellix's program latency is clearly below vLLM-opt's
    vllm, opt, ours = _last_row(r.extra["BFCL: program latency (s/token) vs arrival rate"])
    assert ours < 0.95 * opt < vllm
    # four engines: at the higher rate autellix_lb < least_loaded < round_robin latency
    rows = r.extra["4 engines (ShareGPT, PLAS): program latency (s/token) by router"]
    rr, least, lb = [float(x) for x in rows.splitlines()[-2].split("|")[2:5]]
    assert lb < 0.97 * least < rr
