"""The :class:`Rubric`: weighted reward functions (verifiers 0.1.x API) plus verity's error accounting.

A reward function declares, by name, the arguments it wants among ``prompt, completion,
answer, state, task, info, example_id``, the rubric's class objects (``parser``, and what
subclasses add) and any extra keyword passed to :meth:`Rubric.score_rollout`; a ``**kwargs``
function receives all of them. It may be sync or async and returns a number. The reward is
``sum(score * weight)`` over ``zip(reward_funcs, reward_weights)``; a weight of 0 makes a
function a logged metric only.

A function that raises scores 0, as in verifiers; verity also records the error on that
rollout (:attr:`RubricScore.errors`, counted in eval summaries), and with
``on_error="raise"`` the error propagates instead.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from verity.errors import ConfigError
from verity.parsers.base import Parser
from verity.types import RolloutScore, RolloutScores

ON_ERROR = ("zero", "raise")


class RewardFunctionError(RuntimeError):
    """A reward function raised while scoring (re-raised with ``on_error='raise'``)."""


@dataclass(frozen=True)
class RubricScore:
    """The scores of one rollout, keyed by :attr:`Rubric.func_names` (unique even for two lambdas)."""

    scores: Mapping[str, float]
    reward: float
    errors: Mapping[str, str] = field(default_factory=dict)


def _func_name(f: Callable[..., Any]) -> str:
    return getattr(f, "__name__", None) or type(f).__name__


def _call_args(f: Callable[..., Any], merged: Mapping[str, Any]) -> dict[str, Any]:
    params = inspect.signature(f).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(merged)
    return {k: v for k, v in merged.items() if k in params}


class Rubric:
    """Weighted reward functions (``weights`` default to 1.0 each).

    ``Rubric(funcs, weights, parser, parallelize_scoring=True, **kwargs)`` as in verifiers
    0.1.x (extra kwargs become attributes); ``on_error`` is verity's addition.
    """

    def __init__(
        self,
        funcs: Sequence[Callable[..., Any]] | None = None,
        weights: Sequence[float] | None = None,
        parser: Parser | None = None,
        parallelize_scoring: bool = True,
        on_error: str = "zero",
        **kwargs: Any,
    ):
        self.logger = logging.getLogger(f"verity.rubrics.{type(self).__name__}")
        self.reward_funcs: list[Callable[..., Any]] = list(funcs or [])
        self.reward_weights: list[float] = list(weights or [])
        self.parser = parser or Parser()
        for key, value in kwargs.items():
            setattr(self, key, value)
        if not self.reward_weights:
            self.reward_weights = [1.0] * len(self.reward_funcs)
        elif len(self.reward_weights) != len(self.reward_funcs):
            self.logger.warning("Rubric: %d reward functions but %d weights; unpaired ones do not count towards "
                                "the reward (as in verifiers)", len(self.reward_funcs), len(self.reward_weights))
        self.parallelize_scoring = parallelize_scoring
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.class_objects: dict[str, Any] = {"parser": self.parser}

    # ------------------------------------------------------------ verifiers 0.1.x API
    def get_reward_func_names(self) -> list[str]:
        return [_func_name(f) for f in self.reward_funcs]

    def get_reward_funcs(self) -> list[Callable[..., Any]]:
        return self.reward_funcs

    def get_reward_weights(self) -> list[float]:
        return self.reward_weights

    def add_reward_func(self, func: Callable[..., Any], weight: float = 1.0) -> None:
        self.reward_funcs.append(func)
        self.reward_weights.append(weight)

    async def call_reward_func(self, func: Callable[..., Any], prompt: Any, completion: Any, answer: Any,
                               state: Any, task: str = "default", info: Mapping[str, Any] | None = None,
                               example_id: int | None = None, **kwargs: Any) -> float:
        """Call ``func`` with the arguments it declares; 0.0 (logged) when it raises, as in verifiers."""
        merged = self._merged(prompt, completion, answer, state, task, info, example_id, kwargs)
        try:
            return await self._call(func, merged)
        except Exception as e:
            self.logger.error("Error calling reward function %s: %s", _func_name(func), e)
            return 0.0

    async def score_rollout(self, prompt: Any, completion: Any, answer: Any = "", state: dict[str, Any] | None = None,
                            task: str = "default", info: Mapping[str, Any] | None = None,
                            example_id: int | None = None, **kwargs: Any) -> RolloutScore:
        """Score one rollout: ``.reward`` (weighted sum) and ``.metrics`` (score per function name).

        ``state["timing"]`` gets ``scoring_ms`` (and ``total_ms`` grows by it), created if absent."""
        t0 = time.time()
        state = state if state is not None else {}
        s = await self.score(prompt, completion, answer, info, task, state, example_id=example_id, **kwargs)
        timing = state.setdefault("timing", {"generation_ms": 0.0, "scoring_ms": 0.0, "total_ms": 0.0})
        timing["scoring_ms"] = (time.time() - t0) * 1000
        timing["total_ms"] = timing.get("total_ms", 0.0) + timing["scoring_ms"]
        return RolloutScore(reward=s.reward, metrics=dict(zip(self.get_reward_func_names(), s.scores.values(),
                                                              strict=True)), errors=dict(s.errors))

    async def score_group(self, states: list[dict[str, Any]], **kwargs: Any) -> None:
        """Hook for group-level scoring (voting, ranking); called before the rollouts are scored."""
        return None

    async def score_rollouts(self, prompts: Sequence[Any], completions: Sequence[Any], answers: Sequence[Any],
                             states: Sequence[dict[str, Any]], tasks: Sequence[str],
                             infos: Sequence[Mapping[str, Any]], example_ids: Sequence[int] | None = None,
                             max_concurrent: int = -1, use_tqdm: bool = True, **kwargs: Any) -> RolloutScores:
        """Score many rollouts concurrently (at most ``max_concurrent`` at once when > 0)."""
        example_ids = list(example_ids or range(len(prompts)))
        await self.score_group(list(states), prompts=prompts, completions=completions, answers=answers,
                               tasks=tasks, infos=infos, example_ids=example_ids, **kwargs)
        sem = asyncio.Semaphore(max_concurrent) if max_concurrent and max_concurrent > 0 else None

        async def one(p: Any, c: Any, a: Any, s: Any, t: str, i: Any, e: int) -> RolloutScore:
            if sem is None:
                return await self.score_rollout(p, c, a, s, t, i, e, **kwargs)
            async with sem:
                return await self.score_rollout(p, c, a, s, t, i, e, **kwargs)

        coros = [one(*row) for row in zip(prompts, completions, answers, states, tasks, infos, example_ids,
                                           strict=False)]
        if use_tqdm:
            from tqdm.asyncio import tqdm_asyncio

            scores = await tqdm_asyncio.gather(*coros, total=len(coros), desc=f"Evaluating {len(coros)} rollouts")
        else:
            scores = await asyncio.gather(*coros)
        if not scores:
            return RolloutScores(reward=[], metrics={n: [] for n in self.get_reward_func_names()})
        return RolloutScores(reward=[s.reward for s in scores],
                             metrics={k: [s.metrics[k] for s in scores] for k in scores[0].metrics})

    # ------------------------------------------------------------ verity API
    @property
    def funcs(self) -> list[Callable[..., Any]]:
        """Alias of :attr:`reward_funcs`."""
        return self.reward_funcs

    @property
    def weights(self) -> list[float]:
        """Alias of :attr:`reward_weights`."""
        return self.reward_weights

    @property
    def func_names(self) -> list[str]:
        """Function names made unique (``<lambda>``, ``<lambda>_2``): the keys of verity's per-rollout scores."""
        out: list[str] = []
        for name in self.get_reward_func_names():
            unique, k = name, 1
            while unique in out:
                k += 1
                unique = f"{name}_{k}"
            out.append(unique)
        return out

    def _merged(self, prompt: Any, completion: Any, answer: Any, state: Any, task: str,
                info: Mapping[str, Any] | None, example_id: int | None, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        common = dict(prompt=prompt, completion=completion, answer=answer, state=state, task=task,
                      info=info or {}, example_id=example_id)
        return {**common, **self.class_objects, **kwargs}

    async def _call(self, func: Callable[..., Any], merged: Mapping[str, Any]) -> float:
        out = func(**_call_args(func, merged))
        if inspect.isawaitable(out):
            out = await out
        if out is None:
            raise TypeError("returned None")
        return float(out)

    async def _call_recorded(self, func: Callable[..., Any], merged: Mapping[str, Any]) -> float | Exception:
        try:
            return await self._call(func, merged)
        except Exception as e:
            return e

    async def score(self, prompt: Any, completion: Any, answer: Any = "", info: Mapping[str, Any] | None = None,
                    task: str = "default", state: Any = None, example_id: int | None = None,
                    **kwargs: Any) -> RubricScore:
        """Score one rollout with every function; a function that raises scores 0 and is recorded
        in :attr:`RubricScore.errors` (``on_error="raise"``: :class:`RewardFunctionError`)."""
        merged = self._merged(prompt, completion, answer, state if state is not None else {}, task, info,
                              example_id, kwargs)
        funcs = list(self.reward_funcs)
        if self.parallelize_scoring:
            results = list(await asyncio.gather(*(self._call_recorded(f, merged) for f in funcs)))
        else:
            results = [await self._call_recorded(f, merged) for f in funcs]
        scores: dict[str, float] = {}
        errors: dict[str, str] = {}
        for name, res in zip(self.func_names, results, strict=True):
            if isinstance(res, Exception):
                if self.on_error == "raise":
                    raise RewardFunctionError(f"reward function {name!r} failed: {res!r}") from res
                errors[name] = f"{type(res).__name__}: {res}"
                res = 0.0
            scores[name] = res
        reward = sum([scores[n] * w for n, w in zip(scores, self.reward_weights, strict=False)])
        return RubricScore(scores=scores, reward=reward, errors=errors)
