"""The base :class:`Parser` (verifiers 0.1.x semantics): ``parse`` applies ``extract_fn``,
``parse_answer`` parses the last assistant message, the format reward is always 1.0."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from verity.types import Message


def _identity(text: str) -> str:
    return text


class Parser:
    """Extracts the answer from a completion. The base parser returns ``extract_fn(text)``."""

    def __init__(self, extract_fn: Callable[[str], Any] = _identity):
        self.logger = logging.getLogger(f"verity.parsers.{type(self).__name__}")
        self.extract_fn = extract_fn

    def parse(self, text: str) -> Any:
        return self.extract_fn(text)

    def _messages_with_role(self, completion: Sequence[Message], role: str) -> list[Message]:
        # As in verifiers, a plain-text completion is not a message list: iterating it raises TypeError,
        # so a format reward scores 0 in completion mode (verity's rubric records why).
        return [m for m in completion if m["role"] == role]

    def get_assistant_messages(self, completion: Sequence[Message]) -> list[Message]:
        return self._messages_with_role(completion, "assistant")

    def get_system_messages(self, completion: Sequence[Message]) -> list[Message]:
        return self._messages_with_role(completion, "system")

    def get_user_messages(self, completion: Sequence[Message]) -> list[Message]:
        return self._messages_with_role(completion, "user")

    def get_tool_messages(self, completion: Sequence[Message]) -> list[Message]:
        return self._messages_with_role(completion, "tool")

    def parse_answer(self, completion: Sequence[Message] | str) -> Any:
        """``parse`` of a string completion, or of the last assistant message's content.

        As in verifiers, a message list without an assistant message raises ``IndexError``
        (inside a :class:`~verity.rubrics.Rubric` that is recorded as a reward error, scored 0).
        """
        if isinstance(completion, str):
            return self.parse(completion)
        return self.parse(str(self.get_assistant_messages(completion)[-1].get("content", "")))

    def get_format_reward_func(self) -> Callable[..., float]:
        """The format reward function (:meth:`format_reward_func`, bound to this parser: it pickles with
        the environment, which parallel rollout workers need)."""
        return self.format_reward_func

    def format_reward_func(self, completion: Any, **kwargs: Any) -> float:
        """Always 1.0: the base parser accepts any format."""
        return 1.0
