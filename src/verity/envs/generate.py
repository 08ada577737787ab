"""``Environment.generate`` / ``a_generate`` / ``generate_sync``: the verifiers 0.1.x batch API.

Each input row goes through :meth:`Environment.rollout` (client + model) and then
:meth:`Rubric.score_rollout`; the result is a :class:`~verity.types.GenerateOutputs` with the
verifiers columns (``prompt, completion, answer, state, task, info, example_id, reward, metrics``).
verity's own eval/train path is :meth:`Environment.rollout_batch` (samplers, token ids, files).
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from verity.errors import ConfigValueError
from verity.types import GenerateOutputs

if TYPE_CHECKING:
    from verity.rubrics.rubric import Rubric
    from verity.types import Message


def _columns(inputs: Any) -> dict[str, list[Any]]:
    """Input columns as lists (a ``datasets.Dataset``, a dict of columns, or an object with ``model_dump``)."""
    if hasattr(inputs, "model_dump"):
        inputs = inputs.model_dump()
    if hasattr(inputs, "column_names"):
        cols = {c: list(inputs[c]) for c in inputs.column_names}
    elif isinstance(inputs, Mapping):
        cols = {c: copy.deepcopy(list(v)) for c, v in inputs.items() if v is not None}
    else:
        raise ConfigValueError(f"generate: inputs must be a Dataset or a dict of columns, got {type(inputs).__name__}")
    if "prompt" not in cols:
        raise ConfigValueError("generate: prompt column not found in inputs")
    n = len(cols["prompt"])
    if "example_id" not in cols and "id" in cols:
        cols["example_id"] = list(cols["id"])
    defaults: dict[str, Any] = {"answer": "", "task": "default"}
    for key, value in defaults.items():
        cols[key] = cols.get(key) or [value] * n
    cols["info"] = [json.loads(i) if isinstance(i, str) else dict(i or {}) for i in (cols.get("info") or [{}] * n)]
    cols["example_id"] = cols.get("example_id") or list(range(n))
    return cols


def _limiter(limit: int | None) -> asyncio.Semaphore | None:
    return asyncio.Semaphore(limit) if limit and limit > 0 else None


async def _limited(sem: asyncio.Semaphore | None, coro: Any) -> Any:
    if sem is None:
        return await coro
    async with sem:
        return await coro


class GenerateMixin:
    """``generate``/``a_generate``/``generate_sync`` for :class:`~verity.envs.base.Environment`."""

    # What the mixin uses of Environment (set in Environment.__init__ / defined there).
    rubric: Rubric
    env_id: str
    env_args: dict[str, Any]
    sampling_args: dict[str, Any]

    if TYPE_CHECKING:
        async def init_completion(self) -> list[Message] | str: ...

        async def init_state(self, prompt: Any, completion: Any, answer: str, task: str, info: Mapping[str, Any],
                             example_id: int, **kwargs: Any) -> dict[str, Any]: ...

        async def rollout(self, client: Any, model: str, prompt: Any, completion: Any = None, answer: str = "",
                          state: dict[str, Any] | None = None, task: str = "default",
                          info: Mapping[str, Any] | None = None, example_id: int = 0,
                          sampling_args: Mapping[str, Any] | None = None,
                          **kwargs: Any) -> tuple[Any, dict[str, Any]]: ...

    async def generate(self, inputs: Any, client: Any, model: str, sampling_args: Mapping[str, Any] | None = None,
                       num_examples: int | None = None, rollouts_per_example: int | None = None,
                       score_rollouts: bool = True, max_concurrent: int = -1,
                       max_concurrent_generation: int | None = None, max_concurrent_scoring: int | None = None,
                       interleave_scoring: bool = True, results_path: Any = None,
                       state_columns: list[str] | None = None, save_every: int = -1, use_tqdm: bool = True,
                       **kwargs: Any) -> GenerateOutputs:
        """Roll out and score every input row; returns the verifiers columns plus ``metadata``.

        ``interleave_scoring`` is accepted for compatibility (rollouts are always scored as they
        finish; the numbers are the same). Saving while generating (``save_every > 0``) is not
        done here: use ``verity eval -o DIR``, which writes results.jsonl as rollouts finish."""
        if save_every > 0:
            raise ConfigValueError("generate(save_every>0) is not supported by verity; use `verity eval -o DIR`, "
                                   "which writes results.jsonl incrementally")
        t0 = time.time()
        cols = _columns(inputs)
        n = len(cols["prompt"])
        completions = [await self.init_completion() for _ in range(n)]
        states = [await self.init_state(cols["prompt"][i], completions[i], cols["answer"][i], cols["task"][i],
                                        cols["info"][i], cols["example_id"][i]) for i in range(n)]
        names = self.rubric.get_reward_func_names()
        reward, metrics = [0.0] * n, {name: [0.0] * n for name in names}
        gen_sem = _limiter(max_concurrent if max_concurrent_generation is None else max_concurrent_generation)
        score_sem = _limiter(max_concurrent if max_concurrent_scoring is None else max_concurrent_scoring)

        async def one(i: int) -> None:
            row = (cols["prompt"][i], completions[i], cols["answer"][i], states[i], cols["task"][i],
                   cols["info"][i], cols["example_id"][i])
            completions[i], states[i] = await _limited(
                gen_sem, self.rollout(client, model, *row, sampling_args, **kwargs))
            if score_rollouts:
                rs = await _limited(score_sem, self.rubric.score_rollout(
                    row[0], completions[i], row[2], states[i], row[4], row[5], row[6], **kwargs))
                reward[i] = rs.reward
                for k, v in rs.metrics.items():
                    metrics.setdefault(k, [0.0] * n)[i] = v

        if use_tqdm:
            from tqdm.asyncio import tqdm_asyncio

            await tqdm_asyncio.gather(*(one(i) for i in range(n)), total=n, desc=f"Running {n} rollouts")
        else:
            await asyncio.gather(*(one(i) for i in range(n)))
        num_ex = num_examples or len(set(cols["example_id"])) or 1
        metadata = {
            "env_id": self.env_id, "env_args": self.env_args, "model": model,
            "base_url": str(getattr(client, "base_url", "")), "num_examples": num_ex,
            "rollouts_per_example": rollouts_per_example or max(1, n // num_ex),
            "sampling_args": {**self.sampling_args, **(sampling_args or {})},
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "time_ms": (time.time() - t0) * 1000,
            "avg_reward": sum(reward) / n if n and score_rollouts else 0.0,
            "avg_metrics": {k: sum(v) / n for k, v in metrics.items()} if n and score_rollouts else {},
            "state_columns": list(state_columns or []),
        }
        return GenerateOutputs(
            prompt=cols["prompt"], completion=completions, answer=cols["answer"], state=states, task=cols["task"],
            info=cols["info"], example_id=cols["example_id"], reward=reward if score_rollouts else [],
            metrics=metrics if score_rollouts else {}, metadata=metadata)

    async def a_generate(self, *args: Any, **kwargs: Any) -> GenerateOutputs:
        """Alias of :meth:`generate` (verifiers 0.1.x)."""
        return await self.generate(*args, **kwargs)

    def generate_sync(self, inputs: Any, client: Any, model: str, **kwargs: Any) -> GenerateOutputs:
        """:meth:`generate` from synchronous code (also inside Jupyter's running loop)."""
        from verity.utils import run_sync

        return run_sync(self.generate(inputs, client=client, model=model, **kwargs))
