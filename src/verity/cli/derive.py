"""Derive argparse options from a config dataclass: one flag per field, help = the field's docstring.

The field helpers (:func:`verity.config.flag`, field docs, TOML loading) live in :mod:`verity.config`.

Field metadata may carry ``flags`` (e.g. ``("-n", "--num-examples")``) or ``positional=True``;
a ``Literal[...]`` field type gives the flag's choices. ``--config FILE.toml`` (when the dataclass
has a ``config`` field) supplies defaults that explicit flags override; an unknown key in the file
is an error naming it, and so is a value outside a field's choices.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from verity.config import accepts_none, base_type, check_choices, choices_of, field_docs, load_toml
from verity.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

C = TypeVar("C", bound="DataclassInstance")


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, only: Sequence[str] | None = None,
                       defaults: Mapping[str, Any] | None = None) -> None:
    """One option per field of ``cls`` (only the fields named in ``only`` when given); ``defaults``
    (e.g. a preset) replace the fields' own defaults."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli") is False or (only is not None and f.name not in only):
            continue
        tp, optional = base_type(hints[f.name])
        help_ = docs.get(f.name, "")
        default = None if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING else (
            f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc]
        default = (defaults or {}).get(f.name, default)
        if f.metadata.get("positional"):
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            parser.add_argument(f.name, help=help_, nargs="?" if has_default else None, default=default)
            continue
        flags = list(f.metadata.get("flags", ())) or ["--" + f.name.replace("_", "-")]
        help_ += f" (default: {default})" if default not in (None, False, "") else ""
        kw: dict[str, Any] = {"dest": f.name, "help": help_.replace("%", "%%")}  # argparse %-formats help
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
            kw["default"] = default
        elif typing.get_origin(tp) in (list, tuple):
            kw["action"] = "append"
            kw["default"] = None
        else:
            choices = choices_of(tp)
            kw["type"] = tp if tp in (int, float, str) else type(choices[0]) if choices else str
            kw["default"] = default
            if choices:
                kw["choices"] = choices
        parser.add_argument(*flags, **kw)


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
                values[key] = _checked_toml_value(cls, key, v, cfg_file)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli") is False or values.get(f.name) is not None:
            continue
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
    cfg = cls(**{k: v for k, v in values.items() if v is not None or accepts_none(cls, k)})
    check_choices(cfg)  # a --config file's values bypass argparse's choices
    return cfg


def _checked_toml_value(cls: type, name: str, v: Any, cfg_file: str) -> Any:
    """A TOML value of the field's type (an int where a float is wanted is fine) and, for a ``Literal``
    field, one of its choices; else a one-line error naming the file and key."""
    tp, _ = base_type(typing.get_type_hints(cls)[name])
    choices = choices_of(tp)
    if choices:
        if v not in choices:
            raise ConfigError(f"--config {cfg_file}: {name} = {v!r} is not one of {', '.join(map(str, choices))}")
        return v
    if typing.get_origin(tp) in (list, tuple):
        ok = isinstance(v, list) and all(isinstance(x, str) for x in v)
        want = "a list of strings"
    elif tp in (int, float, str, bool):
        ok = type(v) is tp or (tp is float and type(v) is int)
        want = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[tp]
    else:
        return v
    if not ok:
        raise ConfigError(f"--config {cfg_file}: {name} = {v!r} should be {want}")
    return float(typing.cast(float, v)) if tp is float else v


def _flags_of(cls: type, name: str) -> list[str]:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return list(f.metadata.get("flags", ())) + ["--" + name.replace("_", "-"), "--no-" + name.replace("_", "-")]
