"""docs/policies.md: every ```python block runs as written (in order, one namespace),
and the policies it defines pass the conformance checks and run from the CLI."""

from __future__ import annotations

import re
from pathlib import Path

from policies import registry

DOC = Path(__file__).resolve().parent.parent / "docs" / "policies.md"


def blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.S | re.M)


def test_the_page_has_a_router_a_batching_and_a_retention_example() -> None:
    text = "\n".join(blocks())
    for kind in ("routing", "batching", "retention"):
        assert f'@register("{kind}"' in text


def test_every_code_block_runs_and_its_policies_conform() -> None:
    ns: dict[str, object] = {}
    for code in blocks():  # the last block runs check_policy on the three examples
        exec(compile(code, str(DOC), "exec"), ns)
    for kind, name in (
        ("routing", "cache_then_load"),
        ("batching", "short_prompt_first"),
        ("retention", "pin_if_expensive"),
    ):
        assert registry.get_info(kind, name).description


def test_the_router_example_prefers_the_cache_then_the_load() -> None:
    ns: dict[str, object] = {}
    exec(compile(blocks()[0], str(DOC), "exec"), ns)
    from sim.experiments.conformance import FakeCluster, FakeReplica
    from tests.helpers import llm

    call = llm("c", "s", 1000, 10)
    reps = [
        FakeReplica(0, outstanding_tokens=10),
        FakeReplica(1, outstanding_tokens=900, cached={"c": 600}),
        FakeReplica(2, outstanding_tokens=5, cached={"c": 100}),  # 10% < min_hit
    ]
    router = registry.create("routing", "cache_then_load")
    assert router.route(call, reps, FakeCluster(reps)) == 1
    assert (
        registry.create("routing", "cache_then_load:min_hit=0.7").route(
            call, reps, FakeCluster(reps)
        )
        == 2
    )
