"""The synthetic agent-workload generator: determinism, shapes, arrivals, config errors."""

from __future__ import annotations

from dataclasses import replace
from hashlib import blake2b
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cli.main import main
from sim.common.errors import InputError
from sim.workload.calls import Workload
from sim.workload.traces import load_trace
from sim.workload.traces.arrivals import ArrivalConfig, arrival_times, session_starts
from sim.workload.traces.distributions import fit_lognormal
from sim.workload.traces.synth import (
    FanoutConfig,
    ReactConfig,
    SynthConfig,
    _Context,
    generate,
    load_synth_config,
)

REPO = Path(__file__).parents[1]


def test_seeded_and_deterministic() -> None:
    cfg = SynthConfig(seed=5, sessions=6, agents=(ReactConfig(), FanoutConfig()))
    assert list(generate(cfg)) == list(generate(cfg))
    assert list(generate(cfg)) != list(generate(replace(cfg, seed=6)))


def test_react_context_grows_and_prefix_is_reused() -> None:
    agent = ReactConfig(turns=ReactConfig().turns.__class__("const", a=5), append_output=True)
    calls = list(generate(SynthConfig(sessions=1, agents=(agent,))))
    llm = [c for c in calls if c.kind == "llm"]
    tools = [c for c in calls if c.kind == "tool"]
    assert len(llm) == 5 and len(tools) == 4
    for a, t, b in zip(llm, tools, llm[1:], strict=False):
        assert t.parents == (a.call_id,) and b.parents == (t.call_id,)
        assert b.input_tokens >= a.input_tokens + a.output_tokens
        # the next prompt starts with all of this prompt's full blocks except the boundary one
        k = len(a.prefix_hashes) - 1
        assert b.prefix_hashes[:k] == a.prefix_hashes[:k]
        assert b.issue_time_s == pytest.approx(t.issue_time_s + t.tool_duration_s)


def test_fanout_dag_shape() -> None:
    agent = FanoutConfig(rounds=2, subagents=3, subagent_turns=2, subagent_model="small")
    calls = list(generate(SynthConfig(sessions=1, agents=(agent,))))
    llm = [c for c in calls if c.kind == "llm"]
    assert len(llm) == 2 * (1 + 3 * 2) + 1
    children: dict[str, int] = {}
    for c in calls:
        for p in c.parents:
            children[p] = children.get(p, 0) + 1
    plans = [c for c in llm if c.model is None]
    assert [children.get(p.call_id, 0) for p in plans] == [3, 3, 0]  # fan-out, then the answer
    assert [len(p.parents) for p in plans] == [0, 3, 3]  # fan-in of the 3 sub-agents
    assert {c.model for c in llm} == {None, "small"}
    # sub-agents of one plan share their system-prompt block
    subs = [c for c in llm if c.model == "small" and c.parents and c.parents[0] == plans[0].call_id]
    assert len({c.prefix_hashes[0] for c in subs}) == 1 and len(subs) == 3


def test_small_tool_model_mix() -> None:
    agent = ReactConfig(small_model="tool-llm", small_model_fraction=1.0)
    calls = list(generate(SynthConfig(sessions=3, agents=(agent,))))
    small = [c for c in calls if c.model == "tool-llm"]
    tools = [c for c in calls if c.kind == "tool"]
    assert len(small) == len(tools) > 0
    assert all(s.parents[0] in {t.call_id for t in tools} for s in small)


@pytest.mark.parametrize("process", ["poisson", "bursty", "diurnal"])
def test_arrival_rates(process: str) -> None:
    cfg = ArrivalConfig(process=process, rate_per_s=2.0, period_s=50.0)
    t = arrival_times(cfg, 4000, np.random.default_rng(1))
    assert t[0] == 0.0 and t == sorted(t)
    assert len(t) / t[-1] == pytest.approx(2.0, rel=0.15)
    cv = float(np.std(np.diff(t)) / np.mean(np.diff(t)))
    assert cv > 2.0 if process == "bursty" else cv < 1.6


def test_replay_uses_recorded_session_starts() -> None:
    path = str(REPO / "traces" / "lmcache" / "miniswe.jsonl.gz")
    starts = session_starts(path)
    got = arrival_times(
        ArrivalConfig(process="replay", trace=path, time_scale=0.5), 5, np.random.default_rng(0)
    )
    assert got == [s * 0.5 for s in starts[:5]]


