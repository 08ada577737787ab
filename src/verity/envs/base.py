"""Environments: dataset + prompt format + parser + rubric, and the one rollout path.

:meth:`Environment.rollout` is the only code that turns examples into scored
:class:`~verity.types.Rollout` records; ``verity eval``, ``verity train`` and ``verity compare``
all call it. Multi-turn environments override :meth:`Environment.rollout` and keep the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from verity.envs.dataset import examples_from_dataset
from verity.errors import ConfigError
from verity.parsers.base import Parser
from verity.rubrics.rubric import Rubric
from verity.types import Completion, Example, Message, Rollout, SamplingArgs
from verity.utils import run_sync

if TYPE_CHECKING:
    from verity.eval.evaluate import EvalResults
    from verity.rollout.sampler import Sampler


class Environment:
    """Base environment. Subclasses define how a rollout talks to the model."""

    def __init__(
        self,
        dataset: Any = None,
        eval_dataset: Any = None,
        system_prompt: str | None = None,
        parser: Parser | None = None,
        rubric: Rubric | None = None,
        few_shot: Sequence[Message] | None = None,
        sampling_args: Mapping[str, Any] | None = None,
    ):
        if dataset is None and eval_dataset is None:
            raise ConfigError("an environment needs a dataset or an eval_dataset")
        self.dataset = dataset
        self.eval_dataset = eval_dataset
        self.system_prompt = system_prompt
        self.parser = parser or Parser()
        self.rubric = rubric
        self.few_shot = list(few_shot or [])
        self.sampling_args = dict(sampling_args or {})
        self.env_id: str = type(self).__name__
        self.env_args: dict[str, Any] = {}
        # Check columns and the first row eagerly so a bad dataset fails at load time;
        # rows are fully validated when a split is first used.
        self._examples: dict[tuple[str, int], list[Example]] = {}
        for split in ("train", "eval"):
            if self._split(split) is not None:
                self.get_examples(split, 1)

    def _split(self, split: str) -> Any:
        if split not in ("train", "eval"):
            raise ConfigError(f"unknown split {split!r} (train|eval)")
        return self.dataset if split == "train" else self.eval_dataset

    def get_examples(self, split: str = "eval", n: int = -1) -> list[Example]:
        """The first ``n`` examples (all if n < 0) of a split; eval falls back to train."""
        ds = self._split(split)
        if ds is None:
            split, ds = ("train", self.dataset) if split == "eval" else ("eval", self.eval_dataset)
        n = -1 if n is None or n < 0 or n >= len(ds) else n
        full = self._examples.get((split, -1))
        if full is not None:
            return full if n < 0 else full[:n]
        if (split, n) not in self._examples:
            self._examples[(split, n)] = examples_from_dataset(
                ds, split, self.system_prompt, self.few_shot, limit=n)
        return self._examples[(split, n)]

    def require_rubric(self) -> Rubric:
        if self.rubric is None or not self.rubric.funcs:
            raise ConfigError(f"environment {self.env_id!r} has no rubric (no reward functions)")
        return self.rubric

    async def rollout(
        self, sampler: Sampler, jobs: Sequence[tuple[Example, int]], args: SamplingArgs
    ) -> list[Rollout]:
        """Generate and score one rollout per ``(example, rollout_idx)`` job."""
        raise NotImplementedError

    async def score(self, example: Example, rollout_idx: int, completion: Completion,
                    messages: tuple[Message, ...], state: Mapping[str, Any] | None = None) -> Rollout:
        """Score a finished completion with the rubric and package it as a :class:`Rollout`."""
        rubric = self.require_rubric()
        if completion.error is not None:
            scores = {n: 0.0 for n in rubric.func_names}
            return _rollout(example, rollout_idx, completion, messages, scores, 0.0, {})
        s = await rubric.score(
            prompt=list(example.prompt), completion=list(messages), answer=example.answer,
            info=example.info, task=example.task, state=state,
        )
        return _rollout(example, rollout_idx, completion, messages, s.scores, s.reward, s.errors)

    def evaluate(self, model: Any, num_examples: int = 5, rollouts_per_example: int = 3,
                 sampling_args: Mapping[str, Any] | SamplingArgs | None = None, **kwargs: Any) -> EvalResults:
        """Evaluate ``model`` here: a model path/hub id, a :class:`Sampler`, or an (async) OpenAI
        client with ``model_name=``. Works inside Jupyter. Extra kwargs go to :func:`verity.eval.evaluate`."""
        from verity.eval.evaluate import evaluate
        from verity.rollout.sampler import make_sampler

        sampler = make_sampler(model, model_name=kwargs.pop("model_name", None))
        return run_sync(evaluate(self, sampler, num_examples, rollouts_per_example, sampling_args, **kwargs))


def _rollout(example: Example, idx: int, c: Completion, messages: tuple[Message, ...],
             scores: Mapping[str, float], reward: float, errors: Mapping[str, str]) -> Rollout:
    return Rollout(
        example_id=example.id, rollout_idx=idx, prompt=example.prompt, completion=messages,
        answer=example.answer, info=example.info, task=example.task, scores=dict(scores),
        reward=reward, reward_errors=dict(errors), prompt_ids=c.prompt_ids,
        completion_ids=c.completion_ids, completion_logprobs=c.logprobs,
        completion_mask=(1,) * len(c.completion_ids), finish_reason=c.finish_reason,
        latency_s=c.latency_s, error=c.error, usage_tokens=int(c.usage.get("completion_tokens", 0) or 0),
    )


class SingleTurnEnv(Environment):
    """One prompt, one model answer, scored by the rubric. All jobs go to the sampler in one batch."""

    async def rollout(
        self, sampler: Sampler, jobs: Sequence[tuple[Example, int]], args: SamplingArgs
    ) -> list[Rollout]:
        completions = await sampler.generate([list(ex.prompt) for ex, _ in jobs], args)
        scored = [
            self.score(ex, idx, c, ({"role": "assistant", "content": c.text},))
            for (ex, idx), c in zip(jobs, completions, strict=False)
        ]
        return list(await asyncio.gather(*scored))
