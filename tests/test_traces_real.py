"""Every real trace in ../shared/data loads through load_trace; committed samples load."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.workload.traces import detect_format, load_trace
from sim.workload.traces.stats import meta_section, trace_stats

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
REPO = Path(__file__).parents[1]

REAL = [
    ("azure-llm-2023/AzureLLMInferenceTrace_conv.csv", "azure", 19366),
    ("azure-llm-2023/AzureLLMInferenceTrace_code.csv", "azure", 8819),
    ("mooncake/conversation_trace.jsonl", "mooncake", 12031),
]


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("rel,fmt,rows", REAL, ids=[r[1] + ":" + Path(r[0]).stem for r in REAL])
def test_real_request_traces_load_completely(rel: str, fmt: str, rows: int) -> None:
    path = DATA / rel
    assert detect_format(str(path)) == fmt
    w = load_trace(path)  # load speed is measured by `make bench`, not asserted here
    assert len(w) == rows == meta_section(w, "read")["records"]
    times = [c.issue_time_s for c in w.calls]
    assert times[0] == 0.0 and times == sorted(times)
    s = trace_stats(w)
    assert s.duration_s > 3000 and s.calls == rows


@pytest.mark.parametrize(
    "rel",
    [
        "default.jsonl",
        "lmcache/miniswe.jsonl.gz",
        "lmcache/magagent.jsonl.gz",
        "samples/mooncake_conversation_400s.jsonl.gz",
        "samples/azure_conv_1000.jsonl.gz",
        "samples/azure_code_1000.jsonl.gz",
    ],
)
def test_committed_traces_load_with_attribution(rel: str) -> None:
    w = load_trace(REPO / "traces" / rel)
    assert len(w) > 0 and w.meta.get("attribution")
    ids = {c.call_id for c in w.calls}
    assert all(p in ids for c in w.calls for p in c.parents)


def test_default_trace_is_small_real_agent_mix() -> None:
    w = load_trace(REPO / "traces" / "default.jsonl")
    assert 10 <= w.num_sessions <= 20 and len(w.llm_calls) <= 400
    assert any(c.kind == "tool" for c in w.calls)
