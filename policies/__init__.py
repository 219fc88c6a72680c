"""Pluggable scheduling policies: routing, batching, retention, placement, autoscaling,
persistence.

This package is the one import a policy needs (the plugin contract)::

    from policies import Router, register, ClusterView, ReplicaView, Call

It re-exports the policy interfaces and decisions, the read-only views policies
receive (:mod:`policies.base`, :mod:`policies.persistence.base`), the registry
functions (:mod:`policies.registry`) and the :class:`~sim.workload.calls.Call` type
that routers and batching policies read.  Conformance checks for any registered policy
live one layer up, in :func:`sim.experiments.conformance.check_policy`.
"""

from policies.base import (
    Autoscaler,
    BatchPolicy,
    ClusterView,
    KVCostView,
    PlacementPolicy,
    PlacementRequest,
    ReplicaView,
    RetentionDecision,
    RetentionPolicy,
    Router,
    SeqView,
    TopologyView,
)
from policies.persistence.base import (
    FaultInfo,
    KVCopy,
    LostKV,
    PersistenceContext,
    PersistencePolicy,
)
from policies.registry import (
    KINDS,
    PolicyInfo,
    create,
    get_info,
    list_policies,
    load_plugin,
    load_plugins,
    register,
)
from sim.workload.calls import Call

__all__ = [
    "KINDS",
    "Autoscaler",
    "BatchPolicy",
    "Call",
    "ClusterView",
    "FaultInfo",
    "KVCopy",
    "KVCostView",
    "LostKV",
    "PersistenceContext",
    "PersistencePolicy",
    "PlacementPolicy",
    "PlacementRequest",
    "PolicyInfo",
    "ReplicaView",
    "RetentionDecision",
    "RetentionPolicy",
    "Router",
    "SeqView",
    "TopologyView",
    "create",
    "get_info",
    "list_policies",
    "load_plugin",
    "load_plugins",
    "register",
]
