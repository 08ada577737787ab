"""Derive argparse options from a config dataclass: one flag per field, help = the field's docstring.

Field metadata may carry ``flags`` (e.g. ``("-n", "--num-examples")``), ``positional=True``
or ``choices``. ``--config FILE.toml`` (when the dataclass has a ``config`` field) supplies
defaults that explicit flags override; an unknown key in the file is an error naming it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from verity.errors import ConfigError

C = TypeVar("C")


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


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(scalar type, optional?) for annotations like ``int | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return tp, False


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli") is False:
            continue
        tp, optional = _base_type(hints[f.name])
        help_ = docs.get(f.name, "")
        default = None if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING else (
            f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc]
        if f.metadata.get("positional"):
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            parser.add_argument(f.name, help=help_, nargs="?" if has_default else None, default=default)
            continue
        flags = list(f.metadata.get("flags", ())) or ["--" + f.name.replace("_", "-")]
        shown = f" (default: {default})" if default not in (None, False, "") else ""
        kw: dict[str, Any] = {"dest": f.name, "help": help_ + shown}
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
            kw["default"] = default
        elif typing.get_origin(tp) in (list, tuple):
            kw["action"] = "append"
            kw["default"] = None
        else:
            kw["type"] = tp if tp in (int, float, str) else str
            kw["default"] = default
            if "choices" in f.metadata:
                kw["choices"] = f.metadata["choices"]
        parser.add_argument(*flags, **kw)


def load_toml(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {path}: file not found")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: invalid TOML ({e})") from None


def build_config(cls: type[C], ns: argparse.Namespace, argv: list[str]) -> C:
    """Config from parsed args; values from ``--config`` apply where no flag was given."""
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
    cfg_file = values.get("config")
    if cfg_file:
        file_vals = load_toml(cfg_file)
        names = {f.name for f in dataclasses.fields(cls)}
        for k, v in file_vals.items():
            key = k.replace("-", "_")
            if key not in names:
                raise ConfigError(f"--config {cfg_file}: unknown key {k!r}")
            flag_given = any(a.split("=")[0] in _flags_of(cls, key) for a in argv)
            if not flag_given:
                values[key] = v
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli") is False or values.get(f.name) is not None:
            continue
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
    return cls(**{k: v for k, v in values.items() if v is not None or _accepts_none(cls, k)})


def _flags_of(cls: type, name: str) -> list[str]:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return list(f.metadata.get("flags", ())) + ["--" + name.replace("_", "-"), "--no-" + name.replace("_", "-")]


def _accepts_none(cls: type, name: str) -> bool:
    return _base_type(typing.get_type_hints(cls)[name])[1]


def flag(*flags: str, default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A dataclass field with CLI flags, e.g. ``num_examples: int = flag("-n", default=5)``."""
    md = {"flags": flags, **meta} if flags else meta
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=md)
    return dataclasses.field(default=default, metadata=md)
