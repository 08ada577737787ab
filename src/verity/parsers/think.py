"""Parser for reasoning models that think inside ``<think>…</think>`` before answering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from verity.parsers.base import Parser


def follows_think_format(text: str) -> float:
    """1.0 when ``text`` starts with its only ``<think>`` block, closes it once and has text after it."""
    ok = (text.strip().startswith("<think>") and text.count("<think>") == 1 and text.count("</think>") == 1
          and len(text.split("</think>")[-1]) > 0)
    return 1.0 if ok else 0.0


class ThinkParser(Parser):
    """The answer is the text after the last ``</think>`` (stripped), passed through ``extract_fn``.

    Without ``</think>`` the model has not finished thinking: the parsed text is ``""``
    (``extract_fn("")``), as in verifiers 0.1.x.
    """

    def parse(self, text: str) -> Any:
        text = text.split("</think>")[-1].strip() if "</think>" in text else ""
        return self.extract_fn(text.strip())

    def get_format_reward_func(self) -> Callable[..., float]:
        """Mean of :func:`follows_think_format` over the assistant messages.

        A completion without assistant messages raises ``ZeroDivisionError`` as in verifiers
        (a rubric records it and scores 0).
        """

        def format_reward_func(completion: Any, **kwargs: Any) -> float:
            messages = self.get_assistant_messages(completion)
            return sum(follows_think_format(m["content"]) for m in messages) / len(messages)

        return format_reward_func
