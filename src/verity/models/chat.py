"""Chat-template rendering with tools, and tool calls parsed back out of model text.

One place for what the in-process sampler, the multi-turn rollout and ``verity serve`` all
need: render messages (with OpenAI-style ``tools``) through a tokenizer's chat template, and
read ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` blocks (the Hermes / Qwen
format) out of sampled text. A template that knows about ``tools`` gets them as the
``tools=`` argument; for any other template the tool schemas go into the system message and
an assistant message's ``tool_calls`` are written back into its content as ``<tool_call>``
blocks, so the model sees the same format it is asked to produce.

Template arguments (``--chat-template-kwargs '{"enable_thinking": false}'``) are attached to the
tokenizer once (:func:`set_template_kwargs`), so every rendering through it — sampler, multi-turn
bridges, SFT data, the server — passes them to the template; a server request can add its own
(``chat_template_kwargs``) on top. :func:`end_of_turn_ids` reads the token(s) a template closes
an assistant turn with (``<|im_end|>``, ``<|eot_id|>``, ``<|end|>``), which samplers stop on.
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


TEMPLATE_KWARGS_ATTR = "verity_chat_template_kwargs"
#: apply_chat_template's own arguments: verity sets them, template kwargs may not.
RESERVED_KWARGS = frozenset({"conversation", "messages", "tools", "documents", "add_generation_prompt",
                             "continue_final_message", "tokenize", "padding", "truncation", "max_length",
                             "return_tensors", "return_dict", "return_assistant_tokens_mask", "tokenizer_kwargs",
                             "chat_template"})
NO_TEMPLATE_FIX = "pass --chat-template FILE (a Jinja chat template) or use a tokenizer that has one"


def check_template_kwargs(kwargs: Mapping[str, Any], where: str = "--chat-template-kwargs") -> dict[str, Any]:
    """``kwargs`` as a dict, or a one-line :class:`ConfigError` naming a key verity sets itself."""
    from verity.errors import ConfigError

    bad = sorted(set(kwargs) & RESERVED_KWARGS)
    if bad:
        raise ConfigError(f"{where}: {bad[0]!r} is an argument of apply_chat_template that verity sets itself, "
                          "not a template variable")
    return dict(kwargs)


def set_template_kwargs(tokenizer: Any, kwargs: Mapping[str, Any] | None) -> Any:
    """Attach template arguments to ``tokenizer``: every :func:`render` through it passes them on."""
    setattr(tokenizer, TEMPLATE_KWARGS_ATTR, check_template_kwargs(kwargs or {}))
    return tokenizer


def template_kwargs(tokenizer: Any) -> dict[str, Any]:
    """The template arguments attached to ``tokenizer`` ({} when none)."""
    return dict(getattr(tokenizer, TEMPLATE_KWARGS_ATTR, None) or {})


def require_template(tokenizer: Any) -> None:
    """A one-line :class:`ConfigError` when ``tokenizer`` has no chat template (no silent fallback)."""
    from verity.errors import ConfigError

    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or "the model"
        raise ConfigError(f"{name}: the tokenizer has no chat template; {NO_TEMPLATE_FIX}")


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
           add_generation_prompt: bool = True, tokenize: bool = True,
           extra_kwargs: Mapping[str, Any] | None = None) -> Any:
    """Token ids (or the text, ``tokenize=False``) of ``messages`` through the chat template, with
    the tokenizer's template arguments (:func:`set_template_kwargs`) updated by ``extra_kwargs``."""
    out = _apply(tokenizer, messages, tools, extra_kwargs, add_generation_prompt=add_generation_prompt,
                 tokenize=tokenize)
    return _ids(out) if tokenize else out


def _apply(tokenizer: Any, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
           extra_kwargs: Mapping[str, Any] | None, **call: Any) -> Any:
    """``apply_chat_template`` with tools handled and the template arguments applied."""
    require_template(tokenizer)
    aware = is_tool_aware(tokenizer)
    kw: dict[str, Any] = {**template_kwargs(tokenizer), **(extra_kwargs or {})}
    if tools and aware:
        kw["tools"] = list(tools)
    return tokenizer.apply_chat_template(template_messages(messages, tools, aware), **call, **kw)


def has_generation_blocks(tokenizer: Any) -> bool:
    """Whether the chat template marks assistant output with ``{% generation %}`` (an assistant mask)."""
    return re.search(r"\{%-?\s*generation\s*-?%\}", template_text(tokenizer)) is not None


def render_assistant_mask(tokenizer: Any, messages: Sequence[Mapping[str, Any]],
                          tools: Sequence[Mapping[str, Any]] | None = None) -> tuple[list[int], list[int]]:
    """(ids, 0/1 mask) of a whole conversation from the template's own ``{% generation %}`` blocks."""
    out = _apply(tokenizer, messages, tools, None, add_generation_prompt=False, tokenize=True, return_dict=True,
                 return_assistant_tokens_mask=True)
    return _ids(out), [int(m) for m in out["assistant_masks"]]


EOT_SENTINEL = "verity-end-of-turn-probe-5d1e"
#: End-of-turn tokens of common chat families, stopped on when the vocabulary has them as special tokens.
KNOWN_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                     "<|end_of_text|>")


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """Token ids that end an assistant turn under the tokenizer's chat template.

    Read off the template: an assistant message is rendered and the special token right after
    its content is the end-of-turn token. Known end-of-turn tokens (``<|im_end|>``,
    ``<|eot_id|>``, ...) that the vocabulary holds as special tokens are added.
    """
    specials = {t: i for t, i in zip(getattr(tokenizer, "all_special_tokens", []) or [],
                                     getattr(tokenizer, "all_special_ids", []) or [], strict=False)}
    for i, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            specials[str(added)] = int(i)
    out = {specials[t] for t in KNOWN_END_OF_TURN if t in specials}
    if getattr(tokenizer, "chat_template", None):
        try:
            text = render(tokenizer, [{"role": "user", "content": "."}, {"role": "assistant", "content": EOT_SENTINEL}],
                          add_generation_prompt=False, tokenize=False)
        except Exception:  # a template that insists on other roles/orders: fall back to the known tokens
            text = ""
        cut = text.rfind(EOT_SENTINEL)
        if cut >= 0:
            tail = list(tokenizer(text[cut + len(EOT_SENTINEL):], add_special_tokens=False)["input_ids"])
            first = next((t for t in tail if t in specials.values()), None)
            if first is not None and tokenizer.decode([t for t in tail[:tail.index(first)]]).strip() == "":
                out.add(first)
    return sorted(out)


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
