"""A synthetic workload generated while it is simulated gives the same run as the same
workload in memory, and the driver forgets each session once its calls have ended."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.cluster.config import ClusterConfig
from sim.common.errors import ConfigError
from sim.simulation import build_simulation, collect, simulate
from sim.workload.calls import Call, LazyWorkload, Workload
from sim.workload.traces import load_trace, open_trace
from sim.workload.traces.arrivals import ArrivalConfig
from sim.workload.traces.distributions import const, lognormal
from sim.workload.traces.synth import (
    FanoutConfig,
    ReactConfig,
    SynthConfig,
    generate,
    lazy_workload,
)
from tests.helpers import ROOFLINE, cluster

REPO = Path(__file__).parents[1]


def _cluster(router: str, replicas: int, retention: str = "lru") -> ClusterConfig:
    cfg = cluster(replicas=replicas, router=router)
    return replace(cfg, policies=replace(cfg.policies, retention=retention))


def _pair(cfg: SynthConfig) -> tuple[Workload, LazyWorkload]:
    eager = Workload(list(generate(cfg)), name="synth")
    lazy = lazy_workload(cfg, "synth", "", {})
    assert isinstance(lazy, LazyWorkload)
    return eager, lazy


AGENTS = {
    "react": ReactConfig(turns=const(4), tool_duration_s=lognormal(0.5, 0.5)),
    "fanout": FanoutConfig(rounds=2, subagents=3, subagent_turns=2),
    "mixed": None,
}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    sessions=st.integers(1, 12),
    rate=st.sampled_from([0.2, 1.0, 5.0]),
    process=st.sampled_from(["poisson", "bursty"]),
    agents=st.sampled_from(sorted(AGENTS)),
    router=st.sampled_from(["round_robin", "kv_aware", "session_affinity"]),
    replicas=st.integers(1, 3),
    # (not kvflow: it plans with the declared step graph, which a lazy workload hands
    # over one session at a time when the session comes due, not all before replay)
    retention=st.sampled_from(["lru", "ttl_pin"]),
)
def test_lazy_and_in_memory_runs_are_identical(
    seed: int,
    sessions: int,
    rate: float,
    process: str,
    agents: str,
    router: str,
    replicas: int,
    retention: str,
) -> None:
    agent = AGENTS[agents]
    mix = (AGENTS["react"], AGENTS["fanout"]) if agent is None else (agent,)
    cfg = SynthConfig(
        seed=seed,
        sessions=sessions,
        arrivals=ArrivalConfig(process=process, rate_per_s=rate),
        agents=mix,  # type: ignore[arg-type]
    )
    eager, lazy = _pair(cfg)
    c = _cluster(router, replicas, retention)
    a = simulate(eager, c, seed=seed, cost_model=ROOFLINE)
    b = simulate(lazy, c, seed=seed, cost_model=ROOFLINE)
    assert a.summary == b.summary
    pd.testing.assert_frame_equal(a.calls, b.calls)
    pd.testing.assert_frame_equal(a.sessions, b.sessions)


def test_the_driver_holds_only_the_sessions_in_flight() -> None:
    # sessions of 3 LLM calls and 2 tools, arriving every 100 s, each done in ~10 s:
    # at most two sessions are ever held, and none at the end
    agent = ReactConfig(turns=const(3), tool_duration_s=const(1.0), output_tokens=const(20))
    cfg = SynthConfig(
        sessions=20,
        arrivals=ArrivalConfig(process="bursty", rate_per_s=0.01, cv=0.01),
        agents=(agent,),
    )
    _, lazy = _pair(cfg)
    sim = build_simulation(lazy, _cluster("round_robin", 1), cost_model=ROOFLINE)
    driver = sim.driver
    held: list[int] = []
    env = sim.env
    while env.peek() != float("inf"):
        env.step()
        held.append(len(driver.live))
    assert max(held) <= 2 and held[-1] == 0 and not driver.index
    assert driver.finished() and driver.pulled == 20 * 5 and driver.sessions == 20
    res = collect(sim)
    assert res.summary["sessions"] == 20 and res.summary["requests"] == 60  # LLM calls


def test_a_session_out_of_start_order_is_an_error() -> None:
    def sessions() -> list[list[Call]]:
        return [
            [Call("a0", "a", issue_time_s=5.0, input_tokens=10, output_tokens=2)],
            [Call("b0", "b", issue_time_s=1.0, input_tokens=10, output_tokens=2)],
        ]

    lazy = LazyWorkload(lambda: iter(sessions()), frozenset({None}), name="unsorted")
    with pytest.raises(ConfigError, match="unsorted: session 'b' starts at 1.0 s"):
        simulate(lazy, _cluster("round_robin", 1), cost_model=ROOFLINE)
    # a parent outside its session is an error naming the call, not a KeyError
    orphan = LazyWorkload(
        lambda: iter([[Call("x1", "x", parents=("x0",), input_tokens=5, output_tokens=1)]]),
        frozenset({None}),
        name="orphan",
    )
    with pytest.raises(ConfigError, match="orphan: call 'x1': parent 'x0' is not in its session"):
        simulate(orphan, _cluster("round_robin", 1), cost_model=ROOFLINE)


def test_open_trace_generates_synth_lazily_and_reads_files_in_memory(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text("seed = 1\nsessions = 3\n[arrivals]\nprocess = 'poisson'\nrate_per_s = 1.0\n")
    lazy = open_trace(str(toml))
    assert isinstance(lazy, LazyWorkload)
    assert lazy.materialize().calls == load_trace(str(toml)).calls
    assert isinstance(open_trace(str(REPO / "traces" / "default.jsonl")), Workload)


def test_the_api_runs_a_lazy_workload_and_compare_generates_it() -> None:
    import sim
    from sim.api import compare

    cfg = SynthConfig(seed=2, sessions=4, agents=(AGENTS["react"],))  # type: ignore[arg-type]
    eager, lazy = _pair(cfg)
    a = sim.run(eager, _cluster("round_robin", 1))
    b = sim.run(lazy, _cluster("round_robin", 1))
    assert a.summary == b.summary
    cmp = compare(lazy, _cluster("round_robin", 1), policies="round_robin,least_loaded")
    assert list(cmp.table["policy"]) == ["round_robin", "least_loaded"]
