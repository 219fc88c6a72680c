"""The policy registry: policies register by kind and name; specs create instances.

A policy spec is ``name`` or ``name:key=value,key=value`` (e.g.
``prefix_affinity:cache_threshold=0.5``).  Parameters are passed to the policy's
constructor as keyword arguments, converted to the type of the constructor default.
Other packages add policies through the Python entry-point group ``agentsim.policies``:
each entry point names a module that registers its policies on import.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, TypeVar

from sim.common.errors import PolicyError

KINDS = ("routing", "batching", "retention", "placement", "autoscaling", "persistence")

# Modules of the built-in policies, imported on first use of the registry.
BUILTIN_MODULES = (
    "policies.routing.round_robin",
    "policies.routing.least_loaded",
    "policies.routing.session_affinity",
    "policies.routing.power_of_two",
    "policies.routing.prefix_affinity",
    "policies.routing.kv_aware",
    "policies.routing.llmd_scorer",
    "policies.routing.k8s_service",
    "policies.batching.fcfs",
    "policies.batching.plas",
    "policies.batching.atlas",
    "policies.batching.vtc",
    "policies.retention.lru",
    "policies.retention.ttl_pin",
    "policies.retention.infercept",
    "policies.placement.first_fit",
    "policies.placement.topology_aware",
    "policies.placement.k8s_default",
    "policies.autoscaling.static",
    "policies.autoscaling.queue_depth",
    "policies.autoscaling.keep_warm",
    "policies.autoscaling.hpa",
    "policies.persistence.none",
    "policies.persistence.host_offload",
    "policies.persistence.remote_store",
    "policies.persistence.migrate",
)

T = TypeVar("T")


#: Constructor arguments agentsim sets itself (``--seed``), not a spec's ``key=value``.
INJECTED_PARAMS = ("seed",)


@dataclass(frozen=True)
class Param:
    """One parameter a policy spec can set: ``name=value`` (``default`` when absent)."""

    name: str
    default: Any
    type: str

    def describe(self) -> str:
        """``name=default`` as a spec would write it (``migrate=false``), or
        ``name (required)``."""
        d = self.default
        if d is inspect.Parameter.empty:
            return f"{self.name} (required)"
        return f"{self.name}={str(d).lower() if isinstance(d, bool) else d}"


@dataclass(frozen=True)
class PolicyInfo:
    kind: str
    name: str
    cls: type
    description: str

    def parameters(self) -> list[Param]:
        """The spec parameters (constructor keyword arguments, as :func:`create` parses
        ``name:key=value``), with defaults and types, in signature order."""
        out = []
        for p in inspect.signature(self.cls).parameters.values():
            if p.name in INJECTED_PARAMS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.annotation is not inspect.Parameter.empty:
                ann = p.annotation if isinstance(p.annotation, str) else p.annotation.__name__
            else:
                ann = type(p.default).__name__ if p.default is not p.empty else "str"
            out.append(Param(p.name, p.default, str(ann)))
        return out


_REGISTRY: dict[str, dict[str, PolicyInfo]] = {k: {} for k in KINDS}
_loaded = False


def register(kind: str, name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: register a policy of ``kind`` under ``name``.

    The first line of the class docstring is the one-line description that
    ``agentsim policies`` prints.
    """
    if kind not in KINDS:
        raise PolicyError(f"unknown policy kind {kind!r}; kinds: {', '.join(KINDS)}")

    def deco(cls: type[T]) -> type[T]:
        doc = (inspect.getdoc(cls) or "").strip().splitlines()
        _REGISTRY[kind][name] = PolicyInfo(kind, name, cls, doc[0] if doc else "")
        cls.policy_name = name  # type: ignore[attr-defined]
        return cls

    return deco


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)
    for ep in entry_points(group="agentsim.policies"):
        try:
            ep.load()
        except Exception as e:  # a broken plug-in must not break the built-ins
            raise PolicyError(f"policy plug-in {ep.name!r} ({ep.value}) failed to load: {e}") from e


def list_policies(kind: str | None = None) -> list[PolicyInfo]:
    """Every registered policy (of one kind, or all), sorted by kind then name."""
    _load()
    kinds = [kind] if kind else list(KINDS)
    return [info for k in kinds for _, info in sorted(_REGISTRY[k].items())]


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``name:k=v,k2=v2`` into the name and raw parameter strings."""
    name, _, rest = spec.strip().partition(":")
    params: dict[str, str] = {}
    if rest:
        for part in rest.split(","):
            if not part.strip():
                continue
            key, eq, val = part.partition("=")
            if not eq:
                raise PolicyError(f"policy {spec!r}: parameter {part!r} is not key=value")
            params[key.strip()] = val.strip()
    return name.strip(), params


def _convert(policy: str, key: str, raw: Any, default: Any) -> Any:
    if not isinstance(raw, str) or default is inspect.Parameter.empty or default is None:
        return raw
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise PolicyError(
            f"policy {policy!r}: parameter {key}={raw!r} is not a valid {type(default).__name__}"
        ) from None
    return raw


def get_info(kind: str, name: str) -> PolicyInfo:
    _load()
    if kind not in _REGISTRY:
        raise PolicyError(f"unknown policy kind {kind!r}; kinds: {', '.join(KINDS)}")
    table = _REGISTRY[kind]
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PolicyError(
            f"unknown {kind} policy {name!r}{hint}; known: {', '.join(sorted(table))}"
        )
    return table[name]


def create(kind: str, spec: str | dict[str, Any], **extra: Any) -> Any:
    """Instantiate a policy from a spec string (or ``{"name": ..., params...}`` dict)."""
    if isinstance(spec, dict):
        spec = dict(spec)
        name = str(spec.pop("name", ""))
        params: dict[str, Any] = spec
    else:
        name, params = parse_spec(spec)
    info = get_info(kind, name)
    sig = inspect.signature(info.cls)
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    kwargs: dict[str, Any] = {}
    for key, raw in params.items():
        if key not in sig.parameters and not accepts_any:
            known = [p for p in sig.parameters if p not in extra]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PolicyError(
                f"{kind} policy {name!r} has no parameter {key!r}{hint}; parameters: {', '.join(known) or 'none'}"
            )
        default = sig.parameters[key].default if key in sig.parameters else inspect.Parameter.empty
        kwargs[key] = _convert(name, key, raw, default)
    for key, val in extra.items():
        if key in sig.parameters or accepts_any:
            kwargs[key] = val
    try:
        return info.cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise PolicyError(f"{kind} policy {name!r}: {e}") from None
