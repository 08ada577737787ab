"""Generation on OpenAI-compatible inference servers that return token ids and log-probs.

``ServerSampler(["http://host:8000", ...], tokenizer)`` renders prompts with the trainer's own
tokenizer and sends the token ids to ``POST /v1/completions`` with ``logprobs`` and vLLM's
``return_tokens_as_token_ids`` (so every sampled token comes back as ``token_id:N`` with its
log-prob: the trainer needs exact ids, not re-tokenised text). Requests are spread round-robin
over the URLs, a bounded number at a time. :meth:`ServerSampler.load_adapter` pushes new LoRA
weights to every server with vLLM's runtime endpoints (``/v1/unload_lora_adapter`` then
``/v1/load_lora_adapter``); later requests name the adapter. Works with vLLM (``--enable-lora``,
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``) and ``verity serve``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from verity.errors import EndpointError
from verity.types import ChatOrText, Completion, SamplingArgs


def api_base(url: str) -> str:
    """``http://host:port`` or ``http://host:port/v1`` -> ``http://host:port/v1``."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise EndpointError(f"--sampler-url {url!r}: not an http(s) URL")
    return url if url.endswith("/v1") else url + "/v1"


def parse_token_ids(tokens: Sequence[str], where: str) -> list[int]:
    """``["token_id:5", ...]`` -> ``[5, ...]``; a server that ignored ``return_tokens_as_token_ids`` is an error."""
    out = []
    for t in tokens:
        if not t.startswith("token_id:"):
            raise EndpointError(f"{where} answered token {t[:20]!r} instead of 'token_id:N': the server ignores "
                                "return_tokens_as_token_ids (use vLLM or verity serve)")
        out.append(int(t.split(":", 1)[1]))
    return out


class ServerSampler:
    """Samples token ids + log-probs from one or more OpenAI-compatible servers."""

    def __init__(self, urls: Sequence[str], tokenizer: Any, model: str | None = None, concurrency: int = 32,
                 timeout: float = 600.0):
        import httpx

        if not urls:
            raise EndpointError("--sampler server needs --sampler-url URL[,URL...]")
        self.urls = [api_base(u) for u in urls]
        self.tokenizer, self.timeout = tokenizer, timeout
        self.base_model, self.model = model, model  # what the servers serve / what requests name now
        self.name = model or "server"
        self.context: int | None = None
        self._http = httpx.Client(timeout=timeout)
        self._pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="verity-server-sampler")
        self._turn = itertools.count()

    def render(self, prompt: ChatOrText, tools: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        from verity.models.chat import render

        return render(self.tokenizer, prompt, tools)

    def _post(self, url: str, body: dict[str, Any]) -> Any:
        import httpx

        try:
            return self._http.post(url, json=body)
        except httpx.TimeoutException:
            raise EndpointError(f"{url} got no answer within {self.timeout:g} s") from None
        except httpx.HTTPError as e:
            raise EndpointError(f"cannot reach {url}: {e}") from None

    def _served_model(self) -> str:
        if self.model is None:
            import httpx

            try:
                r = self._http.get(self.urls[0] + "/models")
                self.base_model = self.model = str(r.json()["data"][0]["id"])
            except (httpx.HTTPError, ValueError, KeyError, IndexError) as e:
                raise EndpointError(f"{self.urls[0]}/models: cannot tell the served model ({e})") from None
            self.name = self.model
        return self.model

    async def generate(self, prompts: Sequence[ChatOrText], args: SamplingArgs,
                       tools: Sequence[Mapping[str, Any]] | None = None) -> list[Completion]:
        rendered = [self.render(p, tools) for p in prompts]
        return await asyncio.to_thread(self.generate_ids, rendered, args)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], args: SamplingArgs) -> list[Completion]:
        """One completion per tokenised prompt; request i carries seed ``args.seed + i``."""
        model = self._served_model()
        jobs = [self._pool.submit(self._one, self.urls[next(self._turn) % len(self.urls)], model, list(ids), args,
                                  None if args.seed is None else args.seed + i)
                for i, ids in enumerate(prompt_ids)]
        return [j.result() for j in jobs]

    def _one(self, base: str, model: str, ids: list[int], args: SamplingArgs, seed: int | None) -> Completion:
        body: dict[str, Any] = {"model": model, "prompt": ids, "max_tokens": args.max_tokens,
                                "temperature": args.temperature, "top_p": args.top_p, "logprobs": 1,
                                "return_tokens_as_token_ids": True}
        if seed is not None:
            body["seed"] = seed
        if args.stop:
            body["stop"] = list(args.stop)
        r = self._post(base + "/completions", body)
        if r.status_code != 200:
            return Completion(text="", finish_reason="error", error=f"{base}: HTTP {r.status_code}: {r.text[:200]}")
        try:
            choice = r.json()["choices"][0]
            lp = choice["logprobs"]
            out_ids = parse_token_ids(lp["tokens"], base)
            logprobs = [float(x) for x in lp["token_logprobs"]]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return Completion(text="", finish_reason="error", error=f"{base}: not a completion with logprobs ({e})")
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(text=choice.get("text") or "", finish_reason=finish, prompt_ids=tuple(ids),
                          completion_ids=tuple(out_ids), logprobs=tuple(logprobs),
                          usage={"prompt_tokens": len(ids), "completion_tokens": len(out_ids)})

    def load_adapter(self, name: str, path: str) -> None:
        """Serve the PEFT adapter folder ``path`` as model ``name`` on every server (replacing ``name``)."""
        self._served_model()
        for base in self.urls:
            self._post(base + "/unload_lora_adapter", {"lora_name": name})  # absent the first time: ignored
            r = self._post(base + "/load_lora_adapter", {"lora_name": name, "lora_path": path})
            if r.status_code != 200:
                raise EndpointError(f"{base}/load_lora_adapter refused adapter {path}: HTTP {r.status_code} "
                                    f"{r.text[:200]}")
        self.model = name

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._http.close()
