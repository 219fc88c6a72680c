"""Agent workloads: sessions made of LLM calls and tool calls, linked as a DAG.

A :class:`Call` is one line of a canonical trace (see ``traces/SCHEMA.md``).  A session
is the set of calls sharing a ``session_id``; its calls form a DAG through ``parents``.
Replay is closed loop: a root call (no parents) is issued at its recorded
``issue_time_s``; any other call is issued ``gap_s`` seconds after the last of its
parents finishes, so faster serving really shortens sessions.  A tool call occupies
``tool_duration_s`` seconds of wall time and no GPU.

Units: times in seconds, sizes in tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

CallKind = Literal["llm", "tool"]


class HashSource(Protocol):
    """Where a call's prefix hashes come from when they are computed on first read
    (:meth:`Call.defer_hashes`): ``hashes(n)`` is the prompt's first ``n`` chain hashes."""

    def hashes(self, n: int) -> tuple[int, ...]: ...


@dataclass(slots=True)
class Call:
    """One LLM call or tool call of an agent session.

    Attributes:
        call_id: unique id within the workload.
        session_id: the agent session (conversation, program) the call belongs to.
        kind: ``"llm"`` or ``"tool"``.
        parents: ids of the calls that must finish before this one is issued.
        issue_time_s: recorded issue time, seconds from trace start.  Roots are issued
            at this time; non-roots use it only for open-loop replay and statistics.
        gap_s: think/wait time in seconds between the last parent finishing and this
            call being issued (closed loop).
        model: model name for LLM calls; ``None`` means the cluster's default model.
        input_tokens: prompt length in tokens (LLM calls).
        output_tokens: tokens to generate (LLM calls).
        prefix_hashes: chain hashes of the prompt's leading full blocks; hash ``i``
            identifies the prompt's first ``(i + 1) * block_size`` tokens.
        block_size: tokens per entry of ``prefix_hashes``.
        tool_duration_s: wall time of a tool call in seconds.

    ``prefix_hashes`` may be deferred (:meth:`defer_hashes`): its slot is then left
    unset and the first read (through ``__getattr__``) makes the tuple and stores it,
    so the calls of a session waiting for their turn hold no hash tuples; it may be
    dropped again when the call has ended (:meth:`forget_hashes`).  Reading, comparing,
    copying (``dataclasses.replace``) and pickling a call see the same tuple either
    way, and reads of a made tuple cost what a plain attribute does.
    """

    call_id: str
    session_id: str
    kind: CallKind = "llm"
    parents: tuple[str, ...] = ()
    issue_time_s: float = 0.0
    gap_s: float = 0.0
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    prefix_hashes: tuple[int, ...] = ()
    block_size: int = 16
    tool_duration_s: float = 0.0
    # a deferred prefix_hashes: source.hashes(_count) on first read (None: not deferred)
    _source: HashSource | None = field(default=None, init=False, repr=False, compare=False)
    _count: int = field(default=0, init=False, repr=False, compare=False)

    @property
    def is_llm(self) -> bool:
        return self.kind == "llm"

    def defer_hashes(self, source: HashSource, count: int) -> None:
        """Make ``prefix_hashes`` ``source.hashes(count)``, computed when first read
        (then kept: later reads return the same tuple, until :meth:`forget_hashes`).
        Assigning ``prefix_hashes`` afterwards is not supported (use ``replace``)."""
        self._source = source
        self._count = count
        del self.prefix_hashes  # an unset slot: the next read reaches __getattr__

    def forget_hashes(self) -> None:
        """Drop a deferred ``prefix_hashes`` tuple once made (the driver does when the
        call has ended); read again, it is made again, equal.  No effect otherwise."""
        if self._source is not None:
            with suppress(AttributeError):  # not made since
                del self.prefix_hashes

    if not TYPE_CHECKING:  # (mypy would take every unknown attribute of a Call as Any)

        def __getattr__(self, name: str) -> Any:
            # Reached only when normal lookup fails: for ``prefix_hashes``, while a
            # deferred tuple is not made.  Reads of a made tuple are plain slot reads.
            if name == "prefix_hashes" and self._source is not None:
                hashes = self._source.hashes(self._count)
                self.prefix_hashes = hashes
                return hashes
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


@dataclass(slots=True)
class Workload:
    """A replayable workload: calls in issue order plus where they came from.

    ``calls`` is sorted so that every call comes after its parents (the readers
    guarantee it), with ties kept in file order.
    """

    calls: list[Call]
    name: str = "workload"
    source: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self) -> Iterator[Call]:
        return iter(self.calls)

    @property
    def llm_calls(self) -> list[Call]:
        return [c for c in self.calls if c.kind == "llm"]

    def sessions(self) -> dict[str, list[Call]]:
        """Calls grouped by session id, each list in workload order."""
        out: dict[str, list[Call]] = {}
        for c in self.calls:
            out.setdefault(c.session_id, []).append(c)
        return out

    @property
    def num_sessions(self) -> int:
        return len({c.session_id for c in self.calls})

    def models(self) -> set[str | None]:
        return {c.model for c in self.calls if c.kind == "llm"}


@dataclass
class LazyWorkload:
    """A workload generated session by session while the simulation reaches it.

    ``open_sessions()`` returns a fresh iterator of sessions, each the list of one
    session's calls (parents before children); a session's root calls may not be
    earlier than any root of the sessions before it.  The simulation pulls a session
    only when its first root comes due and forgets it once its calls have ended, so
    memory follows the sessions in flight, not the workload's length.  Iterating the
    same object again generates the same calls.

    Attributes:
        open_sessions: a fresh iterator over the sessions, in root-time order.
        model_names: the models the calls name (``None``: the cluster's default).
        name, source, meta: as :class:`Workload`.
    """

    open_sessions: Callable[[], Iterator[list[Call]]]
    model_names: frozenset[str | None]
    name: str = "workload"
    source: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    def models(self) -> set[str | None]:
        return set(self.model_names)

    def materialize(self) -> Workload:
        """Every call in memory at once (what code that needs the whole trace uses)."""
        calls = [c for s in self.open_sessions() for c in s]
        return Workload(calls, name=self.name, source=self.source, meta=dict(self.meta))


#: What a simulation replays: a workload in memory or one generated as it goes.
AnyWorkload: TypeAlias = Workload | LazyWorkload


def topo_order(calls: Iterable[Call]) -> list[Call]:
    """Return calls ordered so parents precede children, stable by issue time then input order.

    Raises ``ValueError`` naming the call on a missing parent or a cycle.
    """
    calls = list(calls)
    by_id = {c.call_id: c for c in calls}
    indexed = sorted(range(len(calls)), key=lambda i: (calls[i].issue_time_s, i))
    done: set[str] = set()
    out: list[Call] = []
    visiting: set[str] = set()

    def visit(c: Call) -> None:
        stack = [(c, 0)]
        while stack:
            cur, pi = stack.pop()
            if cur.call_id in done:
                continue
            if pi == 0:
                visiting.add(cur.call_id)
            if pi < len(cur.parents):
                pid = cur.parents[pi]
                stack.append((cur, pi + 1))
                if pid in done:
                    continue
                if pid not in by_id:
                    raise ValueError(f"call {cur.call_id!r}: parent {pid!r} is not in the trace")
                if pid in visiting:
                    raise ValueError(f"call {cur.call_id!r}: dependency cycle through {pid!r}")
                stack.append((by_id[pid], 0))
            else:
                visiting.discard(cur.call_id)
                done.add(cur.call_id)
                out.append(cur)

    for i in indexed:
        visit(calls[i])
    return out
