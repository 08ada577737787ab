"""``verity envs``: list the environments that ``load_environment`` can find by id."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    sub.add_parser("envs", help="list available environments")


def run(args: Any, argv: list[str]) -> int:
    from verity.envs.registry import list_environments

    for name, where in list_environments().items():
        print(f"{name:24s} {where}")
    return 0
