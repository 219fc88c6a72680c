#!/usr/bin/env python3
"""Check the shape of the code (run by ``make lint``).

* Layers: the order of ``sim/``'s layers is read from the module map in
  docs/ARCHITECTURE.md (the fenced ``layers`` block; each unindented line starts with
  a layer name, low to high).  A module may import its own layer or a lower one;
  an upward import fails as ``file:line: <layer> imports <module> (<layer>)``.
  Every import counts: lazy ones inside functions and those under
  ``if TYPE_CHECKING:`` (a type-only upward dependency is still a dependency).
  The ``sim`` package root is free to import and be imported.
* Cycles: no import cycle between modules (the same imports, lazy ones included).
* Long functions: a function over 80 lines needs ``# long: <reason>`` on its ``def``
  line or the line above it (above its decorators).

Usage: ``python scripts/check_layers.py [ROOT]`` (ROOT defaults to the checkout).
Exit status 1 and one line per finding when something fails.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_LINES = 80
DOC = Path("docs") / "ARCHITECTURE.md"
PACKAGES = ("sim", "policies")


def read_layers(root: Path) -> list[str]:
    """The layer names, low to high, from the ``layers`` block of ARCHITECTURE.md."""
    text = (root / DOC).read_text(encoding="utf-8")
    m = re.search(r"^```layers\n(.*?)^```", text, re.S | re.M)
    if m is None:
        raise SystemExit(f"{DOC}: no ```layers block (the module map) found")
    order = []
    for line in m.group(1).splitlines():
        if line.strip() and not line[0].isspace():
            order.append(line.split()[0].rstrip("/").removesuffix(".py"))
    return order


def module_files(root: Path) -> dict[str, Path]:
    """Every module of the packages, by dotted name (``pkg/__init__.py`` is ``pkg``)."""
    mods = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            rel = f.relative_to(root).with_suffix("")
            mods[".".join(rel.parts).removesuffix(".__init__")] = f
    return mods


def layer_of(mod: str, rank: dict[str, int]) -> str | None:
    """The layer of a dotted module name; None for the free ``sim`` root and outsiders."""
    parts = mod.split(".")
    if parts[0] == "policies":
        return "policies"
    if parts[0] != "sim" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in rank else None


@dataclass(frozen=True)
class Import:
    line: int
    target: str  # the module imported (for ``from a import b``: ``a.b`` if that is a module)


def imports_of(mod: str, path: Path, tree: ast.AST, mods: dict[str, Path]) -> list[Import]:
    """Every import in a module (any depth), resolved to module names."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [Import(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
            out += [Import(node.lineno, t) for t in subs] or [Import(node.lineno, base)]
    return out


def owner(name: str, mods: dict[str, Path]) -> str | None:
    """The module an imported dotted name belongs to (``a.b.c`` -> ``a.b`` if only that exists)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def layer_findings(root: Path, order: list[str], mods, imports) -> list[str]:
    rank = {n: i for i, n in enumerate(order)}
    bad = []
    for child in sorted((root / "sim").iterdir()):
        name = child.name.removesuffix(".py")
        has_code = child.suffix == ".py" or (child.is_dir() and any(child.rglob("*.py")))
        if has_code and name != "__init__" and name not in rank:
            bad.append(f"{child.relative_to(root)}: in no layer of {DOC}'s module map")
    for mod, found in imports.items():
        me = layer_of(mod, rank)
        if me is None:
            continue
        for imp in found:
            theirs = layer_of(imp.target, rank)
            if theirs is not None and rank[theirs] > rank[me]:
                rel = mods[mod].relative_to(root)
                bad.append(f"{rel}:{imp.line}: {me} imports {imp.target} ({theirs})")
    return bad


def cycle_findings(root: Path, mods, imports) -> list[str]:
    """One line per strongly connected group of modules: a cycle through it."""
    graph: dict[str, dict[str, int]] = {m: {} for m in mods}
    for mod, found in imports.items():
        for imp in found:
            dep = owner(imp.target, mods)
            # a module importing its own package (or itself) is not a cycle worth naming
            if dep is None or dep == mod or mod.startswith(dep + "."):
                continue
            graph[mod].setdefault(dep, imp.line)
    bad = []
    for group in strongly_connected(graph):
        if len(group) < 2:
            continue
        start = min(group)
        path = shortest_cycle(graph, start, group)
        line = graph[path[0]][path[1]]
        rel = mods[start].relative_to(root)
        bad.append(f"{rel}:{line}: import cycle: {' -> '.join(path)}")
    return bad


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for root_node in sorted(graph):
        if root_node in index:
            continue
        work = [(root_node, iter(sorted(graph[root_node])))]
        index[root_node] = low[root_node] = len(index)
        stack.append(root_node)
        on_stack.add(root_node)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        group.add(m)
                        if m == node:
                            break
                    groups.append(group)
    return groups


def shortest_cycle(graph: dict[str, dict[str, int]], start: str, group: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside the group (breadth first)."""
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for dep in sorted(graph[node]):
                if dep not in group:
                    continue
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if dep not in prev:
                    prev[dep] = node
                    nxt_frontier.append(dep)
        frontier = nxt_frontier
    raise AssertionError("a strongly connected group has a cycle")


def long_findings(root: Path, mods, trees) -> list[str]:
    bad = []
    for mod, tree in trees.items():
        path = mods[mod]
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            n = (node.end_lineno or node.lineno) - node.lineno + 1
            if n <= MAX_LINES:
                continue
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            near = [lines[node.lineno - 1]] + ([lines[first - 2]] if first >= 2 else [])
            if not any("# long:" in text for text in near):
                rel = path.relative_to(root)
                bad.append(
                    f"{rel}:{node.lineno}: {node.name} is {n} lines (over {MAX_LINES}) "
                    "with no '# long: <reason>' comment"
                )
    return bad


def check(root: Path) -> list[str]:
    """Every finding for the checkout at ``root`` (empty when the shape is right)."""
    order = read_layers(root)
    mods = module_files(root)
    trees = {m: ast.parse(f.read_text(encoding="utf-8"), str(f)) for m, f in mods.items()}
    imports = {m: imports_of(m, mods[m], trees[m], mods) for m in mods}
    return (
        layer_findings(root, order, mods, imports)
        + cycle_findings(root, mods, imports)
        + long_findings(root, mods, trees)
    )


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1]
    bad = check(root)
    for line in bad:
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
