"""Typed records that cross a stage boundary in verity's data flow.

dataset row -> :class:`Example` -> sampler -> :class:`Completion` -> rubric -> :class:`Rollout`
-> :class:`Group` (rollouts of one example) -> :class:`Batch` (tensors for the learner).

Every object here is a frozen dataclass: stages hand them on, never mutate them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from typing_extensions import Required  # typing.Required from Python 3.11; typing_extensions comes with torch

if TYPE_CHECKING:
    import torch

#: Weights dtype of a model run in-process (auto = bf16 on hardware that is fast at it).
DType = Literal["auto", "bf16", "fp16", "fp32"]
#: Compute dtype of training (weights stay fp32; bf16 is autocast).
TrainDType = Literal["auto", "bf16", "fp32"]
#: A reward function that raises: score 0 and count it (zero), or abort (raise).
RewardErrorPolicy = Literal["zero", "raise"]
#: A group whose rewards spread by at most this much has no group-relative learning signal.
ZERO_STD_TOL = 1e-8


class Message(TypedDict, total=False):
    """One OpenAI-style chat message (every message has a role; the other keys depend on it)."""

    role: Required[str]
    content: str
    tool_calls: list[dict[str, Any]]
    tool_call_id: str
    name: str


Messages = list[Message]
#: A prompt or completion is either chat messages or plain text (completion-style models).
ChatOrText = Messages | str


@dataclass(frozen=True)
class Example:
    """One dataset row, validated and ready to prompt a model."""

    id: int
    """Row index in the split it came from (stable across runs with the same env args)."""
    prompt: tuple[Message, ...] | str
    """Chat messages sent to the model (system prompt, few-shot and question already applied);
    plain text for a completion-mode (``message_type="completion"``) environment."""
    answer: str = ""
    """Reference answer the rubric may compare against ('' when the dataset has none)."""
    info: Mapping[str, Any] = field(default_factory=dict)
    """Free-form per-row metadata for reward functions (e.g. ``{"pii_count": 3}``)."""
    task: str = "default"
    """Task tag, used to route rows of mixed datasets."""


@dataclass(frozen=True)
class SamplingArgs:
    """How to sample one completion; the same fields for local models and API endpoints."""

    max_tokens: int = 512
    """Maximum number of completion tokens."""
    temperature: float = 1.0
    """Softmax temperature (0 = greedy)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    stop: tuple[str, ...] = ()
    """Stop strings; generation ends when one appears (it is kept out of the text)."""
    seed: int | None = None
    """Sampling seed; with a seed, local sampling is reproducible."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Backend-specific extras passed through to the endpoint (e.g. ``{"reasoning_effort": "low"}``)."""

    top_logprobs: int = 0
    """Also return the ``top_logprobs`` most likely tokens at each position (local backends)."""

    def __post_init__(self) -> None:
        check_sampling(self.max_tokens, self.temperature, self.top_p)
        if isinstance(self.top_logprobs, bool) or not isinstance(self.top_logprobs, int) or self.top_logprobs < 0:
            from verity.errors import ConfigError

            raise ConfigError(f"top_logprobs {self.top_logprobs!r}: must be an integer >= 0")

    def replace(self, **kw: Any) -> SamplingArgs:
        from dataclasses import replace

        return replace(self, **kw)


def check_sampling(max_tokens: Any = None, temperature: Any = None, top_p: Any = None,
                   names: Mapping[str, str] | None = None) -> None:
    """The one check of sampling values, shared by every entry point (None = not set here).

    ``max_tokens`` an integer >= 1, ``temperature`` a finite number >= 0 (0 = greedy), ``top_p``
    in (0, 1]. Raises :class:`~verity.errors.ConfigError` naming the value as ``names`` calls it
    (a CLI passes its flags, e.g. ``{"top_p": "--top-p"}``). The context window is checked where
    the prompt is known: :func:`check_context`.
    """
    import math

    from verity.errors import ConfigError

    def name(key: str) -> str:
        return (names or {}).get(key, key)

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(f"{name('max_tokens')} {max_tokens!r}: must be an integer >= 1")
    if temperature is not None and not (number(temperature) and temperature >= 0):
        raise ConfigError(f"{name('temperature')} {temperature!r}: must be a number >= 0 (0 = greedy)")
    if top_p is not None and not (number(top_p) and 0 < top_p <= 1):
        raise ConfigError(f"{name('top_p')} {top_p!r}: must be in (0, 1] (1 = no nucleus cut)")


