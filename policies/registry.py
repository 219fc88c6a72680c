"""The policy registry: policies register by kind and name; specs create instances.

A policy spec is ``name`` or ``name:key=value,key=value`` (e.g.
``prefix_affinity:cache_threshold=0.5``).  Parameters are passed to the policy's
constructor as keyword arguments, converted to the type of the constructor default.

Where policies come from, in load order:

* every module of ``policies/<kind>/`` (found with :mod:`pkgutil`; names starting with
  ``_`` are helpers and skipped), so a new policy file registers with no other edit;
* installed packages, through the entry-point group ``agentsim.policies`` (each entry
  point names a module that registers its policies on import);
* plugins named at run time (:func:`load_plugin`: ``--plugin``, a cluster TOML's
  ``plugins``): a ``.py`` file, or ``module:Class``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from sim.common.errors import PolicyError

KINDS = ("routing", "batching", "retention", "placement", "autoscaling", "persistence")

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

    def describe(self) -> str:
        """One line: ``kind name: description [params: a=1, b (required)]``."""
        params = ", ".join(p.describe() for p in self.parameters())
        return f"{self.kind} {self.name}: {self.description}" + (
            f" [params: {params}]" if params else ""
        )


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


def _import_failure(e: Exception, where: str, what: str) -> PolicyError:
    """The one-line error of a policy module or plugin that failed to import: the file
    and line of a syntax error, else ``where`` and the exception."""
    if isinstance(e, SyntaxError):
        return PolicyError(f"{e.filename or where}:{e.lineno}: syntax error: {e.msg}")
    return PolicyError(f"{where}: {what} failed to import: {type(e).__name__}: {e}")


def _import_builtin(name: str) -> None:
    """Import one built-in policy module; a broken file is a one-line error naming it."""
    try:
        importlib.import_module(name)
    except Exception as e:
        spec = None if isinstance(e, SyntaxError) else importlib.util.find_spec(name)
        where = spec.origin if spec is not None and spec.origin else name
        raise _import_failure(e, where, "policy module") from None


def builtin_modules() -> list[str]:
    """Every policy module under ``policies/<kind>/`` (helpers named ``_*`` and each
    kind's ``base`` module excepted), found on disk: a new file needs no other edit."""
    out = []
    for kind in KINDS:
        pkg = importlib.import_module(f"policies.{kind}")
        for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if not m.name.startswith("_") and m.name != "base":
                out.append(f"policies.{kind}.{m.name}")
    return out


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for mod in builtin_modules():
        _import_builtin(mod)
    for ep in entry_points(group="agentsim.policies"):
        try:
            ep.load()
        except Exception as e:  # a broken plug-in must not break the built-ins
            raise PolicyError(f"policy plug-in {ep.name!r} ({ep.value}) failed to load: {e}") from e
    _loaded = True


#: Plugins loaded so far: the reference as resolved (absolute path, or ``module:Class``)
#: -> the policies it registered.  Loading the same plugin again is a no-op.
_PLUGINS: dict[str, tuple[PolicyInfo, ...]] = {}


def _policy_bases() -> dict[type, str]:
    """The policy interfaces, each with the kind of the policies that subclass it."""
    from policies.base import Autoscaler, BatchPolicy, PlacementPolicy, RetentionPolicy, Router
    from policies.persistence.base import PersistencePolicy

    return {
        Router: "routing",
        BatchPolicy: "batching",
        RetentionPolicy: "retention",
        PlacementPolicy: "placement",
        Autoscaler: "autoscaling",
        PersistencePolicy: "persistence",
    }


def _snapshot() -> set[tuple[str, str, type]]:
    return {(k, n, info.cls) for k, table in _REGISTRY.items() for n, info in table.items()}


def _exec_file(path: Path) -> ModuleType:
    """Import the plugin file ``path`` as a module of its own (its name derived from
    the path, so two plugin files with one file name do not collide)."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", path.stem)
    modname = f"agentsim_plugin_{stem}_{digest}"
    if modname in sys.modules:  # loaded before (as PATH.py, now as PATH.py:Class)
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise PolicyError(f"{path}: not a Python file that can be imported")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as e:
        del sys.modules[modname]
        raise _import_failure(e, str(path), "plugin") from None
    return mod


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _register_class(ref: str, where: str, cls: Any) -> PolicyInfo:
    """Register the class a ``module:Class`` plugin names (unless its module's
    ``@register`` did): under its own ``policy_name`` if it sets one, else its class
    name in snake_case (``MyRouter`` -> ``my_router``)."""
    bases = _policy_bases()
    kind = next(
        (k for base, k in bases.items() if isinstance(cls, type) and issubclass(cls, base)), None
    )
    if kind is None:
        names = ", ".join(b.__name__ for b in bases)
        raise PolicyError(
            f"{where}: {ref}: {getattr(cls, '__name__', type(cls).__name__)!r} is not a "
            f"policy class (subclass one of {names})"
        )
    for info in _REGISTRY[kind].values():
        if info.cls is cls:
            return info
    name = cls.__dict__.get("policy_name") or _snake(cls.__name__)
    register(kind, name)(cls)
    return _REGISTRY[kind][name]


def load_plugin(
    ref: str, base_dir: str | Path | None = None, where: str = "--plugin"
) -> tuple[PolicyInfo, ...]:
    """Load one out-of-tree policy plugin and return the policies it registered.

    ``ref`` is a Python file (``path/to/my_router.py``: every ``@register`` in it
    counts; relative to ``base_dir`` when given, else to the working directory), or
    ``module:Class`` / ``path/to/file.py:Class`` (the class is registered if its module
    did not register it: see :func:`_register_class`).  ``where`` names the origin in
    errors (``--plugin``, or ``cluster.toml:3: plugins[0]``).  Every problem (missing
    file, syntax error, import error, missing class, a class that is not a policy, a
    file that registers nothing) is one :class:`PolicyError` line naming the file.
    """
    _load()
    try:
        return _load_plugin(ref, base_dir)
    except PolicyError as e:
        raise PolicyError(f"{where}: {e}") from None


def _split_ref(ref: str, base_dir: str | Path | None) -> tuple[Path | None, str, str]:
    """``(file path or None, module or file text, class name or "")`` of a plugin
    reference; a relative path is taken from ``base_dir`` (default: the working
    directory) and made absolute."""
    src, _, clsname = ref.strip().rpartition(":") if ":" in ref else ("", "", ref.strip())
    if not src:
        src, clsname = clsname, ""
    if not (src.endswith(".py") or "/" in src):
        return None, src, clsname
    path = Path(src).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path.resolve(), src, clsname


def resolve_plugin_ref(ref: str, base_dir: str | Path | None = None) -> str:
    """``ref`` with a relative file path made absolute (``module:Class`` unchanged): the
    form configs carry, so that another process (a sweep worker) loads the same file."""
    path, src, clsname = _split_ref(ref, base_dir)
    head = str(path) if path is not None else src
    return f"{head}:{clsname}" if clsname else head


def _load_plugin(ref: str, base_dir: str | Path | None) -> tuple[PolicyInfo, ...]:
    path, src, clsname = _split_ref(ref, base_dir)
    key = resolve_plugin_ref(ref, base_dir)
    if key in _PLUGINS:
        return _PLUGINS[key]
    before = _snapshot()
    if path is not None:
        if not path.is_file():
            raise PolicyError(f"{src}: plugin file not found ({path})")
        mod = _exec_file(path)
        origin = str(path)
    else:
        try:
            mod = importlib.import_module(src)
        except ModuleNotFoundError as e:
            raise PolicyError(f"{ref}: no module named {e.name!r}") from None
        except Exception as e:
            raise _import_failure(e, ref, "plugin") from None
        origin = getattr(mod, "__file__", None) or src
    if clsname:
        if not hasattr(mod, clsname):
            raise PolicyError(f"{origin}: defines no {clsname!r} (plugin {ref})")
        infos: tuple[PolicyInfo, ...] = (_register_class(ref, origin, getattr(mod, clsname)),)
    else:
        after = _snapshot() - before
        infos = tuple(_REGISTRY[k][n] for k, n, _ in sorted(after, key=lambda t: (t[0], t[1])))
        if not infos:
            raise PolicyError(
                f"{origin}: registers no policy (decorate a class with "
                "@register(kind, name), or name one: module:Class)"
            )
    _PLUGINS[key] = infos
    return infos


def load_plugins(
    refs: Sequence[str], base_dir: str | Path | None = None, where: str = "--plugin"
) -> list[PolicyInfo]:
    """:func:`load_plugin` for each of ``refs`` in order; the policies they registered."""
    return [info for ref in refs for info in load_plugin(ref, base_dir, where)]


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
            f"unknown {kind} policy {name!r}{hint}; known: {', '.join(sorted(table))} "
            "(a plugin's policies need --plugin FILE or the cluster config's plugins)"
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
