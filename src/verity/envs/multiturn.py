"""``MultiTurnEnv``: environments that answer the model turn after turn (verifiers 0.1.x signatures).

Subclass it and implement::

    async def env_response(self, messages, state, **kwargs) -> tuple[messages, state]
    async def is_completed(self, messages, state, **kwargs) -> bool

(sync ``def`` works too). ``messages`` is the whole conversation so far (prompt + completion);
``state`` is the rollout's own dict (``prompt``, ``completion``, ``answer``, ``task``, ``info``,
``example_id``, ``rollout_idx``, ``turn``, ``responses``, ``stop_reason``, and whatever
:meth:`setup_state` adds); reward functions receive it as ``state``.

One rollout: sample a turn → ``is_completed``? stop : append ``env_response`` → next turn, up to
``max_turns`` model turns. At the turn limit the environment's last response is still appended,
so the reward sees it. Every turn is bounded (``max_tokens``, the context window, and
``env_timeout`` seconds for each hook), and a hook that raises or times out ends that rollout
with stop reason ``error`` — the other rollouts of the batch go on. The rollout loop itself is
:mod:`verity.envs.turns`, shared with single-turn environments, so eval and training take the
same path.

Differences from verifiers 0.1.6: ``max_turns <= 0`` means 100 turns, not unbounded; the turn
limit is enforced by the loop (a subclass's ``is_completed`` need not check it, and the last
environment response is applied at the limit); ``state["responses"]`` holds verity
:class:`~verity.types.Completion` objects rather than OpenAI ``ChatCompletion`` objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from verity.envs.base import Environment
from verity.envs.turns import rollout_one, run_rollouts
from verity.errors import ConfigError
from verity.types import Example, Messages, Rollout, SamplingArgs

if TYPE_CHECKING:
    from verity.rollout.sampler import Sampler

State = dict[str, Any]


class MultiTurnEnv(Environment):
    """Base class for multi-turn environments (see the module docstring)."""

    def __init__(self, max_turns: int = 10, env_timeout: float | None = 60.0, **kwargs: Any):
        if not isinstance(max_turns, int) or isinstance(max_turns, bool):
            raise ConfigError(f"max_turns must be an integer, got {max_turns!r}")
        if env_timeout is not None and env_timeout <= 0:
            raise ConfigError(f"env_timeout must be > 0 seconds (or None), got {env_timeout!r}")
        super().__init__(**kwargs)
        self.max_turns = max_turns
        self.env_timeout = env_timeout
        """Seconds each hook (setup_state, is_completed, env_response, teardown_state) may take."""

    async def setup_state(self, state: State, **kwargs: Any) -> State:
        """Prepare a rollout's state before its first turn (e.g. draw a secret, open a sandbox)."""
        return state

    async def teardown_state(self, state: State) -> None:
        """Release what :meth:`setup_state` acquired; called once per rollout after scoring."""

    async def is_completed(self, messages: Messages, state: State, **kwargs: Any) -> bool:
        """Whether the rollout is done after the model's latest turn (the turn limit is separate)."""
        return await self.prompt_too_long(state)

    async def env_response(self, messages: Messages, state: State, **kwargs: Any) -> tuple[Messages, State]:
        """The environment's reply to the model's latest turn: ``(new_messages, state)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement env_response(messages, state)")

    async def max_turns_reached(self, state: State) -> bool:
        """0.1.x helper: whether ``state['turn']`` reached ``max_turns``."""
        return self.max_turns > 0 and state.get("turn", 0) >= self.max_turns

    async def prompt_too_long(self, state: State) -> bool:
        return bool(state.get("prompt_too_long", False))

    async def rollout_batch(self, sampler: Sampler, jobs: Sequence[tuple[Example, int]],
                            args: SamplingArgs) -> list[Rollout]:
        """verity's eval/train path: generate and score one rollout per ``(example, rollout_idx)`` job."""
        return await run_rollouts(self, sampler, jobs, args)

    async def rollout(self, client: Any, model: str, prompt: Any, completion: Any = None, answer: str = "",
                      state: dict[str, Any] | None = None, task: str = "default", info: Any = None,
                      example_id: int = 0, sampling_args: Any = None, **kwargs: Any) -> tuple[Any, State]:
        """verifiers 0.1.x: one unscored rollout of ``prompt`` -> ``(completion, state)``."""
        ex = Example(id=example_id, prompt=prompt if isinstance(prompt, str) else tuple(prompt), answer=answer,
                     info=dict(info or {}), task=task)
        return await rollout_one(self, self.get_sampler(client, model), ex, self._compat_args(sampling_args))
