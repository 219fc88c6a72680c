"""No session-state persistence: everything on a lost replica is recomputed."""

from __future__ import annotations

from policies.persistence.base import PersistencePolicy
from policies.registry import register


@register("persistence", "none")
class NoPersistence(PersistencePolicy):
    """Keep nothing: KV lost with a replica is recomputed by the next attempt.

    Rule: every call in flight re-prefills its prompt and generated tokens on another
    replica; idle sessions re-prefill their context on their next call.  No parameters.
    """
