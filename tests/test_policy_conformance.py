"""Every registered policy (built-in, and a plugin loaded here) passes the same
conformance checks (``sim.experiments.conformance.check_policy``), and the checks can fail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from policies import BatchPolicy, Router, load_plugin, registry
from sim.experiments.conformance import ConformanceError, check_policy

PLUGIN = Path(__file__).resolve().parent / "plugins" / "fewest_tokens.py"
load_plugin(str(PLUGIN))  # an out-of-tree router, checked like the built-ins
# yours too: AGENTSIM_PLUGINS=my_router.py:other.py pytest tests/test_policy_conformance.py
for _ref in filter(None, os.environ.get("AGENTSIM_PLUGINS", "").split(os.pathsep)):
    load_plugin(_ref)

ALL = [(p.kind, p.name) for p in registry.list_policies()]


def test_the_plugin_and_every_kind_are_in_the_parametrisation() -> None:
    assert ("routing", "fewest_tokens") in ALL and ("batching", "sarathi") in ALL
    assert {k for k, _ in ALL} == set(registry.KINDS)


@pytest.mark.parametrize(("kind", "name"), ALL)
def test_policy_conforms(kind: str, name: str) -> None:
    check_policy(kind, name)


def _temporarily(kind: str, name: str, cls: type) -> None:
    registry.register(kind, name)(cls)


def test_a_router_returning_a_replica_it_was_not_offered_fails() -> None:
    class Outside(Router):
        """Always replica 7."""

        def route(self, call, candidates, view):  # type: ignore[no-untyped-def]
            return 7

    _temporarily("routing", "_outside", Outside)
    try:
        with pytest.raises(ConformanceError, match="not one of"):
            check_policy("routing", "_outside")
    finally:
        del registry._REGISTRY["routing"]["_outside"]


def test_a_batching_policy_that_drops_a_call_fails() -> None:
    class Dropper(BatchPolicy):
        """Forgets the last waiting call."""

        reorders = True

        def order(self, waiting, now):  # type: ignore[no-untyped-def]
            return waiting[:-1]

    _temporarily("batching", "_dropper", Dropper)
    try:
        with pytest.raises(ConformanceError, match="permutation"):
            check_policy("batching", "_dropper")
    finally:
        del registry._REGISTRY["batching"]["_dropper"]
