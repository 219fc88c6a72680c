"""Least-recently-used eviction of cached KV blocks (vLLM's prefix cache)."""

from __future__ import annotations

from policies.base import RetentionPolicy
from policies.registry import register


@register("retention", "lru")
class LRU(RetentionPolicy):
    """Keep a finished call's prompt blocks as prefix cache; evict the least recently used.

    Rule: blocks no running call references stay cached and are evicted in LRU order
    when memory is needed.  No parameters.  Reference: vLLM automatic prefix caching.
    """
