"""Module-level reward functions that take the rubric's parser by injection, so that environments
built from them pickle (closures over a parser do not)."""

from __future__ import annotations

from typing import Any


def format_reward(completion: Any, parser: Any) -> float:
    """The parser's own format reward (e.g. :meth:`XMLParser.get_format_reward_func`)."""
    return float(parser.get_format_reward_func()(completion))
