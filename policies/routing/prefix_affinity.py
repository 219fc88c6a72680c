"""SGLang router's cache-aware policy: an approximate radix tree of routed prefixes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from policies.base import ClusterView, ReplicaView, Router
from policies.registry import register
from sim.common.errors import PolicyError
from sim.workload.calls import Call


@register("routing", "prefix_affinity")
class PrefixAffinity(Router):
    """SGLang cache-aware routing: longest routed-prefix match unless load is imbalanced.

    The router keeps its own approximate tree of the prompts it has *routed* to each
    replica (never the engines' real caches), keyed by the calls' chain hashes: a
    chain hash names its whole prefix, so the multi-tenant radix tree is a map from
    hash to the replicas whose routed prompts contain it.  Per call, O(prefix blocks):

    1. Loads are the replicas' outstanding requests.  The system is *imbalanced* when
       ``max - min > balance_abs_threshold`` and ``max > min * balance_rel_threshold``;
       then the call goes to the least-loaded replica (ties: lowest id).
    2. Otherwise find the replicas with the longest match of the call's prefix in the
       tree.  If ``matched tokens / input tokens > cache_threshold``, route to the
       matched replica (several with the same match: the least loaded, then lowest
       id); else route to the replica with the smallest tree (ties: lowest id).
    3. The call's prefix is inserted into the chosen replica's tree.  Each replica's
       tree keeps at most ``max_tree_tokens`` tokens; beyond that its least recently
       routed leaves are evicted (eagerly on insert rather than by SGLang's periodic
       eviction thread).

    Parameters: ``cache_threshold`` (float, 0.5, fraction of the prompt),
    ``balance_abs_threshold`` (int, 32 requests), ``balance_rel_threshold`` (float,
    1.1), ``max_tree_tokens`` (int, 2**24 tokens per replica).  Defaults are the SGLang
    router's ``CacheAwareConfig`` defaults (matching is over tokens, not characters).
    Reference: sgl-project/sglang ``sgl-router/src/policies/cache_aware.rs`` and
    ``tree.rs``.
    """

    def __init__(
        self,
        cache_threshold: float = 0.5,
        balance_abs_threshold: int = 32,
        balance_rel_threshold: float = 1.1,
        max_tree_tokens: int = 2**24,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if not 0.0 <= cache_threshold <= 1.0:
            raise PolicyError(
                f"prefix_affinity: cache_threshold must be in [0, 1], got {cache_threshold}"
            )
        if max_tree_tokens < 1:
            raise PolicyError("prefix_affinity: max_tree_tokens must be >= 1")
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold
        self.max_tree_tokens = max_tree_tokens
        self._owners: dict[int, set[int]] = {}  # hash -> replicas whose tree holds it
        # per replica: its tree's hashes, least recently routed first
        self._trees: dict[int, OrderedDict[int, None]] = {}
        self._tree_tokens: dict[int, int] = {}

    # ---- the approximate tree -----------------------------------------------------
    def match(self, call: Call, ids: set[int]) -> tuple[int, set[int]]:
        """Longest routed-prefix match among replicas ``ids``: (hashes matched, owners)."""
        owners = self._owners
        alive: set[int] = ids
        depth = 0
        for h in call.prefix_hashes:
            o = owners.get(h)
            if not o:
                break
            nxt = alive & o
            if not nxt:
                break
            alive = nxt
            depth += 1
        return depth, (alive if depth else set())

    def insert(self, call: Call, rid: int) -> None:
        """Record that ``call``'s prefix was routed to replica ``rid``."""
        tree = self._trees.setdefault(rid, OrderedDict())
        owners = self._owners
        added = 0
        # deepest first, so ancestors end up more recent and leaves are evicted first
        for h in reversed(call.prefix_hashes):
            if h in tree:
                tree.move_to_end(h)
            else:
                tree[h] = None
                owners.setdefault(h, set()).add(rid)
                added += 1
        size = self._tree_tokens.get(rid, 0) + added * call.block_size
        while size > self.max_tree_tokens and tree:
            h, _ = tree.popitem(last=False)
            o = owners[h]
            o.discard(rid)
            if not o:
                del owners[h]
            size -= call.block_size
        self._tree_tokens[rid] = size

    def tree_tokens(self, rid: int) -> int:
        return self._tree_tokens.get(rid, 0)

    # ---- routing ------------------------------------------------------------------
    def route(self, call: Call, candidates: Sequence[ReplicaView], view: ClusterView) -> int:
        loads = [r.outstanding_requests for r in candidates]
        lo, hi = min(loads), max(loads)
        if hi - lo > self.balance_abs_threshold and hi > lo * self.balance_rel_threshold:
            rid = min(candidates, key=lambda r: (r.outstanding_requests, r.replica_id)).replica_id
        else:
            by_id = {r.replica_id: r for r in candidates}
            depth, owners = self.match(call, set(by_id))
            matched = depth * call.block_size
            if call.input_tokens > 0 and matched / call.input_tokens > self.cache_threshold:
                rid = min(owners, key=lambda i: (by_id[i].outstanding_requests, i))
            else:
                rid = min(by_id, key=lambda i: (self.tree_tokens(i), i))
        if call.prefix_hashes:
            self.insert(call, rid)
        return rid
