"""Parser for reasoning models that think inside ``<think>…</think>`` before answering."""

from __future__ import annotations

from typing import Any

from verity.parsers.base import Parser


def strip_leading_think(text: str) -> str:
    """``text`` without a leading ``<think>…</think>`` block (what a reasoning model writes before it answers).

    A text that opens ``<think>`` and never closes it is all thought: ``""``. A text holding a
    ``</think>`` with no ``<think>`` before it (the template opened the block in the prompt, as
    Qwen3-Thinking's does) loses everything up to that ``</think>``. Other texts are returned as is.
    """
    s = text.lstrip()
    end = s.find("</think>")
    if s.startswith("<think>"):
        return "" if end < 0 else s[end + len("</think>"):]
    if end >= 0 and "<think>" not in s[:end]:
        return s[end + len("</think>"):]
    return text


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

    def format_reward_func(self, completion: Any, **kwargs: Any) -> float:
        """Mean of :func:`follows_think_format` over the assistant messages.

        A completion without assistant messages raises ``ZeroDivisionError`` as in verifiers
        (a rubric records it and scores 0).
        """
        messages = self.get_assistant_messages(completion)
        # as in verifiers, a message without content raises KeyError (the rubric records it, scores 0)
        contents = [m["content"] for m in messages]  # pyright: ignore[reportTypedDictNotRequiredAccess]
        return sum(follows_think_format(c) for c in contents) / len(messages)