def test_defaults_match_the_measured_traces() -> None:
    mini = load_trace(REPO / "traces" / "lmcache" / "miniswe.jsonl.gz")
    tools = [c.tool_duration_s for c in mini.calls if c.kind == "tool"]
    median, sigma = fit_lognormal(tools)
    d = ReactConfig().tool_duration_s
    assert d.a == pytest.approx(median, rel=0.02) and d.b == pytest.approx(sigma, rel=0.02)
    turns = sorted(len([c for c in cs if c.kind == "llm"]) for cs in mini.sessions().values())
    assert sorted(ReactConfig().turns.values) == turns
    mag = load_trace(REPO / "traces" / "lmcache" / "magagent.jsonl.gz")
    per = [len([c for c in cs if c.kind == "llm"]) for cs in mag.sessions().values()]
    f = FanoutConfig()
    assert f.rounds * (1 + f.subagents * f.subagent_turns) + 1 == pytest.approx(np.mean(per), abs=2)


def test_example_configs_and_cli(tmp_path: Path) -> None:
    assert load_synth_config(REPO / "examples" / "synth" / "default.toml") == SynthConfig(
        agents=(ReactConfig(), FanoutConfig())
    )
    for toml in sorted((REPO / "examples" / "synth").glob("*.toml")):
        out = tmp_path / f"{toml.stem}.jsonl"
        assert main(["trace", "synth", str(toml), "-o", str(out), "--sessions", "4"]) == 0
        w = load_trace(out)
        assert w.num_sessions == 4 and isinstance(w, Workload)


@pytest.mark.parametrize(
    "text,field",
    [
        ("sessions = 0", "sessions"),
        ("colour = 1", "colour"),
        ("[arrivals]\nprocess = 'sometimes'", "arrivals.process"),
        ("[arrivals]\nrate_per_s = 0", "arrivals.rate_per_s"),
        ("[[agents]]\nkind = 'swarm'", "agents[0].kind"),
        ("[[agents]]\nturns = { dist = 'zipf' }", "agents[0].turns.dist"),
        ("[[agents]]\nturns = { dist = 'lognormal', median = 3 }", "agents[0].turns.sigma"),
        ("[[agents]]\nkind = 'react'\nsmall_model_fraction = 2", "agents[0].small_model_fraction"),
        ("[[agents]]\nkind = 'fanout'\nsubagents = 0", "agents[0]"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text + "\n")
    with pytest.raises(InputError) as e:
        load_synth_config(p)
    assert str(e.value).startswith(f"{p}: {field}:")


def test_hash_block_tokens_and_toml_loads_as_a_trace(tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text('seed = 1\nsessions = 3\nhash_block_tokens = 64\n[[agents]]\nkind = "react"\n')
    w = load_trace(cfg)  # a .toml trace is generated in memory
    assert w.meta["format"] == "synth" and w.num_sessions == 3
    llm = [c for c in w.calls if c.kind == "llm"]
    assert all(c.block_size == 64 and len(c.prefix_hashes) == c.input_tokens // 64 for c in llm)
    fine = list(generate(replace(load_synth_config(cfg), hash_block_tokens=16)))
    assert [c.input_tokens for c in fine] == [c.input_tokens for c in w.calls]


def _block_hashes(segments: list[tuple[str, int]], bs: int) -> list[int]:
    """The definition of the chain hashes, block by block: block b digests the previous
    digest and ``name@from-to`` of every segment it overlaps, ``|``-joined."""
    spans, pos = [], 0
    for name, tokens in segments:
        if tokens > 0:
            spans.append((name, pos, pos + tokens))
            pos += tokens
    prev, out = b"\x00" * 8, []
    for b in range(pos // bs):
        lo, hi = b * bs, (b + 1) * bs
        text = "|".join(
            f"{n}@{max(lo, s) - s}-{min(hi, e) - s}" for n, s, e in spans if s < hi and e > lo
        )
        prev = blake2b(prev + text.encode(), digest_size=8).digest()
        out.append(int.from_bytes(prev, "little") & ((1 << 63) - 1))
    return out


@settings(max_examples=200, deadline=None)
@given(
    bs=st.sampled_from([1, 3, 16, 64]),
    turns=st.lists(
        st.lists(
            st.tuples(st.sampled_from(["sys", "s-1:out", "ü"]), st.integers(0, 200)), max_size=4
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_incremental_prefix_hashes_match_the_definition(
    bs: int, turns: list[list[tuple[str, int]]]
) -> None:
    """Hashed incrementally, turn by turn, in runs per segment, the hashes are the
    block-by-block definition's."""
    ctx, seen = _Context(bs), []
    for segments in turns:
        for name, tokens in segments:
            ctx.append(name, tokens)
        seen += segments
        assert list(ctx.hashes(ctx.total // bs)) == _block_hashes(seen, bs)
