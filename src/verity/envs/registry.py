"""Finding environments by id: built-ins, installed plugins, local files and modules.

Lookup order for ``load_environment(env_id, **env_args)``:
1. built-in ids (``pii-masking``, ``reverse-text``, ``arithmetic``, ``code-tests``, ``calculator``,
   ``guess-number``);
2. installed packages registering ``NAME = "module:load_environment"`` under the
   entry-point group ``verity.environments``;
3. a path to a ``.py`` file exposing ``load_environment(**kwargs)``;
4. an importable module (``my_env`` or ``my-env``) exposing ``load_environment``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
import types
import typing
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from verity.config import parse_env_args
from verity.errors import ConfigError, EnvironmentNotFound
from verity.types import RewardErrorPolicy

ENTRY_POINT_GROUP = "verity.environments"
BUILTINS = {
    "pii-masking": "verity.envs.pii_masking",
    "reverse-text": "verity.envs.reverse_text",
    "arithmetic": "verity.envs.arithmetic",
    "code-tests": "verity.envs.code_tests",
    "calculator": "verity.envs.calculator",
    "guess-number": "verity.envs.guess_number",
}


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _entry_points() -> dict[str, Any]:
    return {_norm(ep.name): ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_environments() -> dict[str, str]:
    """Available environment ids -> where they come from."""
    out = {k: f"built-in ({v})" for k, v in BUILTINS.items()}
    for name, ep in sorted(_entry_points().items()):
        if name not in out:
            dist = getattr(getattr(ep, "dist", None), "name", "?")
            out[name] = f"plugin {ep.value} (package {dist})"
    return out


def _from_file(path: Path) -> Callable[..., Any]:
    mod_name = f"verity_env_{path.stem.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise EnvironmentNotFound(f"cannot import environment file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return _loader_of(module, str(path))


def _loader_of(module: Any, where: str) -> Callable[..., Any]:
    fn = getattr(module, "load_environment", None)
    if not callable(fn):
        raise EnvironmentNotFound(f"{where} does not define load_environment(**kwargs)")
    return fn


def find_loader(env_id: str) -> Callable[..., Any]:
    """The ``load_environment`` function for an environment id, file or module."""
    key = _norm(env_id)
    if key in BUILTINS:
        return _loader_of(importlib.import_module(BUILTINS[key]), env_id)
    eps = _entry_points()
    if key in eps:
        return eps[key].load()
    path = Path(env_id)
    if env_id.endswith(".py"):
        if not path.is_file():
            raise EnvironmentNotFound(f"environment file not found: {env_id}")
        return _from_file(path.resolve())
    for mod_name in dict.fromkeys([env_id, env_id.replace("-", "_")]):
        try:
            if importlib.util.find_spec(mod_name) is not None:
                return _loader_of(importlib.import_module(mod_name), mod_name)
        except (ImportError, ValueError):
            continue
    known = ", ".join(sorted(list_environments())) or "none"
    raise EnvironmentNotFound(
        f"unknown environment {env_id!r}: not a built-in or installed id, a .py file or an "
        f"importable module (available: {known}; `verity envs` lists them)"
    )


def _plain_types(tp: Any) -> tuple[type, ...]:
    """(int,) for ``int``, (int, NoneType) for ``int | None``; () when not built from int/float/str/bool."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return args if args and all(a in (int, float, str, bool, type(None)) for a in args) else ()


def _check_arg_types(env_id: str, fn: Callable[..., Any], env_args: dict[str, Any]) -> None:
    """``-a`` values whose type contradicts a plain annotation (int, float, str, bool) of ``load_environment``."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: nothing to check against
        return
    for k, v in env_args.items():
        allowed = _plain_types(hints.get(k))
        if not allowed:
            continue
        if type(v) in allowed or (type(v) is int and float in allowed):  # JSON 1 is a fine float
            continue
        want = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        raise ConfigError(f"-a {k}={json.dumps(v)}: environment {env_id!r} expects {want}, "
                          f"got {type(v).__name__}")


def load_environment(env_id: str, **env_args: Any) -> Any:
    """Load an environment by id, plugin name, ``.py`` path or module, passing ``env_args``."""
    fn = find_loader(env_id)
    sig = inspect.signature(fn)
    if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        bad = [k for k in env_args if k not in sig.parameters]
        if bad:
            raise ConfigError(
                f"environment {env_id!r} does not accept {bad}; its arguments are "
                f"{list(sig.parameters)}"
            )
    _check_arg_types(env_id, fn, env_args)
    env = fn(**env_args)
    if not hasattr(env, "rollout_batch") or not hasattr(env, "get_examples"):
        raise ConfigError(f"load_environment of {env_id!r} returned {type(env).__name__}, not an Environment")
    env.env_id = env_id
    env.env_args = dict(env_args)
    return env


def load_env_for(env_id: str, env_args: str | dict | None, on_reward_error: RewardErrorPolicy = "zero") -> Any:
    """:func:`load_environment` with ``env_args`` as given on the command line (a JSON object or a dict)
    and the reward-error policy of its rubric: ``"zero"`` scores a raising reward function 0 and counts
    it, ``"raise"`` aborts."""
    env = load_environment(env_id, **parse_env_args(env_args))
    if env.rubric is not None:
        env.rubric.on_error = on_reward_error
    return env
