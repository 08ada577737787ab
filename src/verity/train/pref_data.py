"""Preference data: load and check (prompt, chosen, rejected) pairs or KTO (prompt, completion, label)
rows, and tokenise them with the chat template into the learner's prompt-left/completion-right rows.

Strings are one message each (a string prompt is a user turn, a string completion an assistant
turn), as in ``verity sft``; lists are chat messages. Every row is checked before any compute:
a missing field, a wrong type, an empty text or chosen == rejected is an error naming the file,
the row and the field.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from verity.errors import ConfigError, DatasetError
from verity.train.sft_data import SFTExample, read_rows, tokenize_conversation
from verity.types import LabelledCompletion, Message, PreferencePair

Row = PreferencePair | LabelledCompletion
_TRUE = ("true", "1", "yes", "desirable", "good")
_FALSE = ("false", "0", "no", "undesirable", "bad")


def _messages(row: dict[str, Any], field: str, role: str, where: str) -> tuple[Message, ...]:
    if field not in row or row[field] is None:
        raise DatasetError(f"{where}, field '{field}': missing (has {', '.join(sorted(row)) or 'no fields'})")
    v = row[field]
    if isinstance(v, str):
        if not v.strip():
            raise DatasetError(f"{where}, field '{field}': empty text")
        return (Message(role=role, content=v),)
    if not isinstance(v, list) or not v or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in v):
        raise DatasetError(f"{where}, field '{field}': expected a string or a non-empty list of "
                           f"{{'role': str, 'content': str}} messages, got {_describe(v)}")
    if not any(m["content"].strip() for m in v):
        raise DatasetError(f"{where}, field '{field}': empty text")
    if role == "assistant" and not any(m["role"] == "assistant" for m in v):
        raise DatasetError(f"{where}, field '{field}': no assistant message")
    return tuple(Message(role=m["role"], content=m["content"]) for m in v)


def _describe(v: Any) -> str:
    return f"an empty {type(v).__name__}" if isinstance(v, (list, dict, str)) and not v else type(v).__name__


def _label(v: Any, where: str) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in _TRUE + _FALSE:
        return v.strip().lower() in _TRUE
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise DatasetError(f"{where}, field 'label': expected true/false (desirable or not), got {v!r}")


def parse_pair(row: dict[str, Any], where: str) -> PreferencePair:
    prompt = _messages(row, "prompt", "user", where)
    chosen = _messages(row, "chosen", "assistant", where)
    rejected = _messages(row, "rejected", "assistant", where)
    if chosen == rejected:
        raise DatasetError(f"{where}, field 'rejected': identical to 'chosen' (no preference to learn)")
    return PreferencePair(prompt, chosen, rejected)


def parse_kto(row: dict[str, Any], where: str) -> LabelledCompletion:
    if "label" not in row or row["label"] is None:
        raise DatasetError(f"{where}, field 'label': missing (has {', '.join(sorted(row))})")
    return LabelledCompletion(_messages(row, "prompt", "user", where), _messages(row, "completion", "assistant", where),
                              _label(row["label"], where))


def load_preferences(source: str, kto: bool = False) -> list[Row]:
    """Every row of ``source`` checked and parsed: pairs, or (``kto``) labelled completions."""
    if not kto:
        return list(load_pairs(source))
    return [parse_kto(r, f"{source}, row {i}") for i, r in enumerate(read_rows(source))]


def load_pairs(source: str) -> list[PreferencePair]:
    """Every row of ``source`` checked and parsed as a (prompt, chosen, rejected) pair."""
    return [parse_pair(r, f"{source}, row {i}") for i, r in enumerate(read_rows(source))]


@dataclass(frozen=True)
class TokenizedRow:
    """A preference row as token ids: ``chosen``/``rejected`` for a pair; for KTO, ``chosen`` is the
    completion, ``rejected`` the prompt with another row's completion (the KL estimate's sample)."""

    chosen: SFTExample
    rejected: SFTExample
    desirable: bool = True


def tokenize_rows(tok: Any, rows: Sequence[Row], max_length: int) -> tuple[list[TokenizedRow], int]:
    """Token rows in the order of ``rows``, and how many were dropped because ``max_length`` left no
    completion token. KTO rows pair row i's prompt with row (i + 1)'s completion for the KL estimate
    (Ethayarajh et al. 2024 sec. 4.1: mismatched pairs from the data)."""
    out: list[TokenizedRow] = []
    dropped = 0
    for i, r in enumerate(rows):
        if isinstance(r, PreferencePair):
            a = tokenize_conversation(tok, [*r.prompt, *r.chosen], max_length)
            b = tokenize_conversation(tok, [*r.prompt, *r.rejected], max_length)
            desirable = True
        else:
            other = rows[(i + 1) % len(rows)]
            assert isinstance(other, LabelledCompletion)
            a = tokenize_conversation(tok, [*r.prompt, *r.completion], max_length)
            b = tokenize_conversation(tok, [*r.prompt, *other.completion], max_length)
            desirable = r.desirable
        if 1 in a.loss_mask and 1 in b.loss_mask:
            out.append(TokenizedRow(a, b, desirable))
        else:
            dropped += 1
    return out, dropped


def tokenize_splits(tok: Any, rows: Sequence[Row], eval_rows: Sequence[Row], max_length: int
                    ) -> tuple[list[TokenizedRow], list[TokenizedRow]]:
    """Training and held-out rows tokenised (:func:`tokenize_rows`); a note on stderr counts the rows
    dropped by ``max_length``, and none left to train on is an error."""
    units, dropped = tokenize_rows(tok, rows, max_length)
    eval_units, eval_dropped = tokenize_rows(tok, eval_rows, max_length)
    if dropped or eval_dropped:
        print(f"note: {dropped} training and {eval_dropped} held-out rows dropped: no completion token within "
              f"--max-length {max_length}", file=sys.stderr)
    if not units:
        raise ConfigError(f"no preference row has a completion token within --max-length {max_length}")
    return units, eval_units
