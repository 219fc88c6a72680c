"""Fault-time persistence (``policies/persistence``) versus the shared KV store.

``host_offload`` and ``remote_store`` are not configurations of ``sim.cluster.kvstore``:
their copies are keyed by call / session, hold a token count that includes a session's
generated tokens, are priced over topology paths, and survive only if their write-behind
finished before the fault.  These hand-worked cases pin those semantics, so a change that
folds them into the store (block-granular, write-through, priced per tier) must fail here
and be declared as a change of results.
"""

from __future__ import annotations

from policies.persistence.base import FaultInfo, LostKV, PersistenceContext
from policies.persistence.host_offload import HostOffload
from policies.persistence.remote_store import STORE, RemoteStore
from sim.costmodel.transfer import achieved_bandwidth
from sim.specs.topology import Path

BW = 10e9  # bytes/s of the one path every transfer here uses
LAT = 1e-3  # s
PER_TOKEN = 1000  # KV bytes per token (all layers)
PATH = Path(BW, LAT, "ethernet", 2)


def _ctx() -> PersistenceContext:
    return PersistenceContext(path=lambda _a, _b: PATH, kv_bytes_per_token=PER_TOKEN, peer_gpu=None)


def _write_s(tokens: int) -> float:
    return LAT + tokens * PER_TOKEN / achieved_bandwidth("ethernet", BW)


def test_snapshot_keeps_the_whole_context_once_its_write_finished() -> None:
    # an idle session: 1000 prompt tokens + 200 generated, its call ended at t=10 s
    session = LostKV("session:s", 1200, 1200, 10.0, "n0/gpu0", 0)
    w = _write_s(1200)
    just_after = FaultInfo("replica_restart", 10.0 + w + 1e-6, 0.0, node_lost=False)
    just_before = FaultInfo("replica_restart", 10.0 + w - 1e-6, 0.0, node_lost=False)
    for policy, vertex in ((RemoteStore(), STORE), (HostOffload(), "n0/cpu0")):
        (copy,) = policy.save([session], just_after, _ctx())
        assert copy is not None
        # token-granular and generated tokens included (a store holds prompt blocks only)
        assert (copy.vertex, copy.tokens, copy.ready_s) == (vertex, 1200, just_after.now_s)
        # a write still in flight at the fault is lost (a store write-through has no write time)
        assert policy.save([session], just_before, _ctx()) == [None]


def test_in_flight_call_keeps_its_prompt_only_after_prefill_and_host_dies_with_node() -> None:
    prefilled = LostKV("call:c", 1500, 1000, 5.0, "n1/gpu2", 1)
    not_prefilled = LostKV("call:d", 300, 0, 20.0, "n1/gpu2", 1)
    restart = FaultInfo("replica_restart", 20.0, 0.0, node_lost=False)
    node = FaultInfo("node", 20.0, 0.0, node_lost=True)
    got = RemoteStore().save([prefilled, not_prefilled], restart, _ctx())
    assert [c.tokens if c else None for c in got] == [1000, None]
    got = HostOffload().save([prefilled, not_prefilled], restart, _ctx())
    assert got[0] is not None and got[0].vertex == "n1/cpu0" and got[1] is None
    assert HostOffload().save([prefilled], node, _ctx()) == [None]
    assert RemoteStore().save([prefilled], node, _ctx())[0] is not None
