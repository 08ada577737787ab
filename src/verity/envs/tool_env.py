"""``ToolEnv`` and ``StatefulToolEnv``: the model calls Python functions as tools.

``ToolEnv(tools=[f, g], max_turns=10, ...)`` offers each function to the model with an
OpenAI-style JSON schema derived from its type hints and docstring (:func:`tool_schema`).
A local model sees the schemas through its chat template (or, for a template that does not
render tools, in the system message) and calls a tool by writing
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; an endpoint returns OpenAI
``tool_calls``. Each call's result goes back as a ``tool`` message. A call that is not valid
JSON, names an unknown tool, has the wrong arguments, raises, or runs past ``tool_timeout``
seconds also goes back as a ``tool`` message saying what went wrong: the rollout continues.
The rollout ends when the model answers without calling a tool, or at ``max_turns``.

``StatefulToolEnv`` adds per-rollout arguments: ``add_tool(f, args_to_skip=["session"])``
hides ``session`` from the schema, and :meth:`StatefulToolEnv.update_tool_args` fills it in
from the rollout's state before each call (a value the model sends for it is dropped).
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from verity.envs.multiturn import MultiTurnEnv, State
from verity.envs.turns import call_hook
from verity.errors import ConfigError
from verity.types import Message, Messages

_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}


def _type_schema(tp: Any) -> dict[str, Any]:
    """JSON schema of a Python type annotation (the common cases; anything else is unconstrained)."""
    if tp is inspect.Parameter.empty or tp is Any:
        return {}
    if tp in _SIMPLE:
        return {"type": _SIMPLE[tp]}
    if tp is type(None):
        return {"type": "null"}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        kinds = {_SIMPLE.get(type(a)) for a in args}
        return {"enum": list(args), **({"type": kinds.pop()} if len(kinds) == 1 and None not in kinds else {})}
    if origin in (typing.Union, types.UnionType):
        subs = [_type_schema(a) for a in args]
        return {"anyOf": subs} if all(subs) else {}
    if origin in (list, tuple, set, frozenset, Sequence):
        return {"type": "array", "items": _type_schema(args[0]) if args else {}}
    if origin in (dict, Mapping):
        return {"type": "object"}
    return {}


def _doc_parts(func: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """(description, {arg: description}) from a Google-style (``Args:``) or Sphinx (``:param x:``) docstring."""
    doc = inspect.getdoc(func) or ""
    args: dict[str, str] = {}
    for m in re.finditer(r"^\s*:param\s+(?:[^:]*\s)?(\w+):\s*(.+)$", doc, re.MULTILINE):
        args[m.group(1)] = m.group(2).strip()
    section = re.search(r"^(?:Args|Arguments|Parameters):[ \t]*\n((?:[ \t]+\S.*\n?|[ \t]*\n)+)", doc, re.MULTILINE)
    if section:
        lines = [ln for ln in section.group(1).splitlines() if ln.strip()]
        indent = len(lines[0]) - len(lines[0].lstrip()) if lines else 0
        current = None
        for line in lines:
            m = re.match(r"(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line.strip())
            if m and len(line) - len(line.lstrip()) == indent:
                current = m.group(1)
                args[current] = m.group(2).strip()
            elif current:
                args[current] = (args[current] + " " + line.strip()).strip()
    head = re.split(r"^\s*(?:Args|Arguments|Parameters|Returns|Raises|Yields|Examples?):\s*$|^\s*:param",
                    doc, maxsplit=1, flags=re.MULTILINE)[0]
    return " ".join(head.split()), args


def tool_schema(func: Callable[..., Any], skip: Sequence[str] = ()) -> dict[str, Any]:
    """OpenAI ``tools`` entry for ``func``: name, description (docstring), and parameters from
    its signature — type hints as JSON types, docstring argument descriptions, parameters
    without a default required. Parameters in ``skip`` are left out (see StatefulToolEnv)."""
    name = getattr(func, "__name__", type(func).__name__)
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        hints = {}
    desc, arg_docs = _doc_parts(func)
    props: dict[str, Any] = {}
    required = []
    for pname, p in inspect.signature(func).parameters.items():
        if pname in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        schema = _type_schema(hints.get(pname, p.annotation))
        if pname in arg_docs:
            schema["description"] = arg_docs[pname]
        if p.default is p.empty:
            required.append(pname)
        elif isinstance(p.default, str | int | float | bool):
            schema["default"] = p.default
        props[pname] = schema
    return {"type": "function", "function": {"name": name, "description": desc, "parameters": {
        "type": "object", "properties": props, "required": required, "additionalProperties": False}}}


def _call_parts(call: Any) -> tuple[str, Any, str]:
    """(name, raw arguments, id) of an OpenAI tool call given as a dict or a client object."""
    if isinstance(call, Mapping):
        fn = call.get("function") or {}
        return str(fn.get("name", "")), fn.get("arguments", "{}"), str(call.get("id") or "")
    fn = getattr(call, "function", None)
    return str(getattr(fn, "name", "")), getattr(fn, "arguments", "{}"), str(getattr(call, "id", "") or "")


def format_tool_error(e: Exception) -> str:
    """The tool message for a tool that raised (a module-level function: the environment pickles)."""
    return f"Error: {type(e).__name__}: {e}"


class ToolEnv(MultiTurnEnv):
    """The model calls ``tools`` (Python callables) until it answers without a call."""

    def __init__(self, tools: Sequence[Callable[..., Any]] | None = None, max_turns: int = 10,
                 error_formatter: Callable[[Exception], str] = format_tool_error,
                 tool_timeout: float = 10.0, max_tool_output: int = 4000, **kwargs: Any):
        kwargs.pop("oai_tools", None)  # derived from ``tools`` here
        if tool_timeout <= 0:
            raise ConfigError(f"tool_timeout must be > 0 seconds, got {tool_timeout!r}")
        super().__init__(max_turns=max_turns, **kwargs)
        self.error_formatter = error_formatter
        self.tool_timeout = tool_timeout
        self.max_tool_output = max_tool_output
        self.tools: list[Callable[..., Any]] = []
        self.oai_tools: list[dict[str, Any]] = []
        self.tool_map: dict[str, Callable[..., Any]] = {}
        self.skipped_args: dict[str, list[str]] = {}
        for t in tools or []:
            self.add_tool(t)

    def add_tool(self, tool: Callable[..., Any], args_to_skip: Sequence[str] = ()) -> None:
        schema = tool_schema(tool, skip=args_to_skip)
        name = schema["function"]["name"]
        if name in self.tool_map:
            raise ConfigError(f"two tools named {name!r}")
        self.tools.append(tool)
        self.oai_tools.append(schema)
        self.tool_map[name] = tool
        self.skipped_args[name] = list(args_to_skip)

    def remove_tool(self, tool: Callable[..., Any]) -> None:
        name = getattr(tool, "__name__", type(tool).__name__)
        self.tools.remove(tool)
        self.oai_tools = [t for t in self.oai_tools if t["function"]["name"] != name]
        self.tool_map.pop(name, None)
        self.skipped_args.pop(name, None)

    async def is_completed(self, messages: Messages, state: State, **kwargs: Any) -> bool:
        if await super().is_completed(messages, state, **kwargs):
            return True
        last = messages[-1] if messages else {}
        return last.get("role") == "assistant" and not last.get("tool_calls") and not state.get("tool_call_errors")

    async def call_tool(self, tool_name: str, tool_args: dict[str, Any], tool_call_id: str,
                        **kwargs: Any) -> Message:
        """Run one tool; whatever happens, the answer is a ``tool`` message."""
        fn = self.tool_map.get(tool_name)
        try:
            if fn is None:
                known = ", ".join(self.tool_map) or "none"
                raise LookupError(f"unknown tool {tool_name!r} (available: {known})")
            try:
                inspect.signature(fn).bind(**tool_args)
            except TypeError as e:
                raise TypeError(f"bad arguments for {tool_name}: {e}") from None
            result = await call_hook(fn, timeout=self.tool_timeout, **tool_args)
            content = str(result)
        except TimeoutError:
            content = f"Error: tool {tool_name} timed out after {self.tool_timeout:g} s"
        except Exception as e:
            content = self.error_formatter(e)
        if len(content) > self.max_tool_output:
            content = content[:self.max_tool_output] + f"… [truncated {len(content) - self.max_tool_output} chars]"
        return {"role": "tool", "content": content, "tool_call_id": tool_call_id}

    def prepare_args(self, tool_name: str, tool_args: dict[str, Any], messages: Messages,
                     state: State) -> dict[str, Any]:
        """Arguments actually passed to the tool (StatefulToolEnv injects hidden ones here)."""
        return tool_args

    async def env_response(self, messages: Messages, state: State, **kwargs: Any) -> tuple[Messages, State]:
        out: list[Message] = [{"role": "tool", "content": f"Error: {err}", "tool_call_id": f"invalid_{i}"}
                              for i, err in enumerate(state.get("tool_call_errors") or [])]
        for call in (messages[-1].get("tool_calls") or []) if messages else []:
            name, raw, call_id = _call_parts(call)
            try:
                args = json.loads(raw) if isinstance(raw, str) else raw
                if not isinstance(args, dict):
                    raise ValueError(f"arguments must be a JSON object, got {type(args).__name__}")
            except (json.JSONDecodeError, ValueError) as e:
                out.append({"role": "tool", "tool_call_id": call_id,
                            "content": f"Error: arguments of {name} are not a JSON object: {e}"})
                continue
            args = self.prepare_args(name, args, messages, state)
            out.append(await self.call_tool(name, args, call_id))
        return out, state


class StatefulToolEnv(ToolEnv):
    """A ToolEnv whose tools get per-rollout arguments, hidden from the model (``args_to_skip``)."""

    def update_tool_args(self, tool_name: str, tool_args: dict[str, Any], messages: Messages, state: State,
                         **kwargs: Any) -> dict[str, Any]:
        """Fill in hidden arguments from ``state`` (override; called before every tool call)."""
        raise NotImplementedError(f"{type(self).__name__} must implement update_tool_args")

    def prepare_args(self, tool_name: str, tool_args: dict[str, Any], messages: Messages,
                     state: State) -> dict[str, Any]:
        visible = {k: v for k, v in tool_args.items() if k not in self.skipped_args.get(tool_name, [])}
        return self.update_tool_args(tool_name, visible, messages, state)
