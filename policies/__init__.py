"""Pluggable scheduling policies: routing, batching, retention, placement, autoscaling.

See :mod:`policies.registry` for how policies register and :mod:`policies.base` for the
interfaces and the read-only cluster view they receive.
"""

from policies.registry import create, list_policies, register

__all__ = ["create", "list_policies", "register"]
