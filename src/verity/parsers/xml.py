"""XML-tag parser (``<think>…</think><answer>…</answer>``), with the verifiers-style format reward."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from verity.errors import ConfigError
from verity.parsers.base import Parser
from verity.types import Message


class XMLParser(Parser):
    """Parses XML-tagged fields out of a completion.

    ``fields`` lists the expected tags in order; an entry may be a tuple of alternative tag
    names, the first being the canonical attribute name (``("code", "python")`` is read from
    either ``<code>`` or ``<python>`` and exposed as ``.code``).
    """

    def __init__(self, fields: Sequence[str | tuple[str, ...]], answer_field: str = "answer"):
        if not fields:
            raise ConfigError("XMLParser needs at least one field")
        self._fields: list[tuple[str, tuple[str, ...]]] = []
        for f in fields:
            alts = (f,) if isinstance(f, str) else tuple(f)
            if not alts or not all(isinstance(a, str) and a for a in alts):
                raise ConfigError(f"XMLParser: bad field {f!r}")
            self._fields.append((alts[0], alts))
        self.answer_field = answer_field
        if answer_field not in {c for c, _ in self._fields}:
            raise ConfigError(f"XMLParser: answer_field {answer_field!r} is not one of the fields")
        self._patterns = {
            alt: re.compile(rf"<{re.escape(alt)}>(.*?)</{re.escape(alt)}>", re.DOTALL)
            for _, alts in self._fields
            for alt in alts
        }

    @property
    def fields(self) -> list[str]:
        return [c for c, _ in self._fields]

    def _find(self, text: str, alts: tuple[str, ...]) -> str | None:
        for alt in alts:
            m = self._patterns[alt].search(text)
            if m:
                return m.group(1)
        return None

    def parse(self, text: str, strip: bool = True) -> SimpleNamespace:
        """One attribute per canonical field: its content, or None when the tag is absent."""
        out = {}
        for canonical, alts in self._fields:
            v = self._find(text, alts)
            out[canonical] = v.strip() if (v is not None and strip) else v
        return SimpleNamespace(**out)

    def parse_answer(self, completion: Sequence[Message] | str) -> str | None:
        """The answer field from the last assistant message that has it (None if none does)."""
        for msg in reversed(self.get_assistant_messages(completion)):
            v = getattr(self.parse(msg.get("content") or ""), self.answer_field)
            if v is not None:
                return v
        return None

    def format(self, **values: str) -> str:
        """Render fields as the model is expected to write them (used to build SFT targets)."""
        parts = []
        for canonical, alts in self._fields:
            if canonical in values:
                parts.append(f"<{alts[0]}>\n{values[canonical]}\n</{alts[0]}>")
        return "\n".join(parts)

    def format_score(self, text: str) -> float:
        """Format score of one message, in [0, 1]:

        0.4 × fraction of fields present + 0.2 if every present field's content parses
        without stripping (no whitespace padding beyond one newline inside the tags)
        + 0.2 if the message starts with the first field's tag + 0.2 if it ends with the
        last field's closing tag.
        """
        parsed_raw = self.parse(text, strip=False)
        present = [c for c, _ in self._fields if getattr(parsed_raw, c) is not None]
        score = 0.4 * len(present) / len(self._fields)
        if present and all(_clean(getattr(parsed_raw, c)) for c in present):
            score += 0.2
        stripped = text.strip()
        first_alts, last_alts = self._fields[0][1], self._fields[-1][1]
        if any(stripped.startswith(f"<{a}>") for a in first_alts):
            score += 0.2
        if any(stripped.endswith(f"</{a}>") for a in last_alts):
            score += 0.2
        return round(score, 10)

    def get_format_reward_func(self) -> Callable[..., float]:
        """Reward function averaging :meth:`format_score` over the assistant messages."""

        def format_reward(completion: Any) -> float:
            msgs = self.get_assistant_messages(completion)
            if not msgs:
                return 0.0
            return sum(self.format_score(m.get("content") or "") for m in msgs) / len(msgs)

        return format_reward


def _clean(content: str) -> bool:
    """True when content has no whitespace padding except one newline after/before the tags."""
    inner = content[1:] if content.startswith("\n") else content
    inner = inner[:-1] if inner.endswith("\n") else inner
    return inner == inner.strip() and inner != ""
