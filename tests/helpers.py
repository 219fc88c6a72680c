"""Small builders shared by the tests: workloads and clusters made by hand."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

from sim.cluster.config import ClusterConfig, Deployment, NodeGroup, PolicyConfig, validate
from sim.costmodel.base import RooflineCostModel
from sim.workload.calls import Call, Workload

ROOFLINE = RooflineCostModel()


def load_file(name: str, path: Path) -> ModuleType:
    """The Python file ``path`` imported as module ``name`` (once: later calls return
    it), for scripts outside the packages and for a module's source beside its compiled
    build.  It is in ``sys.modules`` before it runs, as dataclasses need."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def chain_hashes(session: int, tokens: int, block: int = 16, salt: int = 0) -> tuple[int, ...]:
    """Chain hashes of a session's growing context: the same session shares its prefix."""
    return tuple(hash((salt, session, i)) & (2**62 - 1) for i in range(tokens // block))


def llm(
    cid: str,
    sid: str,
    inp: int,
    out: int,
    t: float = 0.0,
    parents: tuple[str, ...] = (),
    gap: float = 0.0,
    hashes: tuple[int, ...] = (),
    block: int = 16,
    model: str | None = None,
) -> Call:
    return Call(cid, sid, "llm", parents, t, gap, model, inp, out, hashes, block)


def tool(cid: str, sid: str, duration: float, parents: tuple[str, ...], t: float = 0.0) -> Call:
    return Call(cid, sid, "tool", parents, t, 0.0, None, 0, 0, (), 16, duration)


def cluster(
    model: str = "llama-2-7b",
    tp: int = 1,
    replicas: int = 1,
    router: str = "round_robin",
    nodes: int = 1,
    fast_forward: bool = True,
    **dep: object,
) -> ClusterConfig:
    """A one-deployment cluster.  Its ``max_model_len`` is 1M tokens unless given (the
    hand-built scenarios use prompts past Llama-2-7B's 4,096-token context to exercise
    the engine; ``max_model_len=0`` gives the model's own context, as the CLI does)."""
    dep.setdefault("max_model_len", 1 << 20)
    return validate(
        ClusterConfig(
            name="test",
            gpu="a100-80gb",
            nodes=(NodeGroup("dgx-a100", nodes, 8),),
            deployments=(replace(Deployment(model=model, tp=tp, replicas=replicas), **dep),),  # type: ignore[arg-type]
            policies=PolicyConfig(router=router),
            fast_forward=fast_forward,
            source="<test>",
        )
    )


def workload(calls: list[Call]) -> Workload:
    from sim.workload.calls import topo_order

    return Workload(topo_order(calls), name="test")
