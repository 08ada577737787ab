"""Token bookkeeping for multi-turn rollouts: the exact sequence the model saw, turn after turn.

A multi-turn rollout on a local model never re-tokenises earlier turns. Its token sequence is
built by appending: the first prompt rendered once, then for each turn the sampled ids
(trained on, mask 1) and the *bridge* — the tokens the chat template puts after an assistant
message, the environment's messages and the next generation prompt (mask 0). The bridge is
read off the template by rendering the environment messages after a fixed anchor assistant
message and cutting at the end of its content, so templates that rewrite earlier turns
(Qwen3 drops ``<think>`` blocks of earlier assistant messages) cannot change what was sampled.

:func:`audit_rollout` is the check the other way round: re-render the conversation at every
turn boundary and compare with the ids the model saw. A mismatch means a trainer that
re-renders conversations would train on tokens the model never sampled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from verity.models.chat import render
from verity.types import Rollout, TurnAudit

SENTINEL = "verity-turn-boundary-7f3a9c"
_ANCHOR = ({"role": "user", "content": "."}, {"role": "assistant", "content": SENTINEL})


def bridge_ids(tokenizer: Any, env_messages: Sequence[Mapping[str, Any]], sampled: Sequence[int],
               tools: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
    """Tokens between a turn's sampled ids and the next turn's first sampled token.

    That is: whatever closes the assistant message in the chat template (its end-of-message
    token unless the model sampled it as its last token), the environment messages, and the
    opened generation prompt.
    """
    text = render(tokenizer, [*_ANCHOR, *env_messages], tools, add_generation_prompt=True, tokenize=False)
    cut = text.rfind(SENTINEL)
    if cut < 0:
        raise ValueError("the chat template does not render assistant message content verbatim")
    ids = list(tokenizer(text[cut + len(SENTINEL):], add_special_tokens=False)["input_ids"])
    if sampled and ids and ids[0] == sampled[-1] and ids[0] in _special_ids(tokenizer):
        ids = ids[1:]  # the model sampled the end-of-message token itself
    return ids


def _special_ids(tokenizer: Any) -> set[int]:
    return set(getattr(tokenizer, "all_special_ids", None) or [])


def context_ids(rollout: Rollout, turn: int) -> list[int]:
    """The token ids the model was conditioned on at the start of ``turn``."""
    return list(rollout.prompt_ids) + list(rollout.completion_ids[:rollout.turns[turn].start])


def audit_rollout(tokenizer: Any, rollout: Rollout, tools: Sequence[Mapping[str, Any]] | None = None,
                  ) -> list[TurnAudit]:
    """For every turn: does re-rendering ``prompt + completion[:that turn]`` (generation prompt
    opened) give exactly the ids the model saw? Needs a rollout from a local model (token ids)."""
    if not rollout.turns or not rollout.prompt_ids:
        raise ValueError("audit needs a rollout with token ids and turn records (a local-model rollout)")
    prompt, completion = rollout.prompt, rollout.completion
    if isinstance(prompt, str) or isinstance(completion, str):
        raise ValueError("audit needs a chat rollout (a completion-mode rollout has no chat template to audit)")
    out = []
    for t in rollout.turns:
        msgs = [*prompt, *completion[:t.message_index]]
        rendered = render(tokenizer, msgs, tools, add_generation_prompt=True)
        seen = context_ids(rollout, t.index)
        diff = next((i for i, (a, b) in enumerate(zip(seen, rendered, strict=False)) if a != b), None)
        if diff is None and len(seen) != len(rendered):
            diff = min(len(seen), len(rendered))
        out.append(TurnAudit(turn=t.index, matches=diff is None, sampled_len=len(seen),
                             rendered_len=len(rendered), first_diff=diff))
    return out
