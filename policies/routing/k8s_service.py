"""A plain Kubernetes Service: kube-proxy spreads calls over ready endpoints, blind to load.

This is the stock baseline an inference deployment gets from ``kind: Service`` with no
inference-aware gateway in front.  kube-proxy programs every node to forward a
connection to the Service's ClusterIP to one of the *ready* endpoints of its
EndpointSlices (pods failing their readiness probe are left out):

- ``iptables`` mode (the default kube-proxy mode) jumps to endpoint ``i`` of ``n`` with
  ``statistic --mode random --probability 1/(n-i)`` rules, i.e. a uniformly random
  endpoint per connection ("iptables has only one algorithm for random selection";
  Kubernetes docs, *Virtual IPs and Service Proxies*; kubernetes/kubernetes#64580:
  "Random means equal probability of hitting any backend").
- ``ipvs`` mode uses the IPVS scheduler ``rr`` (round robin) by default
  (``--ipvs-scheduler``; same docs).

The simulation treats every LLM call as a new connection (agent frameworks open a
request per call; with HTTP keep-alive kube-proxy would pin a client's connection to
one pod, which is even less balanced).  Only ready replicas are candidates: the cluster
never offers replicas that are starting, draining or failed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from policies.base import ClusterView, ReplicaView, Router
from policies.registry import register
from sim.common.errors import PolicyError
from sim.workload.calls import Call

MODES = ("iptables", "ipvs")


@register("routing", "k8s_service")
class K8sService(Router):
    """Kubernetes Service via kube-proxy: a random ready pod (iptables) or round robin (ipvs).

    Rule: ``mode=iptables`` (default) picks a ready replica of the call's model uniformly
    at random (``random.Random(seed)``); ``mode=ipvs`` cycles through the ready replicas
    in replica-id order (the i-th call of a model goes to ready replica ``i mod n``).
    No view of load, queues or KV cache.  Parameters: ``mode`` (``iptables`` | ``ipvs``).
    Reference: Kubernetes documentation, "Virtual IPs and Service Proxies" (kube-proxy
    iptables and IPVS modes).
    """

    def __init__(self, mode: str = "iptables", seed: int = 0) -> None:
        super().__init__(seed)
        if mode not in MODES:
            raise PolicyError(f"k8s_service: mode must be 'iptables' or 'ipvs', got {mode!r}")
        self.mode = mode
        self._rng = random.Random(seed)
        self._next: dict[str, int] = {}

    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        if self.mode == "ipvs":
            key = candidates[0].model
            i = self._next.get(key, 0)
            self._next[key] = i + 1
            return candidates[i % len(candidates)].replica_id
        return candidates[self._rng.randrange(len(candidates))].replica_id
