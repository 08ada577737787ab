"""The :class:`Rubric`: weighted reward functions with argument injection and error accounting.

A reward function declares, by name, the arguments it wants among
``prompt, completion, answer, info, task, state, parser`` (or ``**kwargs`` for all of them),
may be sync or async, and returns a float. The rollout's reward is the weighted sum; a
weight of 0 makes a function a logged metric only. A function that raises is recorded as
an error on that rollout (never silently a 0 without a trace): with ``on_error="zero"``
it scores 0 and is counted in the summary, with ``on_error="raise"`` the error propagates.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from verity.errors import ConfigError
from verity.parsers.base import Parser

INJECTABLE = ("prompt", "completion", "answer", "info", "task", "state", "parser")
ON_ERROR = ("zero", "raise")


class RewardFunctionError(RuntimeError):
    """A reward function raised while scoring (re-raised with ``on_error='raise'``)."""


@dataclass(frozen=True)
class RubricScore:
    """The scores of one rollout."""

    scores: Mapping[str, float]
    reward: float
    errors: Mapping[str, str] = field(default_factory=dict)


def _func_name(f: Callable[..., Any]) -> str:
    return getattr(f, "__name__", None) or type(f).__name__


def _wanted_args(f: Callable[..., Any]) -> tuple[str, ...] | None:
    """Names of the injectable args ``f`` declares; None means it takes **kwargs (pass all)."""
    sig = inspect.signature(f)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    unknown = [
        n for n, p in sig.parameters.items()
        if n not in INJECTABLE and p.default is p.empty and p.kind is not p.VAR_POSITIONAL
    ]
    if unknown:
        raise ConfigError(
            f"reward function {_func_name(f)!r} asks for {unknown}; "
            f"reward functions may only take {', '.join(INJECTABLE)}"
        )
    return tuple(n for n in sig.parameters if n in INJECTABLE)


class Rubric:
    """Weighted reward functions. ``weights`` defaults to 1.0 each."""

    def __init__(
        self,
        funcs: Sequence[Callable[..., Any]] = (),
        weights: Sequence[float] | None = None,
        parser: Parser | None = None,
        on_error: str = "zero",
    ):
        self.funcs: list[Callable[..., Any]] = []
        self.weights: list[float] = []
        self._args: list[tuple[str, ...] | None] = []
        self.parser = parser or Parser()
        self.on_error = on_error
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        weights = list(weights) if weights is not None else [1.0] * len(funcs)
        if len(weights) != len(funcs):
            raise ConfigError(f"Rubric: {len(funcs)} functions but {len(weights)} weights")
        for f, w in zip(funcs, weights, strict=False):
            self.add_reward_func(f, w)

    def add_reward_func(self, func: Callable[..., Any], weight: float = 1.0) -> None:
        name = _func_name(func)
        if name in self.func_names:
            raise ConfigError(f"Rubric: two reward functions named {name!r}")
        self._args.append(_wanted_args(func))
        self.funcs.append(func)
        self.weights.append(float(weight))

    @property
    def func_names(self) -> list[str]:
        return [_func_name(f) for f in self.funcs]

    async def _call(self, i: int, kwargs: Mapping[str, Any]) -> float:
        f, wanted = self.funcs[i], self._args[i]
        args = dict(kwargs) if wanted is None else {k: kwargs[k] for k in wanted}
        out = f(**args)
        if inspect.isawaitable(out):
            out = await out
        if out is None:
            raise TypeError("returned None")
        return float(out)

    async def score(
        self,
        prompt: Any,
        completion: Any,
        answer: str = "",
        info: Mapping[str, Any] | None = None,
        task: str = "default",
        state: Mapping[str, Any] | None = None,
    ) -> RubricScore:
        """Score one rollout with every function; errors are recorded per function."""
        kwargs = dict(
            prompt=prompt, completion=completion, answer=answer, info=dict(info or {}),
            task=task, state=dict(state or {}), parser=self.parser,
        )
        results = await asyncio.gather(
            *(self._call(i, kwargs) for i in range(len(self.funcs))), return_exceptions=True
        )
        scores: dict[str, float] = {}
        errors: dict[str, str] = {}
        reward = 0.0
        for name, w, res in zip(self.func_names, self.weights, results, strict=False):
            if isinstance(res, BaseException):
                if self.on_error == "raise":
                    raise RewardFunctionError(f"reward function {name!r} failed: {res!r}") from res
                errors[name] = f"{type(res).__name__}: {res}"
                res = 0.0
            scores[name] = res
            reward += w * res
        return RubricScore(scores=scores, reward=reward, errors=errors)
