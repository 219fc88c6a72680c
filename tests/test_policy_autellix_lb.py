"""Autellix's locality-aware load balancer: short calls stay with their program, long
calls go to the least-loaded engine (a hand-worked scenario against round robin and
least-loaded)."""

from __future__ import annotations

from policies import registry
from sim.experiments.conformance import FakeCluster, FakeReplica
from tests.helpers import llm


def test_short_calls_follow_their_program_and_long_calls_spread() -> None:
    reps = [FakeReplica(0), FakeReplica(1), FakeReplica(2)]
    view = FakeCluster(reps)
    lb = registry.create("routing", "autellix_lb")
    first = llm("a0", "A", 1000, 10)
    assert lb.route(first, reps, view) == 0  # least loaded, lowest id; A now lives on 0
    reps[0].num_running = 5  # engine 0 gets busy
    short = llm("a1", "A", 1500, 10, parents=("a0",))
    long = llm("a2", "A", 6000, 10, parents=("a1",))
    # a short call of A stays on A's engine although it is the busiest ...
    assert lb.route(short, reps, view) == 0
    # ... where least-loaded would move it (and lose A's cached context)
    assert registry.create("routing", "least_loaded").route(short, reps, view) == 1
    # a long call goes to the least-loaded engine, and A moves with it
    assert lb.route(long, reps, view) == 1
    assert lb.route(llm("a3", "A", 200, 10, parents=("a2",)), reps, view) == 1
    # a program whose engine is gone starts over on the least-loaded candidate
    assert lb.route(llm("a4", "A", 200, 10, parents=("a3",)), [reps[0], reps[2]], view) == 2
