"""The base :class:`Parser`: identity parsing and helpers shared by all parsers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from verity.types import Message


class Parser:
    """Extracts the answer from a completion. The base parser returns the text unchanged."""

    def parse(self, text: str) -> Any:
        return text

    def get_assistant_messages(self, completion: Sequence[Message] | str) -> list[Message]:
        """Assistant messages of a completion (a plain string counts as one)."""
        if isinstance(completion, str):
            return [{"role": "assistant", "content": completion}]
        return [m for m in completion if m.get("role") == "assistant"]

    def parse_answer(self, completion: Sequence[Message] | str) -> str | None:
        """The answer in a completion: here, the last assistant message's text."""
        msgs = self.get_assistant_messages(completion)
        return (msgs[-1].get("content") or "") if msgs else None

    def get_format_reward_func(self) -> Callable[..., float]:
        """A reward function that is 1.0 for any non-empty completion."""

        def format_reward(completion: Any) -> float:
            return 1.0 if self.parse_answer(completion) else 0.0

        return format_reward
