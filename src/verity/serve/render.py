"""Prompt rendering and output parsing for ``verity serve``.

Chat requests go through the tokenizer's chat template; ``tools`` are passed to the template
when it knows about them, else described in a system message (Hermes / Qwen style). Model
output holding ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` is turned into
OpenAI ``tool_calls``. Streaming splits the finished text into word-sized SSE chunks.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from verity.models import chat
from verity.serve.protocol import APIError, ChatCompletionRequest, ChatMessage
from verity.types import Completion


def active_tools(req: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    """The tools the model may call under ``tool_choice`` (None when there are none)."""
    if not req.tools or req.tool_choice == "none":
        if not req.tools and req.tool_choice not in (None, "none", "auto"):
            raise APIError(400, "tool_choice is set but no tools were given", param="tool_choice")
        return None
    tools = [t.model_dump(exclude_none=True) for t in req.tools]
    choice = req.tool_choice
    if choice is not None and not isinstance(choice, str):
        tools = [t for t in tools if t["function"]["name"] == choice.function.name]
        if not tools:
            raise APIError(400, f"tool_choice names function {choice.function.name!r}, which is not in tools",
                           param="tool_choice")
    return tools


def _content(m: ChatMessage) -> str:
    if m.content is None:
        return ""
    if isinstance(m.content, str):
        return m.content
    parts = []
    for p in m.content:
        if p.type != "text" or p.text is None:
            raise APIError(400, f"content part of type {p.type!r} is not supported (text only)", param="messages")
        parts.append(p.text)
    return "".join(parts)


def _message_dict(m: ChatMessage) -> dict[str, Any]:
    role = "system" if m.role == "developer" else m.role
    d: dict[str, Any] = {"role": role, "content": _content(m)}
    if m.name:
        d["name"] = m.name
    if m.tool_call_id:
        d["tool_call_id"] = m.tool_call_id
    if m.tool_calls:
        d["tool_calls"] = [{"id": c.id, "type": "function",
                            "function": {"name": c.function.name, "arguments": c.function.arguments}}
                           for c in m.tool_calls]
    return d


def render_chat(tokenizer: Any, messages: Sequence[ChatMessage], tools: list[dict[str, Any]] | None,
                template_kwargs: dict[str, Any] | None = None) -> list[int]:
    """Token ids of the chat prompt (generation prompt opened); ``template_kwargs`` (the request's
    ``chat_template_kwargs``) update the server's own template arguments."""
    from verity.errors import VerityError

    try:
        kw = chat.check_template_kwargs(template_kwargs or {}, "chat_template_kwargs")
    except VerityError as e:
        raise APIError(400, str(e), param="chat_template_kwargs") from None
    try:
        return chat.render(tokenizer, [_message_dict(m) for m in messages], tools, extra_kwargs=kw)
    except VerityError as e:  # a model without a chat template
        raise APIError(400, str(e), param="messages") from None
    except Exception as e:  # template errors (roles out of order, ...), undecodable text
        msg = f"cannot render the messages with the model's chat template: {e}"
        raise APIError(400, msg, param="messages") from None


def encode_prompt(tokenizer: Any, prompt: str | list[int], vocab_size: int) -> list[int]:
    """Token ids of a completions prompt (text, or ids checked against the vocabulary)."""
    if isinstance(prompt, str):
        try:
            ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        except Exception as e:
            raise APIError(400, f"cannot tokenize the prompt: {e}", param="prompt") from None
    else:
        bad = [i for i in prompt if not 0 <= i < vocab_size]
        if bad:
            raise APIError(400, f"token id {bad[0]} is outside the vocabulary (0..{vocab_size - 1})", param="prompt")
        ids = list(prompt)
    if not ids:
        raise APIError(400, "the prompt is empty", param="prompt")
    return ids


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(remaining content or None, OpenAI tool_calls) from ``<tool_call>`` blocks in ``text``;
    blocks that cannot be read are dropped (a server has no one to report them to)."""
    parsed = chat.parse_tool_calls(text)
    if not parsed.calls:
        return text, []
    return (parsed.content or None), list(parsed.calls)


def _token_bytes(tokenizer: Any, token_id: int, text: str) -> list[int]:
    """The token's own UTF-8 bytes: exact for byte-level BPE vocabularies (a token may hold part of a
    character, which decodes to U+FFFD), else the bytes of its decoded text."""
    piece = tokenizer.convert_ids_to_tokens(token_id)
    table = _byte_decoder()
    if isinstance(piece, str) and piece and all(ch in table for ch in piece):
        return [table[ch] for ch in piece]
    return list(text.encode("utf-8"))


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """Character -> byte of the GPT-2 byte-level alphabet (printable bytes stand for themselves,
    the others are shifted to 256 + n), as byte-level BPE vocabularies spell their tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {chr(b): b for b in printable}, 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _token_entry(tokenizer: Any, token_id: int, logprob: float) -> dict[str, Any]:
    text = tokenizer.decode([token_id])
    return {"token": text, "logprob": logprob, "bytes": _token_bytes(tokenizer, token_id, text)}


def chat_logprobs(tokenizer: Any, c: Completion) -> dict[str, Any]:
    """A chat choice's ``logprobs`` (OpenAI shape): per completion token its text, log-prob, UTF-8
    bytes and ``top_logprobs`` alternatives, under the sampling distribution softmax(logits / T)
    (temperature 0: the model's softmax(logits))."""
    tops = c.top_logprobs or [()] * len(c.completion_ids)
    content = [{**_token_entry(tokenizer, t, lp), "top_logprobs": [_token_entry(tokenizer, i, v) for i, v in top]}
               for t, lp, top in zip(c.completion_ids, c.logprobs, tops, strict=True)]
    return {"content": content, "refusal": None}


def text_logprobs(tokenizer: Any, c: Completion, as_token_ids: bool = False) -> dict[str, Any]:
    """A text completion choice's ``logprobs`` (OpenAI legacy shape): tokens, token_logprobs,
    top_logprobs (the k most likely plus the sampled token, as OpenAI does; tokens whose texts
    coincide keep the larger log-prob) and text_offset (into the completion text). With
    ``as_token_ids`` the sampled tokens are written ``token_id:N`` (vLLM's ``return_tokens_as_token_ids``)."""
    ids = list(c.completion_ids)
    tokens = [f"token_id:{t}" if as_token_ids else tokenizer.decode([t]) for t in ids]
    tops = c.top_logprobs or [()] * len(ids)
    top: list[dict[str, float]] = []
    for n, alts in enumerate(tops):
        d: dict[str, float] = {}
        for i, v in [*alts, (ids[n], c.logprobs[n])]:  # most likely first: setdefault keeps the larger
            d.setdefault(tokenizer.decode([i]), v)
        top.append(d)
    offsets = [len(tokenizer.decode(ids[:n], skip_special_tokens=True)) for n in range(len(ids))]
    return {"tokens": tokens, "token_logprobs": list(c.logprobs), "top_logprobs": top, "text_offset": offsets}


def text_chunks(text: str) -> Iterator[str]:
    """Word-sized pieces of ``text`` that concatenate back to it."""
    for m in re.finditer(r"\s*\S+|\s+$", text):
        yield m.group(0)


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


SSE_DONE = "data: [DONE]\n\n"
