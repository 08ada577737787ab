"""SFT data: load prompt/completion or chat ``messages`` rows, tokenize with the chat template,
mask everything but assistant tokens, and build (optionally packed) batches.

Each conversation is rendered once with the tokenizer's chat template (and the template
arguments attached to it); the loss mask covers exactly the tokens of assistant turns (what the
model generates after the generation prompt, through the end-of-turn token) and nothing of
system/user/tool turns: from the template's ``{% generation %}`` blocks when it has them, else
from a checked render diff (:func:`render_diff_mask`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from verity.errors import DatasetError
from verity.types import Batch, Message


@dataclass(frozen=True)
class SFTExample:
    """One tokenised conversation: ids and a 0/1 mask of the tokens that get loss."""

    input_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]


def _messages_of(row: dict[str, Any], where: str) -> list[Message]:
    if "messages" in row and row["messages"] is not None:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            raise DatasetError(f"{where}, column 'messages': expected a list of {{'role', 'content'}} dicts")
        if not any(m["role"] == "assistant" for m in msgs):
            raise DatasetError(f"{where}, column 'messages': no assistant message to learn from")
        return [Message(role=m["role"], content=m["content"]) for m in msgs]
    if "prompt" in row and "completion" in row:
        p, c = row["prompt"], row["completion"]
        prompt: list[Message] = [Message(role="user", content=p)] if isinstance(p, str) else p
        comp: list[Message] = [Message(role="assistant", content=c)] if isinstance(c, str) else c
        if not isinstance(prompt, list) or not isinstance(comp, list):
            raise DatasetError(f"{where}: 'prompt'/'completion' must be strings or message lists")
        return [*prompt, *comp]
    raise DatasetError(f"{where}: needs a 'messages' column or 'prompt' and 'completion' columns (has {sorted(row)})")


def read_rows(source: str) -> list[dict[str, Any]]:
    """The rows of a JSONL/Parquet file or a hub dataset id (a JSONL line that is not JSON: an error naming it)."""
    p = Path(source)
    if p.suffix == ".jsonl" or p.suffix == ".json":
        if not p.is_file():
            raise DatasetError(f"{source}: file not found")
        rows = []
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DatasetError(f"{source}, line {i + 1}: invalid JSON ({e.msg})") from None
            if not isinstance(rows[-1], dict):
                raise DatasetError(f"{source}, line {i + 1}: expected a JSON object, got {type(rows[-1]).__name__}")
    else:
        from datasets import load_dataset

        try:
            ds = load_dataset("parquet", data_files=source, split="train") if p.suffix == ".parquet" \
                else load_dataset(source, split="train")
        except Exception as e:
            raise DatasetError(f"{source}: cannot load dataset ({type(e).__name__}: {e})") from None
        rows = ds.to_list()
    if not rows:
        raise DatasetError(f"{source}: no rows")
    return rows


def load_sft_rows(source: str) -> list[list[Message]]:
    """Conversations from a JSONL/Parquet file or a hub dataset id."""
    return [_messages_of(r, f"{source}, row {i}") for i, r in enumerate(read_rows(source))]


def rows_from_env(env: Any) -> list[list[Message]]:
    """System prompt + question → the gold answer written in the parser's format."""
    parser = env.parser
    field = getattr(parser, "answer_field", None)
    out = []
    for ex in env.get_examples("train"):
        gold = parser.format(**{field: ex.answer}) if field and hasattr(parser, "format") else ex.answer
        out.append([*ex.prompt, {"role": "assistant", "content": gold}])
    return out


def tokenize_conversation(tok: Any, msgs: Sequence[Message], max_length: int, where: str = "conversation",
                          ) -> SFTExample:
    """Token ids + assistant-only loss mask (truncated to ``max_length``).

    The mask comes from the template's own ``{% generation %}`` blocks when it has them, else
    from :func:`render_diff_mask`.
    """
    from verity.models.chat import has_generation_blocks, render_assistant_mask

    if has_generation_blocks(tok):
        ids, mask = render_assistant_mask(tok, msgs)
    else:
        ids, mask = render_diff_mask(tok, msgs, where)
    return SFTExample(tuple(ids[:max_length]), tuple(mask[:max_length]))


