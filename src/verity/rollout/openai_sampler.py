"""Sampler for any OpenAI-compatible endpoint through the official async ``openai`` client.

Bounded concurrency (a semaphore), a per-request timeout (default 120 s), and a bounded
number of retries with exponential backoff on 429/5xx/connection errors (the client's own
retry logic). An endpoint that cannot be reached at all, or that stops answering (a request
timed out on every try), is a :class:`~verity.errors.EndpointError`, raised once. A request
that fails otherwise, or an answer that is not a chat completion (not JSON, no ``choices``),
is a completion with ``finish_reason="error"``: a counted rollout error, not a crash.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from verity.errors import EndpointError
from verity.types import ChatOrText, Completion, SamplingArgs


class OpenAISampler:
    """Chat completions from an OpenAI-compatible server (``verity serve``, vLLM, hosted APIs)."""

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str | None = None,
                 client: Any = None, concurrency: int = 32, timeout: float = 120.0, max_retries: int = 2,
                 template_kwargs: Mapping[str, Any] | None = None):
        import openai

        #: sent as ``chat_template_kwargs`` with every chat request (vLLM's extra field, also ``verity serve``'s)
        self.template_kwargs = dict(template_kwargs or {})

        self.name = model
        self.base_url = base_url
        if client is not None:
            timeout, max_retries = _float(client.timeout, timeout), client.max_retries
        self.timeout, self.max_retries = timeout, max_retries
        if client is None:
            key = "EMPTY"
            if api_key_env:
                if api_key_env not in os.environ:
                    raise EndpointError(f"-k {api_key_env}: environment variable {api_key_env} is not set")
                key = os.environ[api_key_env]
            client = openai.AsyncOpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=max_retries)
        self.client = client
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self._checked = False

    async def check(self) -> None:
        """Fail fast with one clear line when the endpoint cannot be reached."""
        import openai

        try:
            await self.client.with_options(timeout=min(10.0, self.timeout), max_retries=1).models.list()
        except openai.APITimeoutError:
            raise EndpointError(self._hung("GET /models", min(10.0, self.timeout), 2)) from None
        except openai.APIConnectionError as e:
            raise EndpointError(f"cannot reach endpoint {self.base_url or self.client.base_url}: {e}") from None
        except openai.AuthenticationError as e:
            raise EndpointError(f"endpoint {self.client.base_url} refused the API key: {e.message}") from None
        except openai.APIError:
            pass  # some servers lack /models; the real requests will tell
        self._checked = True

    async def _one(self, prompt: ChatOrText, args: SamplingArgs,
                   tools: Sequence[Mapping[str, Any]] | None = None) -> Completion:
        import openai

        chat = not isinstance(prompt, str)  # a plain-text prompt goes to /completions (completion mode)
        req: dict[str, Any] = dict(model=self.name, max_tokens=args.max_tokens, temperature=args.temperature,
                                   top_p=args.top_p)
        if chat:
            req["messages"] = list(prompt)
            if self.template_kwargs:
                req["extra_body"] = {"chat_template_kwargs": self.template_kwargs}
        else:
            req["prompt"] = prompt
        if args.stop:
            req["stop"] = list(args.stop)
        if args.seed is not None:
            req["seed"] = args.seed
        if tools:
            req["tools"] = list(tools)
        req.update(args.extra)
        t0 = time.perf_counter()
        async with self._sem:
            try:
                api = self.client.chat.completions if chat else self.client.completions
                resp = await api.create(**req)
            except openai.APITimeoutError:
                what = "a chat completion" if chat else "a completion"
                raise EndpointError(self._hung(what, self.timeout, self.max_retries + 1)) from None
            except (openai.APIConnectionError, openai.AuthenticationError, openai.NotFoundError) as e:
                raise EndpointError(f"endpoint {self.client.base_url}: {type(e).__name__}: {e}") from None
            except openai.APIError as e:
                return Completion(text="", finish_reason="error", error=f"{type(e).__name__}: {e}",
                                  latency_s=time.perf_counter() - t0)
        bad = _not_a_completion(resp, chat)
        if bad:
            return Completion(text="", finish_reason="error", error=f"endpoint answered {bad}",
                              latency_s=time.perf_counter() - t0)
        choice = resp.choices[0]
        usage = {}
        if resp.usage is not None:
            usage = {"prompt_tokens": resp.usage.prompt_tokens, "completion_tokens": resp.usage.completion_tokens}
        calls = tuple({"id": c.id, "type": "function", "function": {"name": c.function.name,
                                                                     "arguments": c.function.arguments}}
                      for c in ((choice.message.tool_calls if chat else None) or [])
                      if getattr(c, "function", None) is not None)
        return Completion(
            text=(choice.message.content if chat else choice.text) or "",
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            latency_s=time.perf_counter() - t0, usage=usage, tool_calls=calls,
        )

    async def generate(self, prompts: Sequence[ChatOrText], args: SamplingArgs,
                       tools: Sequence[Mapping[str, Any]] | None = None) -> list[Completion]:
        if not self._checked:
            await self.check()
        return list(await asyncio.gather(*(self._one(p, args, tools) for p in prompts)))

    def _hung(self, what: str, timeout: float, tries: int) -> str:
        return (f"endpoint {self.base_url or self.client.base_url} stopped answering: {what} got no answer within "
                f"{timeout:g} s ({tries} {'try' if tries == 1 else 'tries'}); check the server, or raise --timeout")


def _float(v: Any, default: float) -> float:
    """A client's timeout as seconds (it may be an ``httpx.Timeout``)."""
    if isinstance(v, (int, float)):
        return float(v)
    read = getattr(v, "read", None)
    return float(read) if isinstance(read, (int, float)) else default


def _not_a_completion(resp: Any, chat: bool = True) -> str | None:
    """What is wrong with an answer that is not a usable (chat) completion (None when it is one)."""
    if isinstance(resp, (str, bytes)):
        text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else resp
        return f"a non-JSON body ({' '.join(text.split())[:60]!r})"
    choices = getattr(resp, "choices", None)
    if not choices:
        return "JSON without choices"
    if not chat:
        return None if getattr(choices[0], "text", None) is not None else "a choice without text"
    message = getattr(choices[0], "message", None)
    if message is None:
        return "a choice without a message"
    return None
