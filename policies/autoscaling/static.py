"""A fixed number of replicas."""

from __future__ import annotations

from policies.base import Autoscaler
from policies.registry import register


@register("autoscaling", "static")
class Static(Autoscaler):
    """Keep every deployment at its configured replica count; never scale.

    No parameters.
    """
