"""``agentsim policies``: list the registered policies."""

from __future__ import annotations

import argparse
from typing import Any

from policies.registry import KINDS, list_policies, load_plugins


def register(sub: Any) -> None:
    p = sub.add_parser(
        "policies",
        help="list the registered scheduling policies with their parameters and defaults",
    )
    p.add_argument("--kind", choices=KINDS, help="only policies of this kind")
    p.add_argument(
        "--plugin",
        action="append",
        metavar="PATH.py|module:Class",
        help="also load and list a policy plugin (repeatable; see docs/policies.md)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    load_plugins(args.plugin or [])
    current = None
    for info in list_policies(args.kind):
        if info.kind != current:
            current = info.kind
            print(f"{current}:")
        print(f"  {info.name:<20} {info.description}")
        items = [f"{p.describe()} ({p.type})" for p in info.parameters()]
        line = " " * 23 + "params:"
        for k, item in enumerate(items):
            piece = f" {item}" + ("," if k < len(items) - 1 else "")
            if len(line) + len(piece) > 100 and not line.endswith(":"):
                print(line)
                line = " " * 30
            line += piece
        if items:
            print(line)
    if current is not None:
        print(
            "\nSet parameters in a spec: name:key=value,key=value "
            "(e.g. prefix_affinity:cache_threshold=0.5); routers also get --seed."
        )
    return 0
