"""Dataset validation and conversion of dataset rows to :class:`~verity.types.Example`.

A dataset has either ``question`` (a string, wrapped with the system prompt and few-shot
messages) or ``prompt`` (chat messages), plus optional ``answer`` (str), ``info`` (dict or
JSON string) and ``task`` (str). Problems are reported as one line naming column and row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from verity.errors import DatasetError
from verity.types import Example, Message


def _check_messages(value: Any, where: str) -> tuple[Message, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise DatasetError(f"{where}: expected a non-empty list of chat messages, got {type(value).__name__}")
    out = []
    for j, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DatasetError(f"{where}, message {j}: expected {{'role': str, 'content': str}}, got {m!r:.80}")
        out.append({"role": m["role"], "content": m["content"]})
    return tuple(out)


def _parse_info(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: 'info' is not valid JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: 'info' must be a dict or a JSON object string, got {type(value).__name__}")
    return value


def examples_from_dataset(
    dataset: Any,
    name: str,
    system_prompt: str | None = None,
    few_shot: Sequence[Message] | None = None,
    limit: int = -1,
) -> list[Example]:
    """Validate ``dataset`` (a ``datasets.Dataset`` or a list of dicts) and build examples.

    Raises :class:`DatasetError` naming the split, column and row of the first problem.
    """
    cols = list(getattr(dataset, "column_names", None) or (dataset[0].keys() if len(dataset) else []))
    if "question" not in cols and "prompt" not in cols:
        raise DatasetError(f"dataset '{name}': missing column 'question' (or 'prompt'); columns are {cols}")
    n = len(dataset) if limit is None or limit < 0 else min(limit, len(dataset))
    rows = dataset.select(range(n)) if hasattr(dataset, "select") else dataset[:n]
    head: list[Message] = []
    if system_prompt:
        head.append({"role": "system", "content": system_prompt})
    head.extend(_check_messages(list(few_shot), "few_shot") if few_shot else [])
    out: list[Example] = []
    for i, row in enumerate(rows):
        where = f"dataset '{name}', row {i}"
        if "prompt" in cols and row.get("prompt") is not None:
            prompt = _check_messages(row["prompt"], f"{where}, column 'prompt'")
            if system_prompt and prompt[0]["role"] != "system":
                prompt = (head[0], *prompt)
        else:
            q = row.get("question")
            if not isinstance(q, str):
                raise DatasetError(f"{where}, column 'question': expected str, got {type(q).__name__}")
            prompt = (*head, {"role": "user", "content": q})
        answer = row.get("answer", "")
        if answer is None:
            answer = ""
        if not isinstance(answer, str):
            raise DatasetError(f"{where}, column 'answer': expected str, got {type(answer).__name__}")
        task = row.get("task") or "default"
        if not isinstance(task, str):
            raise DatasetError(f"{where}, column 'task': expected str, got {type(task).__name__}")
        info = _parse_info(row.get("info"), f"{where}, column 'info'")
        out.append(Example(id=i, prompt=prompt, answer=answer, info=info, task=task))
    return out
