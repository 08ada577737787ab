"""Chat-template rendering with tools, and tool calls parsed back out of model text.

One place for what the in-process sampler, the multi-turn rollout and ``verity serve`` all
need: render messages (with OpenAI-style ``tools``) through a tokenizer's chat template, and
read ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` blocks (the Hermes / Qwen
format) out of sampled text. A template that knows about ``tools`` gets them as the
``tools=`` argument; for any other template the tool schemas go into the system message and
an assistant message's ``tool_calls`` are written back into its content as ``<tool_call>``
blocks, so the model sees the same format it is asked to produce.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
OPEN_CALL_RE = re.compile(r"<tool_call>(?![\s\S]*</tool_call>)\s*([\s\S]*)$")
TOOLS_SYSTEM = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n"
    "</tool_call>"
)


def template_text(tokenizer: Any) -> str:
    t = getattr(tokenizer, "chat_template", None) or ""
    return " ".join(t.values()) if isinstance(t, dict) else str(t)


def is_tool_aware(tokenizer: Any) -> bool:
    """Whether the chat template renders ``tools`` itself (else verity describes them in the system message)."""
    return "tools" in template_text(tokenizer)


def maybe_json(s: Any) -> Any:
    if not isinstance(s, str):
        return s
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        return s


def call_block(call: Mapping[str, Any]) -> str:
    """One OpenAI tool call as the ``<tool_call>`` text a Hermes-style model writes."""
    fn = call.get("function", {})
    return "<tool_call>\n" + json.dumps({"name": fn.get("name"), "arguments": maybe_json(fn.get("arguments"))}) \
        + "\n</tool_call>"


def template_messages(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
                      tool_aware: bool) -> list[dict[str, Any]]:
    """Messages ready for ``apply_chat_template``: tools described in the system message and
    tool calls written into the content when the template does not handle them itself."""
    out = []
    for m in messages:
        d = {k: v for k, v in m.items() if v is not None}
        d.setdefault("content", "")
        calls = d.get("tool_calls")
        if calls:
            if tool_aware:
                d["tool_calls"] = [{**c, "function": {**c["function"], "arguments": maybe_json(c["function"].get(
                    "arguments"))}} for c in calls]
            else:
                d.pop("tool_calls")
                blocks = "\n".join(call_block(c) for c in calls)
                d["content"] = (d["content"] + "\n" if d["content"] else "") + blocks
        out.append(d)
    if tools and not tool_aware:
        desc = TOOLS_SYSTEM.format(tools="\n".join(json.dumps(t) for t in tools))
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + desc}
        else:
            out.insert(0, {"role": "system", "content": desc})
    return out


def _ids(out: Any) -> list[int]:
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return [int(i) for i in out]


def render(tokenizer: Any, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None,
           add_generation_prompt: bool = True, tokenize: bool = True) -> Any:
    """Token ids (or the text, ``tokenize=False``) of ``messages`` through the chat template."""
    aware = is_tool_aware(tokenizer)
    kw: dict[str, Any] = {"tools": list(tools)} if tools and aware else {}
    out = tokenizer.apply_chat_template(template_messages(messages, tools, aware),
                                        add_generation_prompt=add_generation_prompt, tokenize=tokenize, **kw)
    return _ids(out) if tokenize else out


@dataclass(frozen=True)
class ParsedCalls:
    """Tool calls read from model text: the text left over, the well-formed calls (OpenAI shape),
    and one line per ``<tool_call>`` block that could not be read."""

    content: str
    calls: tuple[dict[str, Any], ...]
    errors: tuple[str, ...]


def parse_tool_calls(text: str, id_prefix: str | None = None) -> ParsedCalls:
    """Read ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks out of ``text``.

    A block that is not JSON, not an object, has no string ``name`` or non-object arguments,
    and a ``<tool_call>`` left unclosed, each give an error line instead of a call. Call ids are
    ``{id_prefix}{i}`` (reproducible) or random ``call_…`` ids without a prefix.
    """
    calls: list[dict[str, Any]] = []
    errors: list[str] = []
    for m in TOOL_CALL_RE.finditer(text):
        call_id = f"{id_prefix}{len(calls)}" if id_prefix is not None else f"call_{uuid.uuid4().hex[:24]}"
        call, err = _read_call(m.group(1), call_id)
        if err:
            errors.append(err)
        else:
            calls.append(call)
    rest = TOOL_CALL_RE.sub("", text)
    tail = OPEN_CALL_RE.search(rest)
    if tail:
        errors.append(f"unclosed <tool_call> block: {_clip(tail.group(1))!r}")
        rest = rest[:tail.start()]
    if not calls and not errors:
        return ParsedCalls(text, (), ())
    return ParsedCalls(rest.strip(), tuple(calls), tuple(errors))


def _read_call(body: str, call_id: str) -> tuple[dict[str, Any], str | None]:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        return {}, f"tool call is not valid JSON ({e.msg} at char {e.pos}): {_clip(body)!r}"
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return {}, f"tool call must be an object with a string \"name\": {_clip(body)!r}"
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        args = maybe_json(args)
    if not isinstance(args, dict):
        return {}, f"arguments of tool call {obj['name']!r} must be a JSON object, got {_clip(json.dumps(args))!r}"
    return {"id": call_id, "type": "function",
            "function": {"name": obj["name"], "arguments": json.dumps(args)}}, None


def _clip(s: str, n: int = 120) -> str:
    return s if len(s) <= n else s[:n] + "…"