def check_context(prompt_tokens: int, max_tokens: int, context: int | None, name: str = "max_tokens") -> None:
    """Raise :class:`~verity.errors.ContextLengthError` when a prompt of ``prompt_tokens`` plus
    ``max_tokens`` completion tokens does not fit the model's ``context`` (None = unknown)."""
    from verity.errors import ContextLengthError

    if context is not None and prompt_tokens + max_tokens > context:
        raise ContextLengthError(prompt_tokens, max_tokens, context, name)


FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class Completion:
    """What a sampler returns for one prompt: text, and tokens + log-probs when the backend has them."""

    text: str
    """Decoded completion text."""
    finish_reason: FinishReason = "stop"
    """'stop' (EOS or stop string), 'length' (hit max_tokens) or 'error'."""
    prompt_ids: tuple[int, ...] = ()
    """Token ids of the rendered prompt (empty for API backends)."""
    completion_ids: tuple[int, ...] = ()
    """Sampled token ids (empty for API backends that do not return them)."""
    logprobs: tuple[float, ...] = ()
    """Sampling-policy log-prob of each completion token (same length as completion_ids)."""
    latency_s: float = 0.0
    """Wall time to produce this completion (shared by a batch on local backends)."""
    error: str | None = None
    """Error message when the request failed (finish_reason == 'error')."""
    usage: Mapping[str, int] = field(default_factory=dict)
    """Token counts reported by the backend: prompt_tokens, completion_tokens."""
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...] = ()
    """Per completion token, the ``SamplingArgs.top_logprobs`` most likely ``(token id, log-prob)``
    pairs, most likely first, under the same distribution as ``logprobs`` (empty unless asked for)."""
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    """OpenAI-shaped tool calls an endpoint returned (``{"id", "type", "function": {"name", "arguments"}}``)."""


StopReason = Literal["completed", "max_turns", "max_tokens", "context", "error"]
"""Why a rollout ended: the env said done, the turn limit, the last turn was cut off by
max_tokens, the context window is full, or an error (generation, an env hook)."""


@dataclass(frozen=True)
class Turn:
    """One model turn of a rollout: where its sampled tokens sit and what followed it.

    ``completion_ids[start:start + num_sampled]`` are the tokens the model sampled this turn
    (mask 1); the tokens after them up to the next turn's ``start`` were inserted by the
    environment and the chat template (mask 0). The model saw ``prompt_ids +
    completion_ids[:start]`` as its context for this turn.
    """

    index: int
    start: int
    """Offset of this turn's first sampled token in the rollout's ``completion_ids``."""
    num_sampled: int
    message_index: int
    """Index of this turn's assistant message in the rollout's ``completion`` messages."""
    num_env_messages: int
    """Environment messages appended after this turn (0 after the last one unless the turn limit hit)."""
    finish_reason: FinishReason
    latency_s: float = 0.0


