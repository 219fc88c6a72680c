"""Routing at scale: every router decides exactly as with a full scan of the replicas.

The indexed path of a router (the view's prefix index of prompt roots, load buckets
fed by the cluster's replica changes) must give the same replica for every call as
its reference path (``Router.full_scan``: every candidate scored), on random clusters
and traces.  Parametrised over every registered router, so a new one is covered too.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import registry
from policies.routing._buckets import kth_merged
from sim.simulation import simulate
from sim.workload.calls import Workload
from tests.helpers import ROOFLINE, cluster
from tests.test_invariants import workloads

ROUTERS = [info.name for info in registry.list_policies("routing")]
# a router's non-default settings whose indexed path differs (kv_aware ignoring the cache)
VARIANTS = {
    "kv_aware": [
        "kv_aware:overlap_weight=0",
        "kv_aware:overlap_weight=0.37",
        "kv_aware:migrate=true",
    ]
}


def _clusters(router: str) -> st.SearchStrategy:
    return st.builds(
        lambda replicas, seqs, nblocks, bs: cluster(
            replicas=replicas,
            nodes=-(-replicas // 8),
            max_num_seqs=seqs,
            max_num_batched_tokens=max(seqs, 512),
            num_gpu_blocks_override=nblocks,
            block_size=bs,
            router=router.split(":")[0],
        ),
        st.integers(1, 12),
        st.integers(1, 6),
        st.integers(30, 200),  # small caches: evictions change which replica holds what
        st.sampled_from([8, 16, 32]),
    )


def _decisions(w: Workload, cfg, spec: str, seed: int, full_scan: bool) -> tuple[list, str]:
    router = registry.create("routing", spec, seed=seed)
    router.full_scan = full_scan
    r = simulate(w, cfg, seed=seed, cost_model=ROOFLINE, router=router)
    calls = r.calls.sort_values("call_id")
    return list(zip(calls["call_id"], calls["replica"], strict=True)), json.dumps(r.summary)


@pytest.mark.parametrize("spec", [s for name in ROUTERS for s in [name, *VARIANTS.get(name, [])]])
def test_indexed_routing_equals_full_scan(spec: str) -> None:
    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(w=workloads(), data=st.data(), seed=st.integers(0, 2**31 - 1))
    def check(w: Workload, data: st.DataObject, seed: int) -> None:
        cfg = data.draw(_clusters(spec))
        fast, fast_summary = _decisions(w, cfg, spec, seed, full_scan=False)
        scan, scan_summary = _decisions(w, cfg, spec, seed, full_scan=True)
        assert fast == scan
        assert fast_summary == scan_summary

    check()


def test_kth_merged_equals_building_the_list() -> None:
    rng = random.Random(7)
    for _ in range(500):
        a = sorted(rng.sample(range(200), rng.randint(0, 30)))
        removed = sorted(rng.sample(a, rng.randint(0, len(a))))
        added = sorted(rng.sample(sorted(set(range(200)) - set(a)), rng.randint(0, 5)))
        merged = sorted((set(a) - set(removed)) | set(added))
        for k in range(len(merged)):
            assert kth_merged(a, removed, added, k) == merged[k]
