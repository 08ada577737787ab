"""Environments: dataset + prompt format + parser + rubric, with the verifiers 0.1.x API.

Two ways to run an environment:

* verity's batch path, :meth:`Environment.rollout_batch` ``(sampler, jobs, args) -> [Rollout]``:
  the only code that turns examples into scored :class:`~verity.types.Rollout` records for
  ``verity eval``, ``verity train`` and ``verity compare`` (samplers, token ids, log-probs,
  per-rollout error accounting);
* the verifiers 0.1.x API: :meth:`Environment.rollout` ``(client, model, prompt, ...) ->
  (completion, state)``, :meth:`Environment.generate` / ``a_generate`` / ``generate_sync``
  (see :mod:`verity.envs.generate`), ``get_dataset``, ``format_dataset``, ``init_state``…

``client`` may be an ``openai.AsyncOpenAI``/``OpenAI`` client or any verity sampler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from verity.envs.dataset import examples_from_dataset
from verity.envs.generate import GenerateMixin
from verity.errors import ConfigError, ConfigValueError
from verity.parsers.base import Parser
from verity.rubrics.rubric import Rubric
from verity.types import Completion, Example, Message, Rollout, SamplingArgs
from verity.utils import run_sync

if TYPE_CHECKING:
    from verity.eval.evaluate import EvalResults
    from verity.rollout.sampler import Sampler

MESSAGE_TYPES = ("chat", "completion")


class Environment(GenerateMixin):
    """Base environment (the verifiers 0.1.x constructor). Subclasses define how a rollout talks to the model.

    Extra keyword arguments become attributes, as in verifiers (``SingleTurnEnv(..., client=c, model="m")``).
    """

    def __init__(
        self,
        dataset: Any = None,
        eval_dataset: Any = None,
        system_prompt: str | None = None,
        few_shot: Sequence[Message] | None = None,
        parser: Parser | None = None,
        rubric: Rubric | None = None,
        sampling_args: Mapping[str, Any] | None = None,
        message_type: str = "chat",
        oai_tools: list[dict[str, Any]] | None = None,
        max_workers: int = 512,
        env_id: str | None = None,
        env_args: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        self.logger = logging.getLogger(f"verity.envs.{type(self).__name__}")
        if message_type not in MESSAGE_TYPES:
            raise ConfigValueError(f"message_type={message_type!r}: expected 'chat' or 'completion'")
        if message_type == "completion" and (system_prompt or few_shot):
            raise ConfigValueError('system_prompt and few_shot are not supported with message_type="completion"; '
                                   'use message_type="chat", or put them into the dataset\'s "prompt" column')
        if dataset is None and eval_dataset is None:
            raise ConfigValueError("an environment needs a dataset or an eval_dataset")
        self.message_type = message_type
        self.oai_tools = oai_tools
        self.system_prompt = system_prompt
        self.few_shot = list(few_shot) if few_shot is not None else None
        self.parser = parser or Parser()
        self.rubric = rubric or Rubric()
        if type(self.parser) is not type(self.rubric.parser):
            self.logger.warning("The parser and rubric parser are different. This may cause unexpected behavior.")
        self.sampling_args: dict[str, Any] = dict(sampling_args or {})
        self.max_workers = max_workers
        self.env_id: str = env_id or type(self).__name__
        self.env_args: dict[str, Any] = dict(env_args or {})
        self.rollouts_per_example: int | None = None
        self._raw = {"train": dataset, "eval": eval_dataset}
        self._formatted: dict[str, Any] = {}
        self._examples: dict[tuple[str, int], list[Example]] = {}
        self._samplers: dict[tuple[int, str], Any] = {}
        for key, value in kwargs.items():
            setattr(self, key, value)
        # Check columns and the first row eagerly so a bad dataset fails at load time;
        # rows are fully validated when a split is first used.
        for split in ("train", "eval"):
            if self._raw[split] is not None:
                self.get_examples(split, 1)

    # ------------------------------------------------------------ datasets
    def _get_split(self, split: str) -> Any:
        if split not in self._formatted:
            raw = self._raw[split]
            chat = self.message_type == "chat" and raw is not None and hasattr(raw, "map")
            self._formatted[split] = self.format_dataset(raw, self.system_prompt, self.few_shot) if chat else raw
        return self._formatted[split]

    def _set_split(self, split: str, value: Any) -> None:
        self._raw[split] = value
        self._formatted.pop(split, None)
        self._examples = {k: v for k, v in self._examples.items() if k[0] != split}

    dataset = property(lambda self: self._get_split("train"), lambda self, v: self._set_split("train", v),
                       doc="The training split, with ``prompt`` and ``example_id`` columns in chat mode.")
    eval_dataset = property(lambda self: self._get_split("eval"), lambda self, v: self._set_split("eval", v),
                            doc="The eval split, formatted like :attr:`dataset`.")

    def format_prompt(self, prompt_str: str, system_prompt: str | None = None,
                      few_shot: Sequence[Message] | None = None) -> list[Message]:
        """``[system, *few_shot, user]`` chat messages for one question."""
        messages: list[Message] = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        messages.extend(few_shot or [])
        messages.append({"role": "user", "content": prompt_str})
        return messages

    def format_dataset(self, dataset: Any, system_prompt: str | None = None, few_shot: Sequence[Message] | None = None,
                       question_key: str = "question", answer_key: str = "answer") -> Any:
        """Add ``example_id`` (row index) and ``prompt`` (chat messages) columns when absent."""
        if "example_id" in dataset.column_names and not isinstance(dataset["example_id"][0], int):
            dataset = dataset.rename_column("example_id", "src_id")
        if "example_id" not in dataset.column_names:
            dataset = dataset.add_column("example_id", range(len(dataset)))
        if "prompt" not in dataset.column_names:
            fmt, shots = self.format_prompt, list(few_shot or [])

            def add_prompt(x: dict[str, Any]) -> dict[str, Any]:
                out = {"prompt": fmt(x[question_key], system_prompt, shots)}
                if answer_key != "answer":
                    out["answer"] = x[answer_key]
                return out

            dataset = dataset.map(add_prompt)
        return dataset

    def get_dataset(self, n: int = -1, seed: int | None = None) -> Any:
        """The training split (first ``n`` rows when n > 0; shuffled in place first when ``seed`` is given)."""
        if self._raw["train"] is None:
            raise ConfigValueError("dataset is not set")
        return self._take("train", n, seed)

    def get_eval_dataset(self, n: int = -1, seed: int | None = None) -> Any:
        """The eval split, or the training split when there is none."""
        if self._raw["eval"] is None:
            self.logger.warning("eval_dataset is not set, falling back to train dataset")
            return self.get_dataset(n, seed)
        return self._take("eval", n, seed)

    def _take(self, split: str, n: int, seed: int | None) -> Any:
        if seed is not None:
            self._set_split(split, self._raw[split].shuffle(seed=seed))
        ds = self._get_split(split)
        return ds.select(range(min(n, len(ds)))) if n > 0 else ds

    def get_examples(self, split: str = "eval", n: int = -1) -> list[Example]:
        """verity: the first ``n`` examples (all if n < 0) of a split, validated; eval falls back to train."""
        if split not in ("train", "eval"):
            raise ConfigError(f"unknown split {split!r} (train|eval)")
        if self._raw[split] is None:
            split = "train" if split == "eval" else "eval"
        ds = self._raw[split]
        n = -1 if n is None or n < 0 or n >= len(ds) else n
        full = self._examples.get((split, -1))
        if full is not None:
            return full if n < 0 else full[:n]
        if (split, n) not in self._examples:
            self._examples[(split, n)] = examples_from_dataset(
                ds, split, self.system_prompt, self.few_shot, limit=n, message_type=self.message_type)
        return self._examples[(split, n)]

    def get_reward_funcs(self) -> list[Any]:
        return self.rubric.get_reward_funcs()

    def get_reward_weights(self) -> list[float]:
        return self.rubric.get_reward_weights()

    def require_rubric(self) -> Rubric:
        """verity: the rubric, or a one-line error when it has no reward functions (eval/train need some)."""
        if self.rubric is None or not self.rubric.reward_funcs:
            raise ConfigError(f"environment {self.env_id!r} has no rubric (no reward functions)")
        return self.rubric

    # ------------------------------------------------------------ verity's batch path
    async def rollout_batch(self, sampler: Sampler, jobs: Sequence[tuple[Example, int]],
                            args: SamplingArgs) -> list[Rollout]:
        """Generate and score one rollout per ``(example, rollout_idx)`` job (verity's eval/train path)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement rollout_batch")

    async def score(self, example: Example, rollout_idx: int, completion: Completion,
                    messages: tuple[Message, ...] | str, state: Mapping[str, Any] | None = None) -> Rollout:
        """Score a finished completion with the rubric and package it as a :class:`Rollout`."""
        rubric = self.require_rubric()
        if completion.error is not None:
            scores = {n: 0.0 for n in rubric.func_names}
            return _rollout(example, rollout_idx, completion, messages, scores, 0.0, {})
        prompt = example.prompt if isinstance(example.prompt, str) else list(example.prompt)
        s = await rubric.score(
            prompt=prompt, completion=messages if isinstance(messages, str) else list(messages),
            answer=example.answer, info=dict(example.info), task=example.task,
            state=dict(state) if state is not None else {}, example_id=example.id,
        )
        return _rollout(example, rollout_idx, completion, messages, s.scores, s.reward, s.errors)

    def evaluate(self, model: Any, num_examples: int = 5, rollouts_per_example: int = 3,
                 sampling_args: Mapping[str, Any] | SamplingArgs | None = None, **kwargs: Any) -> EvalResults:
        """verity: evaluate ``model`` here — a model path/hub id, a :class:`Sampler`, or an (async) OpenAI
        client with ``model_name=``. Synchronous, works inside Jupyter. Extra kwargs go to
        :func:`verity.eval.evaluate`. (verifiers' async ``evaluate(client, model)`` is :meth:`generate`.)"""
        from verity.eval.evaluate import evaluate
        from verity.rollout.sampler import make_sampler

        sampler = make_sampler(model, model_name=kwargs.pop("model_name", None))
        return run_sync(evaluate(self, sampler, num_examples, rollouts_per_example, sampling_args, **kwargs))

    # ------------------------------------------------------------ verifiers 0.1.x rollout API
    def get_sampler(self, client: Any, model: str) -> Sampler:
        """The sampler behind ``rollout(client, model, …)``: an OpenAI client (sync or async) wrapped
        once per (client, model), or a verity sampler used as is."""
        from verity.rollout.sampler import Sampler, make_sampler

        if isinstance(client, Sampler) and not isinstance(client, str):
            return client
        key = (id(client), model)
        if key not in self._samplers:
            import openai

            if isinstance(client, openai.OpenAI):
                client = openai.AsyncOpenAI(api_key=client.api_key, base_url=client.base_url)
            self._samplers[key] = make_sampler(client, model_name=model)
        return self._samplers[key]

    async def init_completion(self) -> list[Message] | str:
        return [] if self.message_type == "chat" else ""

    async def init_state(self, prompt: Any, completion: Any, answer: str, task: str, info: Mapping[str, Any],
                         example_id: int, **kwargs: Any) -> dict[str, Any]:
        """The per-rollout state dict of verifiers 0.1.x (``responses`` holds verity :class:`Completion` records)."""
        return {"prompt": prompt, "completion": completion, "answer": answer, "task": task, "info": info,
                "example_id": example_id, "responses": [], "turn": 0,
                "timing": {"generation_ms": 0.0, "scoring_ms": 0.0, "total_ms": 0.0}}

    async def rollout(self, client: Any, model: str, prompt: Any, completion: Any = None, answer: str = "",
                      state: dict[str, Any] | None = None, task: str = "default", info: Mapping[str, Any] | None = None,
                      example_id: int = 0, sampling_args: Mapping[str, Any] | None = None,
                      **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Run one rollout for ``prompt`` and return ``(completion, state)`` (verifiers 0.1.x)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement rollout")

    def _compat_args(self, sampling_args: Mapping[str, Any] | None) -> SamplingArgs:
        from verity.eval.evaluate import sampling_args_from

        merged = {k: v for k, v in {**self.sampling_args, **(sampling_args or {})}.items()
                  if k not in ("n", "extra_body")}
        extra_body = {**self.sampling_args.get("extra_body", {}), **(sampling_args or {}).get("extra_body", {})}
        merged.update(extra_body)  # verity's samplers take extras flat
        return sampling_args_from(merged)


def _rollout(example: Example, idx: int, c: Completion, messages: tuple[Message, ...] | str,
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
    """One prompt, one model answer, scored by the rubric (chat messages or, with
    ``message_type="completion"``, plain text)."""

    def _as_completion(self, text: str) -> tuple[Message, ...] | str:
        return ({"role": "assistant", "content": text},) if self.message_type == "chat" else text

    async def rollout_batch(self, sampler: Sampler, jobs: Sequence[tuple[Example, int]],
                            args: SamplingArgs) -> list[Rollout]:
        """All jobs go to the sampler in one batch, then each completion is scored."""
        prompts = [ex.prompt if isinstance(ex.prompt, str) else list(ex.prompt) for ex, _ in jobs]
        completions = await sampler.generate(prompts, args)
        scored = []
        for (ex, idx), prompt, c in zip(jobs, prompts, completions, strict=False):
            messages = self._as_completion(c.text)
            state = await self.init_state(prompt, messages, ex.answer, ex.task, dict(ex.info), ex.id)
            state.update(responses=[c], turn=1)
            scored.append(self.score(ex, idx, c, messages, state))
        return list(await asyncio.gather(*scored))

    async def rollout(self, client: Any, model: str, prompt: Any, completion: Any = None, answer: str = "",
                      state: dict[str, Any] | None = None, task: str = "default", info: Mapping[str, Any] | None = None,
                      example_id: int = 0, sampling_args: Mapping[str, Any] | None = None,
                      **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """One model call for ``prompt`` (messages, or text in completion mode) -> ``(completion, state)``.

        A failed request does not raise (verity): ``state["error"]`` holds the message and the
        completion gets an empty answer."""
        completion = completion if completion is not None else await self.init_completion()
        state = state or await self.init_state(prompt, completion, answer, task, dict(info or {}), example_id)
        t0 = time.time()
        [c] = await self.get_sampler(client, model).generate([prompt], self._compat_args(sampling_args))
        state["responses"].append(c)
        if c.error is not None:
            state["error"] = c.error
        if self.message_type == "chat":
            state["completion"].append({"role": "assistant", "content": c.text})
        else:
            state["completion"] += c.text
        state["turn"] += 1
        elapsed = (time.time() - t0) * 1000
        state["timing"]["generation_ms"] = elapsed
        state["timing"]["total_ms"] = elapsed
        return state["completion"], state
