"""XML-tag parser (``<think>…</think><answer>…</answer>``) with the semantics of verifiers 0.1.x.

A field is a tag name or a tuple of alternative tag names (the first is canonical: it is
the tag :meth:`XMLParser.format` writes). :meth:`XMLParser.parse` returns one attribute per
tag name, alternatives included; whitespace around a field's content is never part of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from verity.errors import ConfigTypeError, ConfigValueError
from verity.parsers.base import Parser, _identity
from verity.parsers.think import strip_leading_think
from verity.types import Message


def _check_fields(fields: Sequence[str | tuple[str, ...]]) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    for f in fields:
        if isinstance(f, str):
            alts = [f]
        elif isinstance(f, tuple):
            if not f:
                raise ConfigValueError("XMLParser: a field tuple cannot be empty")
            if not all(isinstance(a, str) for a in f):
                raise ConfigTypeError(f"XMLParser: field {f!r}: all alternatives in a tuple must be strings")
            alts = list(f)
        else:
            raise ConfigTypeError(f"XMLParser: field {f!r}: each field must be a string or a tuple of strings")
        if alts[0] in seen:
            raise ConfigValueError(f"XMLParser: duplicate field name {alts[0]!r}")
        seen.add(alts[0])
        out.append((alts[0], alts))
    return out


class XMLParser(Parser):
    """Parses XML-tagged fields out of a completion (verifiers 0.1.x ``XMLParser``).

    ``XMLParser(["reasoning", ("code", "answer")], answer_field="answer")``: ``parse`` exposes
    ``.reasoning``, ``.code`` and ``.answer``. ``extract_fn`` is accepted and stored, and, as in
    verifiers, not applied by ``parse``.

    ``strip_think=True`` (a verity extension; verifiers has no such option and matches tags
    anywhere, also inside a reasoning model's ``<think>`` block) parses and format-scores the text
    after a leading ``<think>…</think>`` block, so tags a model writes while thinking are not
    taken as its answer (:func:`verity.parsers.think.strip_leading_think`). verity's own
    environments use it.
    """

    def __init__(self, fields: Sequence[str | tuple[str, ...]], answer_field: str = "answer",
                 extract_fn: Callable[[str], Any] = _identity, *, strip_think: bool = False):
        super().__init__(extract_fn=extract_fn)
        self._fields = _check_fields(fields)
        if strip_think and any("think" in alts for _, alts in self._fields):
            raise ConfigValueError("XMLParser: strip_think=True removes the <think> block, so 'think' cannot "
                                   "also be a field")
        self.strip_think = strip_think
        self.answer_field = answer_field
        # Tag names are matched literally (verity escapes them; verifiers does not, see docs/verifiers.md).
        self._patterns = {
            alt: re.compile(rf"<{re.escape(alt)}>\s*(.*?)\s*</{re.escape(alt)}>", re.DOTALL)
            for _, alts in self._fields for alt in alts
        }

    def get_fields(self) -> list[str]:
        """The canonical field names, in order."""
        return [canonical for canonical, _ in self._fields]

    def get_format_str(self) -> str:
        """The expected format, for system prompts: ``<think>\\n...\\n</think>``, alternatives as ``[ a | b ]``."""
        parts = []
        for canonical, alts in self._fields:
            tag = f"[ {' | '.join(alts)} ]" if len(alts) > 1 else canonical
            parts.append(f"<{tag}>\n...\n</{tag}>")
        return "\n".join(parts)

    def _match(self, alt: str, text: str, last: bool) -> re.Match[str] | None:
        pattern = self._patterns[alt]
        if not last:
            return pattern.search(text)
        m = None
        for m in pattern.finditer(text):  # noqa: B007 - keep the last match
            pass
        return m

    def parse(self, text: str, strip: bool = True, last: bool = False) -> SimpleNamespace:
        """One attribute per tag name (alternatives included): the content of its first
        (``last=True``: last) occurrence, or None. The match already excludes the whitespace
        next to the tags, so ``strip`` only matters for whitespace the regex cannot see."""
        if self.strip_think:
            text = strip_leading_think(text)
        out: dict[str, str | None] = {}
        for _, alts in self._fields:
            for alt in alts:
                m = self._match(alt, text, last)
                out[alt] = None if m is None else (m.group(1).strip() if strip else m.group(1))
        return SimpleNamespace(**out)

    def parse_answer(self, completion: Sequence[Message] | str) -> str | None:
        """The answer field: for a string, its last occurrence; for messages, the first occurrence
        in the last assistant message that has one. None when absent."""
        if isinstance(completion, str):
            return getattr(self.parse(completion, last=True), self.answer_field, None)
        for msg in reversed(self.get_assistant_messages(completion)):
            value = getattr(self.parse(str(msg.get("content"))), self.answer_field, None)
            if value is not None:
                return value
        return None

    def format(self, **kwargs: Any) -> str:
        """Render every field (by canonical name or any alternative) under its canonical tag.

        Raises ``ValueError`` naming the field when one is missing, as verifiers does."""
        parts = []
        for canonical, alts in self._fields:
            # the canonical name wins when given (even as None), else the first alternative given
            value = kwargs[canonical] if canonical in kwargs else next((kwargs[a] for a in alts if a in kwargs), None)
            if value is None:
                raise ValueError(f"Missing value for field '{canonical}' (allowed: {alts})")
            parts.append(f"<{canonical}>\n{value}\n</{canonical}>")
        return "\n".join(parts)

    def format_score(self, text: str) -> float:
        """Format score of one message, in [0, 1] (verifiers' per-message format reward):

        0.4 × fraction of fields whose tag appears (only if at least one field parses)
        + 0.2 (verifiers' spacing check: it compares two parses made with the same
        whitespace-trimming pattern, so it always passes) + 0.2 if the stripped message
        starts with a first-field tag + 0.2 if it ends with a last-field closing tag.
        """
        if self.strip_think:
            text = strip_leading_think(text)
        parsed = self.parse(text)
        has_any_field = False
        present: set[int] = set()
        for i, (_, alts) in enumerate(self._fields):
            for alt in alts:
                if getattr(parsed, alt) is not None:
                    has_any_field = True
                    present.add(i)
                elif f"<{alt}>" in text or f"</{alt}>" in text:
                    present.add(i)
        score = 0.0
        if has_any_field:
            score += 0.4 * (len(present) / len(self._fields))
        score += 0.2
        stripped = text.strip()
        if any(stripped.startswith(f"<{alt}>") for alt in self._fields[0][1]):
            score += 0.2
        if any(stripped.endswith(f"</{alt}>") for alt in self._fields[-1][1]):
            score += 0.2
        return score

    def format_reward_func(self, completion: Any, **kwargs: Any) -> float:
        """The mean :meth:`format_score` of the assistant messages (0.0 if none)."""
        msgs = self.get_assistant_messages(completion)
        if not msgs:
            return 0.0
        scores = [self.format_score(str(m.get("content"))) for m in msgs]
        return sum(scores) / len(scores)
