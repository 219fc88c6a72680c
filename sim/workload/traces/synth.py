"""Seeded synthetic agent workloads, configured in TOML (``agentsim trace synth``).

Two agent shapes, mixed by weight:

* ``react``: a ReAct loop.  Turn k is an LLM call on the whole context; its tool call
  (``tool_duration_s``) appends ``tool_output_tokens`` to the context (plus the LLM
  output when ``append_output``), and the next turn re-reads it all, so consecutive
  prompts share their prefix blocks exactly.  With probability
  ``small_model_fraction`` a tool's output is first condensed by the small tool model
  (an extra LLM call on ``small_model``) and only the condensed output is appended.
* ``fanout``: an orchestrator plans, fans out to ``subagents`` sub-agents (each a
  short ReAct loop of ``subagent_turns`` turns on ``subagent_model``), fans in on all
  their results, for ``rounds`` rounds, then answers: a DAG with fan-out and fan-in.

Prefix hashes are 16-token chain hashes over a virtual token stream made of named
segments (system prompt, task, outputs, tool outputs): a system prompt segment is
shared by every session of the agent kind, everything else is private.  Non-root
issue times are the parents' estimated end (:class:`ServiceEstimate`) plus the gap.

Defaults are measured on the recorded LMCache agent runs (``traces/lmcache/``; see
``examples/synth/default.toml`` for each source statistic).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from hashlib import blake2b
from pathlib import Path
from typing import Any

import numpy as np

from sim.common.errors import InputError
from sim.common.io import read_toml
from sim.workload.calls import AnyWorkload, Call, LazyWorkload, Workload
from sim.workload.traces.arrivals import PROCESSES, ArrivalConfig, arrival_times
from sim.workload.traces.distributions import MAX_VALUE, Dist, const, lognormal, parse_dist
from sim.workload.traces.estimate import ServiceEstimate
from sim.workload.traces.hashing import TEXT_BLOCK_SIZE

_MASK63 = (1 << 63) - 1

#: Per-session turn counts of the 20 mini-SWE-agent runs (LLM calls per session).
MINISWE_TURNS = (14, 12, 6, 30, 30, 9, 8, 13, 30, 30, 30, 30, 30, 30, 12, 13, 6, 30, 30, 9)


@dataclass(frozen=True)
class ReactConfig:
    """A ReAct agent.  Token counts in tokens, durations in seconds.  Defaults measured
    on the 20 mini-SWE-agent sessions (see ``examples/synth/default.toml``)."""

    weight: float = 1.0
    model: str | None = None
    system_prompt_tokens: int = 0
    task_tokens: Dist = lognormal(1394, 0.44, lo=64)
    turns: Dist = Dist("empirical", values=tuple(float(t) for t in MINISWE_TURNS))
    output_tokens: Dist = lognormal(100, 0.42, lo=1, hi=4096)
    tool_output_tokens: Dist = lognormal(32, 2.5, lo=0, hi=8192)
    append_output: bool = False
    tool_duration_s: Dist = lognormal(0.39, 0.59, hi=600)
    think_s: Dist = const(0.0)
    small_model: str | None = None
    small_model_fraction: float = 0.0
    small_system_prompt_tokens: int = 256
    small_output_tokens: Dist = lognormal(100, 0.42, lo=1, hi=1024)


@dataclass(frozen=True)
class FanoutConfig:
    """An orchestrator with sub-agents.  Defaults measured on the 25 Magentic-One-style
    sessions (31 LLM calls per session with the default shape; measured mean 29.8)."""

    weight: float = 1.0
    model: str | None = None
    system_prompt_tokens: int = 64
    task_tokens: Dist = lognormal(250, 0.1, lo=16)
    rounds: int = 3
    subagents: int = 3
    subagent_turns: int = 3
    subagent_model: str | None = None
    subagent_system_prompt_tokens: int = 64
    output_tokens: Dist = lognormal(296, 0.95, lo=1, hi=10000)
    tool_output_tokens: Dist = lognormal(186, 1.38, lo=0, hi=8192)
    tool_duration_s: Dist = lognormal(3.38, 1.08, hi=600)
    think_s: Dist = const(0.0)


@dataclass(frozen=True)
class SynthConfig:
    """A whole synthetic workload: seed, session count, arrivals and the agent mix."""

    seed: int = 0
    sessions: int = 20
    arrivals: ArrivalConfig = field(default_factory=ArrivalConfig)
    agents: tuple[ReactConfig | FanoutConfig, ...] = (ReactConfig(),)
    estimate: ServiceEstimate = field(default_factory=ServiceEstimate)
    #: Tokens per prefix-hash block.  16 matches the engine's KV block; long-context
    #: workloads at scale may use 64 or more (fewer hashes per call, coarser hits).
    hash_block_tokens: int = TEXT_BLOCK_SIZE


class _Context:
    """A prompt as a stream of named segments, with incremental chain hashes.

    Segments are only appended, so a full block's hash does not depend on what comes
    after it: the hashes are computed when a call first reads them (a :class:`Call`'s
    deferred ``prefix_hashes``, :meth:`hashes`), not when the session is generated, and
    the calls of one context share their hash objects.
    """

    def __init__(self, block_size: int = TEXT_BLOCK_SIZE) -> None:
        self.bs = block_size
        self.starts: list[int] = []
        self.names: list[str] = []
        self.total = 0
        self._hashes: list[int] = []
        self._prev = b"\x00" * 8

    def append(self, name: str, tokens: int) -> None:
        if tokens > 0:
            self.starts.append(self.total)
            self.names.append(name)
            self.total += tokens

    def hashes(self, n: int) -> tuple[int, ...]:
        """Chain hashes of the first ``n`` blocks (each full when it was asked for):
        block ``b``'s hash digests the previous hash and the segments it covers
        (``name@from-to`` offsets, ``|``-joined).

        Blocks inside one segment (nearly all) are hashed in a run per segment, with
        the segment's name encoded once; a block across segments joins its parts."""
        bs, starts, names = self.bs, self.starts, self.names
        hashes, prev = self._hashes, self._prev
        append, digest, from_bytes = hashes.append, blake2b, int.from_bytes
        nseg = len(starts)
        b = len(hashes)
        while b < n:
            lo = b * bs
            i = bisect.bisect_right(starts, lo) - 1
            s = starts[i]
            last = min(n, self._end(i) // bs)  # the blocks from b on inside segment i
            if b < last:
                name = names[i].encode() + b"@"
                for off in range(lo - s, last * bs - s, bs):
                    prev = digest(
                        b"%b%b%d-%d" % (prev, name, off, off + bs), digest_size=8
                    ).digest()
                    append(from_bytes(prev, "little") & _MASK63)
                b = last
                continue
            hi = lo + bs
            parts = []
            while i < nseg and starts[i] < hi:
                s = starts[i]
                parts.append(f"{names[i]}@{max(lo, s) - s}-{min(hi, self._end(i)) - s}")
                i += 1
            prev = digest(prev + "|".join(parts).encode(), digest_size=8).digest()
            append(from_bytes(prev, "little") & _MASK63)
            b += 1
        self._prev = prev
        # (the whole list, the usual case, in one pass over its hashes, not a slice's two)
        return tuple(hashes) if n == len(hashes) else tuple(hashes[:n])

    def _end(self, i: int) -> int:
        return self.starts[i + 1] if i + 1 < len(self.starts) else self.total


class _Session:
    """Builds the calls of one session, tracking estimated end times."""

    def __init__(self, sid: str, start_s: float, est: ServiceEstimate, block_size: int) -> None:
        self.sid = sid
        self.bs = block_size
        self.start = start_s
        self.est = est
        self.calls: list[Call] = []
        self.end: dict[str, float] = {}

    def _issue(self, parents: tuple[str, ...], gap: float) -> float:
        return max(self.end[p] for p in parents) + gap if parents else self.start

    def llm(
        self, ctx: _Context, out: int, parents: tuple[str, ...], model: str | None, gap: float = 0.0
    ) -> str:
        cid = f"{self.sid}-{len(self.calls)}"
        t = self._issue(parents, gap)
        call = Call(
            call_id=cid,
            session_id=self.sid,
            parents=parents,
            issue_time_s=t,
            gap_s=gap if parents else 0.0,
            model=model,
            input_tokens=max(1, ctx.total),
            output_tokens=out,
            block_size=ctx.bs,
        )
        call.defer_hashes(ctx, ctx.total // ctx.bs)  # the full blocks of the prompt so far
        self.calls.append(call)
        self.end[cid] = t + self.est.seconds(out)
        return cid

    def tool(self, duration: float, parent: str) -> str:
        cid = f"{self.sid}-{len(self.calls)}"
        t = self.end[parent]
        self.calls.append(
            Call(
                call_id=cid,
                session_id=self.sid,
                kind="tool",
                parents=(parent,),
                issue_time_s=t,
                tool_duration_s=duration,
            )
        )
        self.end[cid] = t + duration
        return cid


def _react(s: _Session, a: ReactConfig, rng: np.random.Generator) -> None:
    ctx = _Context(s.bs)
    ctx.append("react:system", a.system_prompt_tokens)
    ctx.append(f"{s.sid}:task", a.task_tokens.sample_int(rng))
    turns = a.turns.sample_int(rng)
    parents: tuple[str, ...] = ()
    gap = 0.0
    for k in range(turns):
        out = a.output_tokens.sample_int(rng)
        cid = s.llm(ctx, out, parents, a.model, gap)
        if k == turns - 1:
            break
        if a.append_output:
            ctx.append(f"{cid}:out", out)
        tid = s.tool(a.tool_duration_s.sample(rng), cid)
        obs = a.tool_output_tokens.sample_int(rng, lo=0)
        parents, gap = (tid,), a.think_s.sample(rng)
        if a.small_model_fraction > 0 and rng.random() < a.small_model_fraction:
            small = _Context(s.bs)
            small.append("react:small-system", a.small_system_prompt_tokens)
            small.append(f"{tid}:out", obs)
            obs = a.small_output_tokens.sample_int(rng)
            parents = (s.llm(small, obs, parents, a.small_model),)
            ctx.append(f"{parents[0]}:out", obs)
        else:
            ctx.append(f"{tid}:out", obs)


def _fanout(s: _Session, a: FanoutConfig, rng: np.random.Generator) -> None:
    ctx = _Context(s.bs)
    ctx.append("fanout:system", a.system_prompt_tokens)
    ctx.append(f"{s.sid}:task", a.task_tokens.sample_int(rng))
    parents: tuple[str, ...] = ()
    for _ in range(a.rounds):
        out = a.output_tokens.sample_int(rng)
        plan = s.llm(ctx, out, parents, a.model, a.think_s.sample(rng) if parents else 0.0)
        ctx.append(f"{plan}:out", out)
        leaves = []
        for j in range(a.subagents):
            sub = _Context(s.bs)
            sub.append("fanout:subagent-system", a.subagent_system_prompt_tokens)
            sub.append(f"{plan}:instruction{j}", out)
            prev: tuple[str, ...] = (plan,)
            last = plan
            for k in range(a.subagent_turns):
                sout = a.output_tokens.sample_int(rng)
                last = s.llm(sub, sout, prev, a.subagent_model)
                sub.append(f"{last}:out", sout)
                if k < a.subagent_turns - 1:
                    tid = s.tool(a.tool_duration_s.sample(rng), last)
                    sub.append(f"{tid}:out", a.tool_output_tokens.sample_int(rng, lo=0))
                    prev = (tid,)
            ctx.append(f"{last}:result", s.calls[-1].output_tokens)
            leaves.append(last)
        parents = tuple(leaves)
    s.llm(ctx, a.output_tokens.sample_int(rng), parents, a.model, a.think_s.sample(rng))


def generate(cfg: SynthConfig) -> Iterator[Call]:
    """The calls of ``cfg``'s sessions, session by session (parents before children)."""
    for calls in generate_sessions(cfg):
        yield from calls


def generate_sessions(cfg: SynthConfig) -> Iterator[list[Call]]:
    """``cfg``'s sessions one at a time, each its calls (parents before children), in
    the order of their start times."""
    rng = np.random.default_rng(cfg.seed)
    starts = arrival_times(cfg.arrivals, cfg.sessions, rng)
    weights = np.array([a.weight for a in cfg.agents], dtype=float)
    weights /= weights.sum()
    for i, t in enumerate(starts):
        agent = cfg.agents[int(rng.choice(len(cfg.agents), p=weights))]
        s = _Session(f"syn-{i}", t, cfg.estimate, cfg.hash_block_tokens)
        if isinstance(agent, ReactConfig):
            _react(s, agent, rng)
        else:
            _fanout(s, agent, rng)
        yield s.calls


def lazy_workload(cfg: SynthConfig, name: str, source: str, meta: dict[str, object]) -> AnyWorkload:
    """``cfg``'s workload generated session by session as the simulation reaches each
    session's start (:class:`LazyWorkload`).  Replayed arrival times need not be
    sorted, so a replay-driven config is generated in memory instead."""
    if cfg.arrivals.process == "replay":
        return Workload(list(generate(cfg)), name=name, source=source, meta=meta)
    models: set[str | None] = set()
    for a in cfg.agents:
        if isinstance(a, ReactConfig):
            models.add(a.model)
            if a.small_model_fraction > 0:
                models.add(a.small_model)
        else:
            models.update((a.model, a.subagent_model))
    return LazyWorkload(
        lambda: generate_sessions(cfg), frozenset(models), name=name, source=source, meta=meta
    )


# --- TOML -----------------------------------------------------------------------------

#: Most sessions one synthetic workload may have.
MAX_SESSIONS = 10_000_000

_STRING_KEYS = {"model", "small_model", "subagent_model", "process", "trace"}


def _apply(base: Any, table: dict[str, Any], where: str, prefix: str, base_dir: Path) -> Any:
    """``base`` (a config dataclass) updated from a TOML table, validating each key."""
    known = {f.name: f for f in fields(base)}
    changes: dict[str, Any] = {}
    for key, v in table.items():
        name = f"{prefix}{key}"
        if key == "kind":
            continue
        if key not in known:
            raise InputError(where, None, name, f"unknown key; known: {', '.join(known)}")
        cur = getattr(base, key)
        if isinstance(cur, Dist):
            changes[key] = parse_dist(v, where, name, base_dir)
        elif isinstance(cur, bool):
            if not isinstance(v, bool):
                raise InputError(where, None, name, "expected true or false")
            changes[key] = v
        elif key in _STRING_KEYS:
            if not isinstance(v, str):
                raise InputError(where, None, name, "expected a string")
            changes[key] = v
        else:
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or v < 0
                or not math.isfinite(v)
                or v > MAX_VALUE
            ):
                raise InputError(
                    where, None, name, f"expected a number in [0, {MAX_VALUE:g}], got {v!r}"
                )
            changes[key] = int(v) if isinstance(cur, int) else float(v)
    return replace(base, **changes)


def load_synth_config(path: str | Path) -> SynthConfig:
    """Read and validate a synthetic workload TOML file (see ``examples/synth/``)."""
    p = Path(path)
    where = str(p)
    raw, _ = read_toml(p)
    base_dir = p.parent
    cfg = SynthConfig()
    for key in raw:
        if key not in ("seed", "sessions", "arrivals", "agents", "estimate", "hash_block_tokens"):
            raise InputError(
                where,
                None,
                key,
                "unknown key; known: seed, sessions, arrivals, agents, estimate, hash_block_tokens",
            )
    if not raw:
        raise InputError(
            where, 1, None, "empty config (see examples/synth/default.toml for every key)"
        )
    ints: dict[str, int] = {}
    for key, lo, hi in (
        ("seed", 0, 2**63 - 1),
        ("sessions", 1, MAX_SESSIONS),
        ("hash_block_tokens", 1, 1 << 20),
    ):
        v = raw.get(key, getattr(cfg, key))
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise InputError(where, None, key, f"expected an integer in [{lo}, {hi:,}], got {v!r}")
        ints[key] = v
    cfg = SynthConfig(
        seed=ints["seed"], sessions=ints["sessions"], hash_block_tokens=ints["hash_block_tokens"]
    )
    arr = raw.get("arrivals", {})
    if not isinstance(arr, dict):
        raise InputError(where, None, "arrivals", "expected a table")
    arrivals = _apply(ArrivalConfig(), arr, where, "arrivals.", base_dir)
    if arrivals.process not in PROCESSES:
        raise InputError(where, None, "arrivals.process", f"expected one of {', '.join(PROCESSES)}")
    if arrivals.process == "replay":
        if not arrivals.trace:
            raise InputError(where, None, "arrivals.trace", "replay needs a trace path")
        tp = Path(arrivals.trace)
        arrivals = replace(arrivals, trace=str(tp if tp.is_absolute() else base_dir / tp))
    elif arrivals.rate_per_s <= 0:
        raise InputError(where, None, "arrivals.rate_per_s", "expected a rate > 0")
    agents: list[ReactConfig | FanoutConfig] = []
    tables = raw.get("agents", [{"kind": "react"}])
    if not isinstance(tables, list) or not tables:
        raise InputError(where, None, "agents", "expected one or more [[agents]] tables")
    for i, t in enumerate(tables):
        if not isinstance(t, dict):
            raise InputError(where, None, f"agents[{i}]", "expected a table")
        kind = t.get("kind", "react")
        base: ReactConfig | FanoutConfig
        if kind == "react":
            base = ReactConfig()
        elif kind == "fanout":
            base = FanoutConfig()
        else:
            raise InputError(where, None, f"agents[{i}].kind", "expected 'react' or 'fanout'")
        agent = _apply(base, t, where, f"agents[{i}].", base_dir)
        if agent.weight <= 0:
            raise InputError(where, None, f"agents[{i}].weight", "expected a weight > 0")
        if isinstance(agent, ReactConfig) and not 0 <= agent.small_model_fraction <= 1:
            raise InputError(
                where, None, f"agents[{i}].small_model_fraction", "expected a fraction in [0, 1]"
            )
        if (
            isinstance(agent, FanoutConfig)
            and min(agent.rounds, agent.subagents, agent.subagent_turns) < 1
        ):
            raise InputError(
                where, None, f"agents[{i}]", "rounds, subagents and subagent_turns must be >= 1"
            )
        agents.append(agent)
    est_t = raw.get("estimate", {})
    if not isinstance(est_t, dict):
        raise InputError(where, None, "estimate", "expected a table")
    est = _apply(ServiceEstimate(), est_t, where, "estimate.", base_dir)
    return replace(cfg, arrivals=arrivals, agents=tuple(agents), estimate=est)
