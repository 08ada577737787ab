"""The one rollout loop: every environment's rollouts, single-turn (one turn) or multi-turn.

All rollouts of a batch advance in lock-step: each round samples one turn for every rollout
still running in ONE sampler call (so a local model batches them), then asks the environment,
concurrently and each under a timeout, whether the rollout is done and what it answers.

Two ways to talk to the model:

* **tokens** (a local model: the sampler has ``generate_ids`` and a ``tokenizer``): the context
  is a token sequence that only ever grows — sampled ids, then the bridge the chat template
  puts around the environment's messages (:mod:`verity.rollout.tokens`). The rollout's
  ``completion_ids`` are exactly what was sampled and seen, and ``completion_mask`` is 1 only on
  sampled tokens. Tool calls are read from the text (``<tool_call>`` blocks).
* **messages** (an endpoint): the conversation is sent each turn; tool calls come back as
  OpenAI ``tool_calls`` (or as ``<tool_call>`` text when the server does not parse them).

Every turn is bounded: ``max_tokens`` per turn, ``max_turns`` per rollout, the model's context
window (local models) and a timeout on each environment hook. A rollout records why it
stopped (:data:`~verity.types.StopReason`); a failing rollout is an error on that rollout only.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeGuard

from verity.models.chat import parse_tool_calls
from verity.types import Completion, Example, Message, Rollout, SamplingArgs, StopReason, Turn

if TYPE_CHECKING:
    from verity.rollout.sampler import Sampler, TokenSampler

TURN_CAP = 100
"""Turn limit for environments that set ``max_turns <= 0`` (0.1.x's "unbounded")."""
CONTEXT_ERRORS = ("context_length_exceeded", "maximum context length", "context length")


@dataclass
class Track:
    """One rollout in progress (mutable; becomes a frozen :class:`Rollout` when scored)."""

    example: Example
    idx: int
    state: dict[str, Any]
    prompt_ids: list[int] = field(default_factory=list)
    context: list[int] = field(default_factory=list)
    budget: int = 0
    """max_tokens of the turn being sampled (less than asked when the context window is nearly full)."""
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    latency: float = 0.0
    usage_tokens: int = 0
    finish: str = "stop"
    stop: StopReason | None = None
    error: str | None = None

    @property
    def messages(self) -> Any:
        """The completion so far: messages, or text for a completion-mode (plain text) prompt."""
        return self.state["completion"]

    @property
    def text_mode(self) -> bool:
        return isinstance(self.state["prompt"], str)

    def conversation(self) -> Any:
        """Prompt + completion: the context of the next turn, as messages or text."""
        p, c = self.state["prompt"], self.state["completion"]
        return p + c if self.text_mode else [*p, *c]

    def append(self, reply: Any) -> None:
        """Add an assistant message / environment messages (or their text in completion mode)."""
        if self.text_mode:
            self.state["completion"] += reply
        else:
            self.state["completion"].extend(reply)

    def end(self, reason: StopReason, error: str | None = None) -> None:
        if reason in ("completed", "max_turns") and self.finish == "length":
            reason = "max_tokens"  # the rollout ended on a turn cut off by max_tokens
        self.stop, self.error = reason, error
        self.state["stop_reason"] = reason


def new_state(ex: Example, idx: int) -> dict[str, Any]:
    """The per-rollout ``state`` dict (0.1.x keys plus ``rollout_idx`` and ``stop_reason``)."""
    text = isinstance(ex.prompt, str)  # completion mode: a plain-text prompt, a text completion
    prompt = ex.prompt if isinstance(ex.prompt, str) else [dict(m) for m in ex.prompt]
    return {"prompt": prompt, "completion": "" if text else [], "answer": ex.answer, "task": ex.task,
            "info": dict(ex.info), "example_id": ex.id, "rollout_idx": idx, "responses": [], "turn": 0,
            "timing": {"generation_ms": 0.0, "scoring_ms": 0.0, "total_ms": 0.0}, "stop_reason": None}


async def in_daemon_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a sync callable in its own daemon thread. Unlike ``asyncio.to_thread`` a call that
    never returns does not hold a slot of the shared pool (nor block interpreter exit); the
    caller's timeout abandons it."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def settle(err: BaseException | None, res: Any) -> None:
        if not fut.done():
            fut.set_exception(err) if err is not None else fut.set_result(res)

    def target() -> None:
        err, res = None, None
        try:
            res = fn(*args, **kwargs)
        except BaseException as e:
            err = e
        with contextlib.suppress(RuntimeError):  # the loop is gone: the caller gave up long ago
            loop.call_soon_threadsafe(settle, err, res)

    threading.Thread(target=target, daemon=True, name=f"verity-{getattr(fn, '__name__', 'hook')}").start()
    return await fut


async def call_hook(fn: Callable[..., Any], *args: Any, timeout: float | None, **kwargs: Any) -> Any:
    """Call a sync or async hook under ``timeout`` seconds (sync hooks run in a daemon thread)."""
    if inspect.iscoroutinefunction(fn):
        return await asyncio.wait_for(fn(*args, **kwargs), timeout)
    out = await asyncio.wait_for(in_daemon_thread(fn, *args, **kwargs), timeout)
    return await asyncio.wait_for(out, timeout) if inspect.isawaitable(out) else out


def _hook_error(name: str, e: BaseException, timeout: float | None) -> str:
    if isinstance(e, asyncio.TimeoutError | TimeoutError):
        return f"{name} timed out after {timeout:g} s"
    return f"{name} raised {type(e).__name__}: {e}"


def token_mode(sampler: Any) -> TypeGuard[TokenSampler]:
    """Whether ``sampler`` samples from token ids (a local model): then rollouts carry token ids."""
    return callable(getattr(sampler, "generate_ids", None)) and getattr(sampler, "tokenizer", None) is not None


def context_window(sampler: Any) -> int | None:
    """The local model's context length (None when unknown)."""
    n = getattr(sampler, "context", None)
    if n is None:
        n = getattr(getattr(getattr(sampler, "model", None), "config", None), "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def turn_args(args: SamplingArgs, turn: int) -> SamplingArgs:
    """Sampling args of ``turn``: the first turn uses ``args`` as given (single-turn sampling is
    unchanged); later turns get their own seed derived from it."""
    if turn == 0 or args.seed is None:
        return args
    return args.replace(seed=(args.seed + 104_729 * turn) % (2**31 - 1))


class TurnRunner:
    """Runs the rollouts of one batch for ``env`` with ``sampler`` (see the module docstring)."""

    def __init__(self, env: Any, sampler: Sampler, args: SamplingArgs):
        self.env, self.sampler, self.args = env, sampler, args
        self.tools = list(getattr(env, "oai_tools", None) or []) or None
        limit = int(getattr(env, "max_turns", 1) or 0)
        self.max_turns = limit if limit > 0 else TURN_CAP
        self.timeout = getattr(env, "env_timeout", None)
        self.local: TokenSampler | None = sampler if token_mode(sampler) else None
        self.window = context_window(sampler) if self.local is not None else None

    async def run(self, jobs: Sequence[tuple[Example, int]]) -> list[Rollout]:
        """Generate and score the rollouts of ``jobs`` (their final states stay in ``self.tracks``)."""
        tracks = await self.generate(jobs)
        rollouts = await asyncio.gather(*(self._score(t) for t in tracks))
        await asyncio.gather(*(self._teardown(t) for t in tracks))
        return list(rollouts)

    async def generate(self, jobs: Sequence[tuple[Example, int]]) -> list[Track]:
        """Run the turns of ``jobs`` to their end, unscored."""
        self.tracks = tracks = [Track(ex, idx, new_state(ex, idx)) for ex, idx in jobs]
        await asyncio.gather(*(self._setup(t) for t in tracks))
        turn = 0
        while True:
            live = [t for t in tracks if t.stop is None and self._fits(t)]
            if not live:
                break
            completions = await self._generate(live, turn_args(self.args, turn))
            for t, c in zip(live, completions, strict=True):
                self._record(t, c, turn)
            await asyncio.gather(*(self._advance(t, c, turn) for t, c in zip(live, completions, strict=True)))
            turn += 1
        return tracks

    # ---- hooks -------------------------------------------------------------------------------
    async def _setup(self, t: Track) -> None:
        fn = getattr(self.env, "setup_state", None)
        if fn is not None:
            try:
                out = await call_hook(fn, t.state, timeout=self.timeout)
                t.state = out if isinstance(out, dict) else t.state
            except Exception as e:
                t.end("error", _hook_error("setup_state", e, self.timeout))
                return
        if self.local is not None:
            from verity.models.chat import render

            tok = self.local.tokenizer
            t.prompt_ids = list(tok(t.state["prompt"], add_special_tokens=False)["input_ids"]) if t.text_mode \
                else render(tok, t.state["prompt"], self.tools)
            t.context = list(t.prompt_ids)

    async def _teardown(self, t: Track) -> None:
        fn = getattr(self.env, "teardown_state", None)
        if fn is None:
            return
        try:
            await call_hook(fn, t.state, timeout=self.timeout)
        except Exception as e:  # a cleanup failure is reported, never fatal
            t.state.setdefault("teardown_error", _hook_error("teardown_state", e, self.timeout))

    def _fits(self, t: Track) -> bool:
        """Budget the next turn so it cannot run past the model's context window; stop the
        rollout when no room is left. The first turn is not budgeted: a prompt that leaves no
        room for max_tokens is the sampler's one-line ContextLengthError, as for single-turn."""
        t.budget = self.args.max_tokens
        if t.turns and self.window is not None and self.window - len(t.context) < t.budget:
            room = self.window - len(t.context)
            t.budget = room // 32 * 32 or room  # coarse budgets: rollouts near the window share a batch
        if t.budget < 1:
            if t.turns:  # drop the env tokens after the last turn: nothing sampled follows them
                keep = t.turns[-1].start + t.turns[-1].num_sampled
                del t.completion_ids[keep:], t.logprobs[keep:], t.mask[keep:]
            t.end("context")
            t.state["prompt_too_long"] = True
            return False
        return True

    # ---- one turn ----------------------------------------------------------------------------
    async def _generate(self, live: list[Track], args: SamplingArgs) -> list[Completion]:
        if self.local is not None:  # one batched call per turn budget (one call unless the window is near)
            local, out = self.local, dict[int, Completion]()
            for budget in sorted({t.budget for t in live}, reverse=True):
                group = [i for i, t in enumerate(live) if t.budget == budget]
                a = args if budget == args.max_tokens else args.replace(max_tokens=budget)
                done = await asyncio.to_thread(local.generate_ids, [live[i].context for i in group], a)
                out.update(zip(group, done, strict=True))
            return [out[i] for i in range(len(live))]
        prompts = [t.conversation() for t in live]
        if self.tools:
            return await self.sampler.generate(prompts, args, tools=self.tools)
        return await self.sampler.generate(prompts, args)

    def _record(self, t: Track, c: Completion, turn: int) -> None:
        """Append the turn's assistant message and tokens to the rollout."""
        t.state["responses"].append(c)
        t.state["turn"] = turn + 1
        t.latency += c.latency_s
        t.usage_tokens += int(c.usage.get("completion_tokens", 0) or 0)
        t.finish = c.finish_reason
        msg: dict[str, Any] = {"role": "assistant", "content": c.text}
        t.state["tool_call_errors"] = []
        if self.tools and not t.text_mode:
            calls = [dict(x) for x in c.tool_calls]
            if not calls:
                parsed = parse_tool_calls(c.text, id_prefix=f"call_{turn}_")
                msg["content"], calls = parsed.content, list(parsed.calls)
                t.state["tool_call_errors"] = list(parsed.errors)
            if calls:
                msg["tool_calls"] = calls
        start = len(t.completion_ids)
        t.completion_ids += c.completion_ids
        t.logprobs += c.logprobs
        t.mask += [1] * len(c.completion_ids)
        t.turns.append(Turn(index=turn, start=start, num_sampled=len(c.completion_ids),
                            message_index=len(t.messages), num_env_messages=0,
                            finish_reason=c.finish_reason, latency_s=c.latency_s))
        t.append(c.text if t.text_mode else [msg])
        t.context = [*t.context, *c.completion_ids]

    async def _advance(self, t: Track, c: Completion, turn: int) -> None:
        """After a turn: stop (error / max_tokens / completed), or apply the env's response."""
        if c.finish_reason == "error":
            if turn > 0 and any(s in (c.error or "").lower() for s in CONTEXT_ERRORS):
                t.state["completion"] = t.messages[:t.turns.pop().message_index]
                return t.end("context")
            return t.end("error", c.error or "generation failed")
        if c.finish_reason == "length" and t.budget < self.args.max_tokens:
            return t.end("context")  # cut short by the context window, not by max_tokens
        conversation = t.conversation()
        done_fn = getattr(self.env, "is_completed", None)
        try:
            done = True if done_fn is None else bool(await call_hook(done_fn, conversation, t.state,
                                                                     timeout=self.timeout))
        except Exception as e:
            return t.end("error", _hook_error("is_completed", e, self.timeout))
        if done:
            return t.end("completed")
        try:
            env_msgs = await self._env_response(t, conversation)
        except Exception as e:
            return t.end("error", _hook_error("env_response", e, self.timeout))
        t.append(env_msgs)
        t.turns[-1] = replace(t.turns[-1], num_env_messages=1 if t.text_mode else len(env_msgs))
        if turn + 1 >= self.max_turns:
            return t.end("max_turns")  # the final env response is applied: the reward sees it
        if self.local is not None:
            tok = self.local.tokenizer
            bridge = self._bridge(tok, env_msgs, c) if not t.text_mode else \
                list(tok(env_msgs, add_special_tokens=False)["input_ids"])
            t.completion_ids += bridge
            t.logprobs += [0.0] * len(bridge)
            t.mask += [0] * len(bridge)
            t.context = [*t.context, *bridge]

    async def _env_response(self, t: Track, conversation: Any) -> Any:
        fn = getattr(self.env, "env_response", None)
        if fn is None:
            raise TypeError(f"{type(self.env).__name__} has no env_response")
        out = await call_hook(fn, conversation, t.state, timeout=self.timeout)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"env_response must return (messages, state), got {type(out).__name__}")
        msgs, state = out
        if isinstance(state, dict):
            t.state = state
        if t.text_mode:
            if not isinstance(msgs, str):
                raise TypeError(f"env_response must return text in completion mode, got {type(msgs).__name__}")
            return msgs
        if isinstance(msgs, Mapping):
            msgs = [msgs]
        msgs = [dict(m) for m in msgs]
        for m in msgs:
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str | None):
                raise TypeError(f"env_response returned a message without string role/content: {m!r}")
        return msgs

    def _bridge(self, tokenizer: Any, env_msgs: list[Message], c: Completion) -> list[int]:
        from verity.rollout.tokens import bridge_ids

        return bridge_ids(tokenizer, env_msgs, c.completion_ids, self.tools)

    # ---- scoring -----------------------------------------------------------------------------
    async def _score(self, t: Track) -> Rollout:
        stop = t.stop or "completed"
        error = t.error
        agg = Completion(
            text="", finish_reason="error" if error else t.finish,  # type: ignore[arg-type]
            prompt_ids=tuple(t.prompt_ids),
            completion_ids=tuple(t.completion_ids), logprobs=tuple(t.logprobs), latency_s=t.latency,
            error=error, usage={"completion_tokens": t.usage_tokens},
        )
        t0 = time.perf_counter()
        r = await self.env.score(t.example, t.idx, agg, t.messages if t.text_mode else tuple(t.messages), t.state)
        t.state["timing"]["scoring_ms"] = (time.perf_counter() - t0) * 1000
        return replace(r, completion_mask=tuple(t.mask), stop_reason=stop, turns=tuple(t.turns))


async def run_rollouts(env: Any, sampler: Sampler, jobs: Sequence[tuple[Example, int]],
                       args: SamplingArgs) -> list[Rollout]:
    """Generate and score one rollout per ``(example, rollout_idx)`` job (any environment)."""
    return await TurnRunner(env, sampler, args).run(jobs)


async def rollout_one(env: Any, sampler: Sampler, example: Example, args: SamplingArgs) -> tuple[Any, dict[str, Any]]:
    """One unscored rollout -> ``(completion, state)``: the verifiers 0.1.x ``rollout`` contract."""
    runner = TurnRunner(env, sampler, args)
    [t] = await runner.generate([(example, 0)])
    await runner._teardown(t)
    if t.error is not None:
        t.state["error"] = t.error
    return t.messages, t.state