@dataclass(frozen=True)
class Rollout:
    """One scored attempt at one example: the unit written to results.jsonl and fed to training."""

    example_id: int
    rollout_idx: int
    prompt: tuple[Message, ...] | str
    completion: tuple[Message, ...] | str
    """Assistant (and, for multi-turn envs, environment) messages after the prompt; the completion
    text for a completion-mode environment."""
    answer: str
    info: Mapping[str, Any]
    task: str
    scores: Mapping[str, float]
    """Each reward function's score by name (weight-0 metrics included)."""
    reward: float
    """Weighted sum of the scores."""
    reward_errors: Mapping[str, str] = field(default_factory=dict)
    """Reward functions that raised: name -> error message. Their score counts as 0."""
    prompt_ids: tuple[int, ...] = ()
    completion_ids: tuple[int, ...] = ()
    completion_logprobs: tuple[float, ...] = ()
    completion_mask: tuple[int, ...] = ()
    """1 for model-sampled tokens that enter the loss, 0 for env-inserted tokens (multi-turn)."""
    finish_reason: FinishReason = "stop"
    latency_s: float = 0.0
    error: str | None = None
    """Generation error (the rollout then scores 0 and is excluded from training)."""
    usage_tokens: int = 0
    """Completion tokens reported by an API backend that returns no token ids."""
    stop_reason: StopReason = "completed"
    turns: tuple[Turn, ...] = ()
    """Per-turn records (one for a single-turn rollout)."""

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @property
    def num_completion_tokens(self) -> int:
        """Tokens the model generated (env-inserted tokens of multi-turn rollouts not counted)."""
        if self.completion_mask:
            return sum(self.completion_mask)
        return len(self.completion_ids) or self.usage_tokens

    def to_record(self) -> dict[str, Any]:
        """JSON-serialisable record for results.jsonl (no token ids)."""
        return {
            "example_id": self.example_id,
            "rollout_idx": self.rollout_idx,
            "prompt": self.prompt if isinstance(self.prompt, str) else list(self.prompt),
            "completion": self.completion if isinstance(self.completion, str) else list(self.completion),
            "answer": self.answer,
            "info": dict(self.info),
            "task": self.task,
            "scores": dict(self.scores),
            "reward": self.reward,
            "reward_errors": dict(self.reward_errors),
            "completion_tokens": self.num_completion_tokens,
            "finish_reason": self.finish_reason,
            "stop_reason": self.stop_reason,
            "num_turns": len(self.turns),
            "latency_s": round(self.latency_s, 4),
            "error": self.error,
        }


@dataclass(frozen=True)
class TurnAudit:
    """Whether re-rendering a conversation up to one turn boundary reproduces the token ids the
    model actually saw there (see :func:`verity.rollout.tokens.audit_rollout`)."""

    turn: int
    matches: bool
    sampled_len: int
    """Length of the context the model saw at this turn (prompt + earlier turns, as sampled)."""
    rendered_len: int
    """Length of the same conversation re-rendered with the chat template."""
    first_diff: int | None = None
    """First position where the two differ (None when they match)."""


@dataclass(frozen=True)
class Group:
    """All rollouts of one example: the unit GRPO normalises rewards within."""

    example_id: int
    rollouts: tuple[Rollout, ...]

    @property
    def rewards(self) -> list[float]:
        return [r.reward for r in self.rollouts]

    @property
    def has_signal(self) -> bool:
        """Whether the rewards differ (max - min > :data:`ZERO_STD_TOL`). A group whose rollouts all
        scored the same has zero advantage under every group-relative baseline: training skips it."""
        rewards = self.rewards
        return bool(rewards) and max(rewards) - min(rewards) > ZERO_STD_TOL


@dataclass(frozen=True)
class RolloutBatch:
    """One step's scored groups as the sampler hands them to the learner (this rank's share)."""

    step: int
    """The data index: which prompts (``RLTrainer.batch_examples(step)``) were rolled out."""
    groups: tuple[Group, ...]
    first: int
    """Position of ``groups[0]`` in the step's global batch (this rank's offset under torchrun)."""
    t_generate: float = 0.0
    t_score: float = 0.0
    version: int = 0
    """Optimiser steps the sampler's weights had seen when the batch was generated (off-policy runs)."""
    t_weights: float = 0.0
    """Seconds spent bringing the sampler's weights up to date before generating."""


@dataclass(frozen=True)
class PreferencePair:
    """One preference: a prompt with a preferred (chosen) and a dispreferred (rejected) completion."""

    prompt: tuple[Message, ...]
    chosen: tuple[Message, ...]
    rejected: tuple[Message, ...]