def render_diff_mask(tok: Any, msgs: Sequence[Message], where: str = "conversation") -> tuple[list[int], list[int]]:
    """(ids, mask) of the whole conversation rendered once, the mask read by diffing renders.

    Assistant message ``i`` starts where the full rendering stops agreeing with the rendering of
    ``msgs[:i]`` with the generation prompt opened (what the model would be conditioned on), and
    ends at the template's end-of-turn token after it (included). Templates may rewrite earlier
    turns (Qwen3 adds an empty think block only to the last assistant turn), so no rendering is
    assumed to be a prefix of another. Each span is checked: it holds the message's visible text,
    ends at the end-of-turn token, and contains no other special token (a role header of another
    turn); otherwise a :class:`DatasetError` naming the conversation and message.
    """
    from verity.models.chat import end_of_turn_ids, render

    full = render(tok, msgs, add_generation_prompt=False)
    eot = set(end_of_turn_ids(tok))
    special = set(getattr(tok, "all_special_ids", None) or []) | eot
    mask = [0] * len(full)
    done = 0
    for i, m in enumerate(msgs):
        if m.get("role") != "assistant":
            continue
        head = render(tok, msgs[:i], add_generation_prompt=True) if i else []
        start = _common_prefix(full, head)
        end = next((j + 1 for j in range(start, len(full)) if full[j] in eot), None) if eot else \
            _common_prefix(full, render(tok, msgs[: i + 1], add_generation_prompt=False))
        problem = _span_problem(tok, full, start, end, done, str(m.get("content") or ""), special, eot)
        if problem:
            raise DatasetError(f"{where}, message {i}: cannot locate the assistant tokens under this chat template "
                               f"({problem}); use a template with {{% generation %}} blocks")
        assert end is not None  # _span_problem rejects a missing end
        mask[start:end] = [1] * (end - start)
        done = end
    return full, mask


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


def _span_problem(tok: Any, full: list[int], start: int, end: int | None, done: int, content: str,
                  special: set[int], eot: set[int]) -> str | None:
    """Why ``full[start:end]`` is not the assistant message with visible text ``content`` (None if it is)."""
    if end is None:
        return "no end-of-turn token after it"
    if start < done or end <= start:
        return "its tokens overlap the previous assistant message"
    inner = full[start:end - 1] if full[end - 1] in eot else full[start:end]
    if any(t in special for t in inner):
        return f"it would include the special token {tok.decode([next(t for t in inner if t in special)])!r}"
    visible = content.split("</think>")[-1].strip()
    if visible and visible not in tok.decode(full[start:end]):
        return "its rendered tokens do not hold the message text"
    return None


def pad_batch(examples: Sequence[SFTExample], pad_id: int) -> Batch:
    """Prompt-left / completion-right layout (as in RL) so logits are computed only where loss is.

    Row b = ``[pad… prefix | rest …pad]`` with the split at the first loss token.
    """
    from verity.train.batching import pack_rows

    splits = [ex.loss_mask.index(1) if 1 in ex.loss_mask else len(ex.input_ids) for ex in examples]
    return pack_rows([ex.input_ids[:s] for ex, s in zip(examples, splits, strict=False)],
                     [ex.input_ids[s:] for ex, s in zip(examples, splits, strict=False)],
                     [[float(m) for m in ex.loss_mask[s:]] for ex, s in zip(examples, splits, strict=False)],
                     [()] * len(examples), [0.0] * len(examples), pad_id)


def pack(examples: Sequence[SFTExample], max_length: int) -> list[list[SFTExample]]:
    """Greedy first-fit packing of examples into rows of at most ``max_length`` tokens."""
    rows: list[list[SFTExample]] = []
    room: list[int] = []
    for ex in sorted(examples, key=lambda e: -len(e.input_ids)):
        n = len(ex.input_ids)
        for i, r in enumerate(room):
            if n <= r:
                rows[i].append(ex)
                room[i] -= n
                break
        else:
            rows.append([ex])
            room.append(max_length - n)
    return rows


def packed_tensors(rows: Sequence[Sequence[SFTExample]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids/labels-mask/position_ids [B, L] and a block-diagonal causal mask [B, 1, L, L].

    ``position_ids`` restart at 0 for each example and the 4-D mask stops attention from
    crossing example boundaries, so a packed example sees exactly what it would alone.
    """
    L = max(sum(len(e.input_ids) for e in r) for r in rows)
    B = len(rows)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros((B, L))
    pos = torch.zeros((B, L), dtype=torch.long)
    seg = torch.full((B, L), -1, dtype=torch.long)
    for b, r in enumerate(rows):
        o = 0
        for j, e in enumerate(r):
            n = len(e.input_ids)
            ids[b, o:o + n] = torch.tensor(e.input_ids)
            mask[b, o:o + n] = torch.tensor(e.loss_mask, dtype=torch.float32)
            pos[b, o:o + n] = torch.arange(n)
            seg[b, o:o + n] = j
            o += n
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool))
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)
    allowed = (same & causal)[:, None]  # [B, 1, L, L]
    allowed |= torch.eye(L, dtype=torch.bool)[None, None]  # padding rows attend to themselves (no NaN)
    return {"input_ids": ids, "loss_mask": mask, "position_ids": pos, "attention_mask": allowed}
