"""``agentsim policies``: list the registered policies."""

from __future__ import annotations

import argparse
from typing import Any

from policies.registry import KINDS, list_policies


def register(sub: Any) -> None:
    p = sub.add_parser("policies", help="list the registered scheduling policies")
    p.add_argument("--kind", choices=KINDS, help="only policies of this kind")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    current = None
    for info in list_policies(args.kind):
        if info.kind != current:
            current = info.kind
            print(f"{current}:")
        print(f"  {info.name:<20} {info.description}")
    return 0