@dataclass(frozen=True)
class LabelledCompletion:
    """One unpaired preference (KTO): a prompt, a completion, and whether it is desirable."""

    prompt: tuple[Message, ...]
    completion: tuple[Message, ...]
    desirable: bool


@dataclass(frozen=True)
class Batch:
    """Right-padded token tensors for one learner step; built by :func:`verity.train.batching.make_batch`.

    Shapes: B sequences, row b = ``[pad… prompt | completion …pad]``, L = P + C (longest prompt
    + longest completion). ``loss_mask`` is 1 only on tokens sampled by the policy (never prompt,
    padding or env-inserted tokens).
    """

    input_ids: torch.Tensor
    """LongTensor [B, L]."""
    attention_mask: torch.Tensor
    """LongTensor [B, L]."""
    loss_mask: torch.Tensor
    """FloatTensor [B, C], over the last C columns of input_ids."""
    sampler_logprobs: torch.Tensor
    """FloatTensor [B, C]: each completion token's log-prob as the sampler reported it (0 off-mask and
    where the backend reported none). Carried for sampler/learner mismatch checks; the loss does not use it."""
    advantages: torch.Tensor
    """FloatTensor [B]."""
    num_tokens: int
    """Number of loss tokens (sum of loss_mask)."""
    old_logprobs: torch.Tensor | None = None
    """FloatTensor [B, C]: the learner's log-probs under the policy before this batch's first update,
    the PPO ratio's denominator when a batch is trained on more than once; None = on-policy (the
    ratio's denominator is the current log-probs, detached)."""


def as_messages(x: ChatOrText, role: str = "user") -> Messages:
    """Normalise a prompt given as text or messages to a message list."""
    if isinstance(x, str):
        return [{"role": role, "content": x}]
    return [dict(m) for m in x]  # type: ignore[misc]


def last_assistant_text(msgs: Sequence[Message] | str) -> str:
    """Text of the last assistant message (or the string itself)."""
    if isinstance(msgs, str):
        return msgs
    for m in reversed(list(msgs)):
        if m.get("role") == "assistant":
            return m.get("content") or ""
    return ""


SandboxStatus = Literal["ok", "error", "timeout", "cpu_limit", "memory_limit", "output_limit", "sandbox_error"]


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run of untrusted code did (see :mod:`verity.sandbox`)."""

    status: SandboxStatus
    """'ok' (exit 0), 'error' (non-zero exit), or the limit that stopped it; 'sandbox_error' when
    the sandbox itself could not apply its restrictions (the program did not run)."""
    exit_code: int
    """Exit status as seen by the runner (negative: killed by that signal)."""
    signal: int | None
    """The signal that ended the program, if one did."""
    stdout: str
    """Standard output, cut at the output limit."""
    stderr: str
    """Standard error, cut at the output limit."""
    wall_s: float
    """Wall-clock seconds from start to the last process gone."""
    layer: str
    """The isolation layer used (bwrap, unshare or seccomp)."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class DoctorCheck:
    """One line of ``verity doctor``: a named check and its outcome."""

    name: str
    status: Literal["pass", "warn", "fail"]
    detail: str


@dataclass(frozen=True)
class RolloutScore:
    """One rollout's scores as verifiers 0.1.x returns them from ``Rubric.score_rollout``."""

    reward: float
    """Weighted sum of the reward functions' scores."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Score per reward function ``__name__`` (same-named functions: the last one, as in verifiers)."""
    errors: Mapping[str, str] = field(default_factory=dict)
    """verity: reward functions that raised (scored 0), name -> error message."""


@dataclass(frozen=True)
class RolloutScores:
    """Scores of many rollouts, as ``Rubric.score_rollouts`` returns them."""

    reward: list[float]
    metrics: Mapping[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerateOutputs:
    """What ``Environment.generate`` returns (the verifiers 0.1.x columns, one entry per rollout)."""

    prompt: list[Any]
    completion: list[Any]
    answer: list[Any]
    state: list[dict[str, Any]]
    task: list[str]
    info: list[dict[str, Any]]
    example_id: list[int]
    reward: list[float]
    metrics: Mapping[str, list[float]] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
