"""Config-level helpers shared by every typed config: field declarations, field docs, TOML files.

A config is a dataclass whose fields are declared with :func:`flag` (CLI flags in the field's
metadata), typed (a ``Literal[...]`` type lists a field's choices) and documented by the docstring
written under each field. The CLI derives
its options from them (``verity.cli.derive``); the library reads them without the CLI.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from verity.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def flag(*flags: str, default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A dataclass field with CLI flags, e.g. ``num_examples: int = flag("-n", default=5)``."""
    md = {"flags": flags, **meta} if flags else meta
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=md)
    return dataclasses.field(default=default, metadata=md)


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under each field of a dataclass (read from its source)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for a, b in zip(body, body[1:], strict=False):
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                    and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def base_type(tp: Any) -> tuple[Any, bool]:
    """(scalar type, optional?) for annotations like ``int | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return tp, False


def choices_of(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` annotation (also inside ``X | None``), else None."""
    tp, _ = base_type(tp)
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


def check_choices(cfg: Any) -> None:
    """Raise a one-line :class:`ConfigError` naming the flag when a ``Literal`` field holds another value
    (values from TOML files and library callers do not pass through argparse's choices)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        allowed = choices_of(hints[f.name])
        value = getattr(cfg, f.name)
        if allowed is not None and value is not None and value not in allowed:
            flag_name = (list(f.metadata.get("flags", ())) or ["--" + f.name.replace("_", "-")])[-1]
            raise ConfigError(f"{flag_name} {value}: unknown {f.name.replace('_', ' ')} "
                              f"(choose from {', '.join(map(str, allowed))})")


def accepts_none(cls: type, name: str) -> bool:
    """Whether field ``name`` of dataclass ``cls`` is annotated as optional (``X | None``)."""
    return base_type(typing.get_type_hints(cls)[name])[1]


#: Shipped presets: ``presets/NAME.toml``, any config's fields (as torchtune ships its recipes' configs).
PRESETS_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_toml(path: str) -> dict[str, Any]:
    """A TOML config file (or the name of a shipped preset, e.g. ``demo``) as a dict; a one-line
    :class:`ConfigError` when missing or invalid."""
    p = Path(path)
    if not p.is_file() and path in preset_names():
        p = PRESETS_DIR / f"{path}.toml"
    if not p.is_file():
        raise ConfigError(f"--config {path}: file not found (shipped presets: {', '.join(preset_names())})")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib  # pyright: ignore[reportMissingImports]  # installed only on Python 3.10
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: invalid TOML ({e})") from None


def from_preset(cls: type[T], name: str, **overrides: Any) -> T:
    """Config ``cls`` with the fields of preset ``name`` (a shipped name or a TOML path), then
    ``overrides``; an unknown key or a value outside a field's choices is a one-line error."""
    values = {**load_toml(name), **overrides}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"preset {name}: unknown key(s) {', '.join(unknown)} for {cls.__name__}")
    cfg = cls(**values)
    check_choices(cfg)
    return cfg


def parse_env_args(text: str | dict | None, flag_name: str = "-a") -> dict[str, Any]:
    """``-a '{"num_eval_examples": 50}'`` -> dict, with a one-line error for bad JSON."""
    if text is None or isinstance(text, dict):
        return dict(text or {})
    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{flag_name} {text!r}: invalid JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(v, dict):
        raise ConfigError(f"{flag_name} {text!r}: expected a JSON object like '{{\"key\": 1}}'")
    return v


@dataclasses.dataclass(kw_only=True)
class ChatTemplateFlags:
    """How prompts are rendered: flags of every command that renders chats through a tokenizer
    (keyword-only, so configs with a required positional field can include them)."""

    chat_template: str | None = flag("--chat-template", default=None)
    """Jinja chat-template file used instead of the tokenizer's own (needed when the tokenizer has none)."""
    chat_template_kwargs: str = flag("--chat-template-kwargs", default="{}")
    """JSON object of chat-template variables for every rendering, e.g. '{"enable_thinking": false}' for Qwen3."""

    def template_kwargs(self) -> dict[str, Any]:
        """``--chat-template-kwargs`` as a dict (a one-line :class:`ConfigError` for bad JSON or reserved keys)."""
        from verity.models.chat import check_template_kwargs

        return check_template_kwargs(parse_env_args(self.chat_template_kwargs, "--chat-template-kwargs"))

    def check_chat_flags(self) -> None:
        """Validate both flags before any compute."""
        self.template_kwargs()
        if self.chat_template is not None and not Path(self.chat_template).is_file():
            raise ConfigError(f"--chat-template {self.chat_template}: file not found")
