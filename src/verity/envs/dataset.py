"""Dataset validation and conversion of dataset rows to :class:`~verity.types.Example`.

A dataset has either ``question`` (a string, wrapped with the system prompt and few-shot
messages) or ``prompt`` (chat messages), plus optional ``answer`` (str), ``info`` (dict or
JSON string) and ``task`` (str). Problems are reported as one line naming column and row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
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


def _text_prompt(row: Any, where: str) -> str:
    col = "prompt" if row.get("prompt") is not None else "question"
    if not isinstance(row.get(col), str):
        raise DatasetError(f"{where}, column '{col}': a completion-mode prompt must be str, "
                           f"got {type(row.get(col)).__name__}")
    return row[col]


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
    message_type: str = "chat",
) -> list[Example]:
    """Validate ``dataset`` (a ``datasets.Dataset`` or a list of dicts) and build examples.

    With ``message_type="completion"`` the prompt is plain text: the ``prompt`` column (or
    ``question``) as a string. Raises :class:`DatasetError` naming the split, column and row
    of the first problem.
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
        prompt: tuple[Message, ...] | str
        if message_type == "completion":
            prompt = _text_prompt(row, where)
        elif "prompt" in cols and row.get("prompt") is not None:
            prompt = _check_messages(row["prompt"], f"{where}, column 'prompt'")
            if system_prompt and prompt[0].get("role") != "system":
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


class LazyRows:
    """A dataset whose rows are built one at a time, when read (``verity eval -n 100`` on a
    30,000-row generated set builds 100 rows).

    Supports what :func:`examples_from_dataset` reads (``len``, ``column_names``, ``select``,
    iteration, ``rows[i]``); anything else (``map``, ``filter``, ``rows[:5]``, ``rows["answer"]``,
    …) is answered by a ``datasets.Dataset`` of all rows, built on first such use.
    """

    def __init__(self, row: Callable[[int], dict[str, Any]], n: int, column_names: Sequence[str],
                 indices: Sequence[int] | None = None):
        self._row, self._n, self._idx = row, n, indices
        self.column_names = list(column_names)
        self._full: Any = None

    def __len__(self) -> int:
        return self._n if self._idx is None else len(self._idx)

    @property
    def num_rows(self) -> int:
        return len(self)

    def _at(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} out of range for a dataset of {n} rows")
        i %= n
        return self._row(i if self._idx is None else self._idx[i])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self._at(i) for i in range(len(self)))

    def select(self, indices: Any) -> LazyRows:
        """The rows at ``indices`` (still built lazily)."""
        base = range(self._n) if self._idx is None else self._idx
        return LazyRows(self._row, self._n, self.column_names, [base[i] for i in indices])

    def to_list(self) -> list[dict[str, Any]]:
        return list(self)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return self._at(key)
        return self.to_dataset()[key]

    def to_dataset(self) -> Any:
        """All rows as a ``datasets.Dataset`` (built once)."""
        if self._full is None:
            from datasets import Dataset

            self._full = Dataset.from_list(self.to_list())
        return self._full

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.to_dataset(), name)
