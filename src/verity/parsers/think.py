"""Parser for reasoning models that think inside ``<think>…</think>`` before answering."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from verity.parsers.base import Parser
from verity.types import Message


class ThinkParser(Parser):
    """The answer is the text after ``</think>``; ``extract_fn`` may post-process it."""

    def __init__(self, extract_fn: Callable[[str], str] | None = None):
        self.extract_fn = extract_fn or (lambda s: s)

    def parse(self, text: str) -> str | None:
        if "</think>" in text:
            text = text.rsplit("</think>", 1)[1]
        elif "<think>" in text:
            return None  # still thinking: no answer yet
        return self.extract_fn(text.strip())

    def parse_answer(self, completion: Sequence[Message] | str) -> str | None:
        msgs = self.get_assistant_messages(completion)
        return self.parse(msgs[-1].get("content") or "") if msgs else None

    def get_format_reward_func(self) -> Callable[..., float]:
        """1.0 when every assistant message has one closed think block followed by an answer."""

        def format_reward(completion: Any) -> float:
            msgs = self.get_assistant_messages(completion)
            if not msgs:
                return 0.0
            ok = 0
            for m in msgs:
                t = (m.get("content") or "").strip()
                if t.count("<think>") == 1 and t.count("</think>") == 1 and t.startswith("<think>"):
                    ok += bool(t.split("</think>", 1)[1].strip())
            return ok / len(msgs)

        return format_reward
