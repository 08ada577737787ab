""":class:`JudgeRubric`: an LLM judge, through any OpenAI-compatible endpoint, as a reward.

The judge prompt is a template over ``{question}`` (the last prompt message), ``{answer}`` (the
reference) and ``{response}`` (the parsed completion); the judge's reply is parsed into a score
in [0, 1] (``yes``/``no``, ``7/10``, ``score: 0.8``, ...). Replies are cached per rollout (in its
``state``, as verifiers 0.1.x does) and per judge prompt, so scoring the same rollout twice asks
once. At most ``max_concurrency`` judge requests are in flight; a failed request (connection
refused, timeout, 429, 5xx) is retried ``max_retries`` times with exponential back-off. When the
judge stays down, its reward function raises and the :class:`~verity.rubrics.rubric.Rubric`
records a per-rollout error (counted in ``verity eval``'s summary) and scores 0 -- the run goes on.

Without reward functions, ``judge_reward`` (weight 1) is added: the parsed judge score.
Reward functions may also call ``await rubric.judge(prompt, completion, answer, state)`` for
the raw reply.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from verity.errors import ConfigError
from verity.rubrics.rubric import Rubric

DEFAULT_JUDGE_PROMPT = """Given a ground truth answer and a response, determine if the response is correct.

Question:
```
{question}
```

Ground truth answer:
```
{answer}
```

Response:
```
{response}
```

Respond either "yes" or "no" only."""

_FRACTION = re.compile(r"(-?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_SCORE = re.compile(r"score\W*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


class JudgeError(RuntimeError):
    """The judge could not be reached or gave an unparseable reply (a per-rollout reward error)."""


def parse_judge_score(reply: str) -> float:
    """A judge reply -> score in [0, 1]: yes/no, 'N/M', 'score: x' (x in [0, 1] or out of 10)."""
    text = (reply or "").strip()
    word = re.sub(r"[^a-z]", "", text.split()[0].lower()) if text.split() else ""
    if word in ("yes", "correct", "true"):
        return 1.0
    if word in ("no", "incorrect", "false", "wrong"):
        return 0.0
    if m := _FRACTION.search(text):
        num, den = float(m.group(1)), float(m.group(2))
        if den > 0:
            return min(max(num / den, 0.0), 1.0)
    m = _SCORE.search(text) or _NUMBER.search(text)
    if m:
        x = float(m.group(1) if m.re is _SCORE else m.group(0))
        if 0.0 <= x <= 1.0:
            return x
        if 1.0 < x <= 10.0:
            return x / 10.0
    raise JudgeError(f"cannot parse a score from the judge reply {text[:80]!r}")


def _is_transient(e: BaseException) -> bool:
    import openai

    if isinstance(e, openai.APIStatusError):
        return e.status_code == 429 or e.status_code >= 500
    return isinstance(e, (openai.APIConnectionError, openai.APITimeoutError, asyncio.TimeoutError, OSError))


class JudgeRubric(Rubric):
    """A :class:`Rubric` whose reward comes from an LLM judge (see the module doc)."""

    def __init__(
        self,
        funcs: Any = (),
        weights: Any = None,
        parser: Any = None,
        judge_client: Any = None,
        judge_model: str = "gpt-4.1-nano",
        judge_sampling_args: Mapping[str, Any] | None = None,
        judge_prompt: str = DEFAULT_JUDGE_PROMPT,
        judge_base_url: str | None = None,
        judge_api_key: str | None = None,
        max_concurrency: int = 8,
        max_retries: int = 3,
        retry_base_s: float = 0.5,
        timeout_s: float = 60.0,
        score_parser: Callable[[str], float] = parse_judge_score,
        **kwargs: Any,
    ):
        for key in ("question", "answer", "response"):
            if "{" + key + "}" not in judge_prompt:
                raise ConfigError(f"JudgeRubric: judge_prompt has no {{{key}}} placeholder")
        if max_concurrency < 1 or max_retries < 0:
            raise ConfigError("JudgeRubric: max_concurrency must be >= 1 and max_retries >= 0")
        super().__init__(funcs, weights, parser=parser, **kwargs)
        self._client = judge_client
        self.judge_base_url, self.judge_api_key = judge_base_url, judge_api_key
        self.judge_model = judge_model
        self.judge_prompt = judge_prompt
        self.judge_sampling_args = dict(judge_sampling_args or {})
        self.max_concurrency, self.max_retries, self.retry_base_s = max_concurrency, max_retries, retry_base_s
        self.timeout_s = timeout_s
        self.score_parser = score_parser
        self.requests = 0
        self.failures = 0
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._sems: dict[int, asyncio.Semaphore] = {}
        if not self.funcs:
            self.add_reward_func(self._make_judge_reward(), 1.0)

    @property
    def judge_client(self) -> Any:
        if self._client is None:  # created on first use: no API key needed to build the env
            import openai

            self._client = openai.AsyncOpenAI(base_url=self.judge_base_url, api_key=self.judge_api_key or "EMPTY",
                                              max_retries=0, timeout=self.timeout_s)
        return self._client

    def _make_judge_reward(self) -> Callable[..., Any]:
        async def judge_reward(prompt, completion, answer, state) -> float:
            return self.score_parser(await self.judge(prompt, completion, answer, state))

        return judge_reward

    def render(self, prompt: Any, completion: Any, answer: str) -> str:
        if isinstance(prompt, list):
            last = prompt[-1] if prompt else {}
            question = str(last.get("content", "")) if isinstance(last, dict) else ""
        else:
            question = str(prompt)
        response = self.parser.parse_answer(completion) or ""
        return self.judge_prompt.format(question=question, answer=answer, response=response)

    async def judge(self, prompt: Any, completion: Any, answer: str = "", state: dict | None = None,
                    **_: Any) -> str:
        """The judge's reply for this rollout (cached in ``state['judge_response']`` and per prompt)."""
        text = self.render(prompt, completion, answer)
        cached = state.get("judge_response") if state is not None else None
        if isinstance(cached, dict) and text in cached:
            return cached[text]
        reply = self._cache.get(text)
        if reply is None:
            reply = await self._ask(text)
            self._cache[text] = reply
            while len(self._cache) > 10_000:
                self._cache.popitem(last=False)
        if state is not None:
            state.setdefault("judge_response", {})[text] = reply
        return reply

    async def _ask(self, text: str) -> str:
        loop_id = id(asyncio.get_running_loop())
        sem = self._sems.setdefault(loop_id, asyncio.Semaphore(self.max_concurrency))
        args = {k: v for k, v in self.judge_sampling_args.items() if v is not None}
        attempt = 0
        while True:  # until a reply, a permanent error, or max_retries retries
            async with sem:
                self.requests += 1
                create = self.judge_client.chat.completions.create
                kw = dict(model=self.judge_model, messages=[{"role": "user", "content": text}], **args)
                try:  # a sync client (openai.OpenAI) runs in a worker thread
                    is_async = inspect.iscoroutinefunction(inspect.unwrap(create))
                    out = await (create(**kw) if is_async else asyncio.to_thread(create, **kw))
                    return str(out.choices[0].message.content or "")
                except Exception as e:
                    err = e
            if not _is_transient(err) or attempt >= self.max_retries:
                break
            await asyncio.sleep(self.retry_base_s * 2**attempt)
            attempt += 1
        self.failures += 1
        raise JudgeError(f"judge {self.judge_model!r} failed after {attempt + 1} attempt(s): "
                         f"{type(err).__name__}: {str(err)[:200]}") from err
