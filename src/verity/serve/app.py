"""The FastAPI app of ``verity serve``: OpenAI-compatible chat / text completions over a local model.

Endpoints: ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{model}``,
``POST /v1/chat/completions`` and ``POST /v1/completions`` (both with SSE streaming), and vLLM's
LoRA hot reload ``POST /v1/load_lora_adapter`` / ``POST /v1/unload_lora_adapter`` (one adapter at a
time, merged into the served weights: :mod:`verity.serve.adapters`).
Generation goes through one :class:`~verity.serve.batcher.Batcher`, so concurrent requests
share batches. Every error, including FastAPI's validation errors (400 here, not 422) and
unknown paths, is returned in OpenAI's ``{"error": {...}}`` shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from verity.errors import ContextLengthError
from verity.serve import protocol as P
from verity.serve.adapters import AdapterError, AdapterSlot
from verity.serve.batcher import Batcher, KVTooLarge, QueueFull
from verity.serve.render import (
    SSE_DONE,
    active_tools,
    chat_logprobs,
    encode_prompt,
    parse_tool_calls,
    render_chat,
    sse,
    text_chunks,
    text_logprobs,
)
from verity.serve.streaming import live_events
from verity.types import Completion, SamplingArgs, check_context

log = logging.getLogger(__name__)
#: The optional ``Authorization: Bearer`` credentials, as a FastAPI dependency.
_BearerCreds = Annotated[
    HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False, description="the key from --api-key-env"))
]
#: Temperatures below this are treated as 0 (greedy).
MIN_TEMPERATURE = 1e-4


class _State:
    """What the route handlers share: the sampler, its limits and the batcher."""

    def __init__(self, sampler: Any, name: str, api_key: str | None, batcher: Batcher, default_max_tokens: int):
        self.sampler, self.name, self.api_key, self.batcher = sampler, name, api_key, batcher
        self.default_max_tokens = default_max_tokens
        cfg = getattr(sampler.model, "config", None)
        self.context = getattr(sampler, "context", getattr(cfg, "max_position_embeddings", None))
        self.vocab_size = getattr(cfg, "vocab_size", None) or len(sampler.tokenizer)
        self.created = int(time.time())
        self.adapter = AdapterSlot(sampler.model)


def create_app(sampler: Any, served_model_name: str, api_key: str | None = None, max_batch_size: int = 32,
               max_queue: int = 256, default_max_tokens: int = 512, batch_wait_s: float = 0.1,
               max_kv_tokens: int | None = None) -> FastAPI:
    """App serving ``sampler`` (an :class:`~verity.rollout.hf_sampler.HFSampler`) as ``served_model_name``."""
    batcher = Batcher(sampler, max_batch_size=max_batch_size, max_queue=max_queue, batch_wait_s=batch_wait_s,
                      max_kv_tokens=max_kv_tokens)
    st = _State(sampler, served_model_name, api_key, batcher, default_max_tokens)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    from verity import __version__

    app = FastAPI(title="verity serve", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible API over a local model, with dynamic batching.")
    app.state.verity = st
    _add_error_handlers(app)
    _add_routes(app, st)
    _add_lora_routes(app, st)
    _strip_422(app)
    return app


# ---------------------------------------------------------------- errors
def _error_response(e: P.APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None, str | None]:
    errs = exc.errors()
    if not errs:
        return "invalid request body", None, None
    e = errs[0]
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    if e.get("type") == "json_invalid":
        return f"request body is not valid JSON: {e.get('ctx', {}).get('error', e.get('msg'))}", None, "invalid_json"
    param = ".".join(loc) or None
    where = f"{param}: " if param else "body: "
    more = f" (and {len(errs) - 1} more errors)" if len(errs) > 1 else ""
    return f"{where}{e.get('msg', 'invalid value')}{more}", param, None


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(P.APIError)
    async def _api_error(_: Request, exc: P.APIError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        msg, param, code = _validation_message(exc)
        return JSONResponse(P.error_body(msg, param=param, code=code), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = f"Invalid URL ({request.method} {request.url.path})" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(P.error_body(msg, code="not_found" if exc.status_code == 404 else None),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        # the details stay in the server's log: exception text can hold paths and internals
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(P.error_body("The server had an error while processing the request; it is logged "
                                         "on the server", type="server_error"), status_code=500)


def _strip_422(app: FastAPI) -> None:
    """Drop FastAPI's default 422 responses from the OpenAPI schema (this server answers 400)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path in schema.get("paths", {}).values():
                for op in path.values():
                    op.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# ---------------------------------------------------------------- helpers
def _auth_dependency(st: _State) -> Any:
    async def check(creds: _BearerCreds) -> None:
        if st.api_key is None:
            return
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), st.api_key.encode()):
            raise P.APIError(401, "Incorrect or missing API key (send 'Authorization: Bearer KEY')",
                             param=None, code="invalid_api_key")

    return check


def _check_model(st: _State, model: str) -> None:
    if st.adapter.name is not None and model != st.adapter.name:
        raise P.APIError(400 if model == st.name else 404,
                         f"The model {model!r} is not served now: LoRA adapter {st.adapter.name!r} is merged into "
                         f"{st.name!r} (one adapter at a time); ask for {st.adapter.name!r} or unload it",
                         param="model", code="model_not_found")
    if st.adapter.name is None and model != st.name:
        raise P.APIError(404, f"The model {model!r} does not exist; this server serves {st.name!r}",
                         param="model", code="model_not_found")


def _sampling_args(st: _State, req: Any, prompts: Sequence[Sequence[int]], max_tokens: int | None,
                   param: str, top_logprobs: int = 0) -> SamplingArgs:
    """SamplingArgs for ``req``; 400 ``context_length_exceeded`` when prompt + max_tokens do not fit
    (the same check as in-process generation: :func:`~verity.types.check_context`)."""
    longest = max(len(p) for p in prompts)
    if max_tokens is None:
        room = st.default_max_tokens if st.context is None else st.context - longest
        max_tokens = max(1, min(st.default_max_tokens, room))  # no room left: the check below answers 400
    try:
        check_context(longest, max_tokens, st.context)
    except ContextLengthError:
        raise P.APIError(400, f"This model's maximum context length is {st.context} tokens. However, you requested "
                              f"{longest + max_tokens} tokens ({longest} in the {param}, {max_tokens} in the "
                              f"completion). Please reduce the length of the {param} or completion.",
                         param=param, code="context_length_exceeded") from None
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    temperature = 1.0 if req.temperature is None else req.temperature
    if temperature < MIN_TEMPERATURE:  # logits / 1e-100 overflow to inf -> NaN probabilities: sample greedily
        temperature = 0.0
    return SamplingArgs(max_tokens=max_tokens, temperature=temperature,
                        top_p=1.0 if req.top_p is None else req.top_p, stop=tuple(s for s in stop if s),
                        seed=req.seed, top_logprobs=top_logprobs)


def _enqueue(st: _State, prompts: list[list[int]], args: SamplingArgs, stream: bool = False) -> Any:
    """Queue a generation job; 400 when it asks too much (sequences, KV memory), 429 when the queue is full."""
    if len(prompts) > P.MAX_SEQUENCES:
        raise P.APIError(400, f"this request asks for {len(prompts)} sequences (prompts × n); the limit is "
                              f"{P.MAX_SEQUENCES}", param="n")
    try:
        return st.batcher.enqueue(prompts, args, stream=stream)
    except QueueFull as e:
        raise P.APIError(429, f"The server is busy ({e}); retry shortly", type="requests",
                         code="rate_limit_exceeded", headers={"Retry-After": "1"}) from None
    except KVTooLarge as e:
        raise P.APIError(400, f"{e}; reduce n, the prompt or max_tokens", param="max_tokens",
                         code="kv_cache_exceeded") from None


async def _generate(st: _State, prompts: list[list[int]], args: SamplingArgs) -> list[Completion]:
    return await _enqueue(st, prompts, args).future  # a cancelled request cancels the job


def _usage(prompt_tokens: int, outs: Sequence[Completion]) -> dict[str, int]:
    comp = sum(len(c.completion_ids) for c in outs)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": comp, "total_tokens": prompt_tokens + comp}


def _chat_choice(st: _State, i: int, c: Completion, parse_tools: bool, logprobs: bool) -> dict[str, Any]:
    content, calls = parse_tool_calls(c.text) if parse_tools else (c.text, [])
    finish = "tool_calls" if calls else ("length" if c.finish_reason == "length" else "stop")
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = calls
    return {"index": i, "message": msg, "finish_reason": finish,
            "logprobs": chat_logprobs(st.sampler.tokenizer, c) if logprobs else None}


# ---------------------------------------------------------------- routes
def _add_routes(app: FastAPI, st: _State) -> None:
    auth = [Depends(_auth_dependency(st))]

    @app.get("/health", response_model=P.Health, tags=["server"])
    async def health() -> dict[str, Any]:
        """Liveness and batching counters (no auth)."""
        s = st.batcher.stats
        return {"status": "ok", "model": st.name, "queued": st.batcher.unfinished, "batches": s["batches"],
                "sequences": s["sequences"], "requests": s["requests"], "generation_s": round(s["generation_s"], 4)}

    def card() -> dict[str, Any]:
        return {"id": st.name, "object": "model", "created": st.created, "owned_by": "verity",
                "max_model_len": st.context}

    @app.get("/v1/models", response_model=P.ModelList, responses=P.ERROR_RESPONSES, dependencies=auth, tags=["openai"])
    async def models() -> dict[str, Any]:
        """The served model (and the loaded LoRA adapter, as vLLM lists it)."""
        data = [card()]
        if st.adapter.name is not None:
            data.append({**card(), "id": st.adapter.name, "parent": st.name})
        return {"object": "list", "data": data}

    @app.get("/v1/models/{model}", response_model=P.ModelCard, responses=P.ERROR_RESPONSES, dependencies=auth,
             tags=["openai"])
    async def model_card(model: str) -> dict[str, Any]:
        """One model by id (404 unless it is the served one)."""
        _check_model(st, model)
        return card()

    @app.post("/v1/chat/completions", response_model=P.ChatCompletion, dependencies=auth, tags=["openai"],
              responses={**P.ERROR_RESPONSES, **P.STREAM_200})
    async def chat_completions(req: P.ChatCompletionRequest) -> Any:
        """Chat completion (OpenAI shape): n choices, stop, seed, tools / tool_calls, SSE when stream is true."""
        _check_model(st, req.model)
        tools = active_tools(req)
        ids = render_chat(st.sampler.tokenizer, req.messages, tools, req.chat_template_kwargs)
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        if req.top_logprobs is not None and not req.logprobs:
            raise P.APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        args = _sampling_args(st, req, [ids], max_tokens, "messages", top_logprobs=req.top_logprobs or 0)
        if req.stream and tools is None and st.batcher.continuous:  # tokens sent as they are generated
            job = _enqueue(st, [ids] * req.n, args, stream=True)
            return StreamingResponse(_live_chat(st, job, req, len(ids)), media_type="text/event-stream")
        outs = await _generate(st, [ids] * req.n, args)
        choices = [_chat_choice(st, i, c, tools is not None, bool(req.logprobs)) for i, c in enumerate(outs)]
        body = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": st.name, "choices": choices, "usage": _usage(len(ids), outs), "system_fingerprint": None}
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_chat_events(body, usage), media_type="text/event-stream")
        return body

    @app.post("/v1/completions", response_model=P.TextCompletion, dependencies=auth, tags=["openai"],
              responses={**P.ERROR_RESPONSES, **P.STREAM_200})
    async def completions(req: P.CompletionRequest) -> Any:
        """Text completion (OpenAI legacy shape) for one prompt or a list of prompts (text or token ids)."""
        _check_model(st, req.model)
        raw = req.prompt
        items = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
        if not items:
            raise P.APIError(400, "the prompt is empty", param="prompt")
        if req.echo:
            raise P.APIError(400, "echo is not supported by this server", param="echo")
        prompts = [encode_prompt(st.sampler.tokenizer, p, st.vocab_size) for p in items]  # type: ignore[arg-type]
        args = _sampling_args(st, req, prompts, req.max_tokens, "prompt", top_logprobs=req.logprobs or 0)
        if req.stream and st.batcher.continuous:
            job = _enqueue(st, [p for p in prompts for _ in range(req.n)], args, stream=True)
            return StreamingResponse(_live_text(st, job, req, sum(len(p) for p in prompts)),
                                     media_type="text/event-stream")
        outs = await _generate(st, [p for p in prompts for _ in range(req.n)], args)
        tok = st.sampler.tokenizer
        choices = [{"index": i, "text": c.text, "finish_reason": "length" if c.finish_reason == "length" else "stop",
                    "logprobs": None if req.logprobs is None else
                    text_logprobs(tok, c, req.return_tokens_as_token_ids)} for i, c in enumerate(outs)]
        body = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": st.name, "choices": choices, "usage": _usage(sum(len(p) for p in prompts), outs)}
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_text_events(body, usage), media_type="text/event-stream")
        return body


def _add_lora_routes(app: FastAPI, st: _State) -> None:
    """vLLM's runtime LoRA endpoints (same request bodies; plain-text success answers as vLLM gives)."""
    auth = [Depends(_auth_dependency(st))]

    def locked(fn: Any, *a: Any) -> Any:
        with getattr(st.sampler, "_lock", contextlib.nullcontext()):  # never between two tokens of a batch
            return fn(*a)

    @app.post("/v1/load_lora_adapter", dependencies=auth, responses=P.ERROR_RESPONSES, tags=["vllm"])
    async def load_lora_adapter(req: P.LoadLoraRequest) -> Any:
        """Merge the PEFT LoRA adapter at ``lora_path`` into the served weights as model ``lora_name``."""
        if st.adapter.name == req.lora_name:
            raise P.APIError(400, f"The lora adapter '{req.lora_name}' has already been loaded", param="lora_name")
        try:
            await asyncio.to_thread(locked, st.adapter.load, req.lora_name, req.lora_path)
        except (AdapterError, OSError, ValueError, KeyError) as e:
            raise P.APIError(400, f"cannot load LoRA adapter {req.lora_name!r}: {e}", param="lora_path") from None
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' added successfully.")

    @app.post("/v1/unload_lora_adapter", dependencies=auth, responses=P.ERROR_RESPONSES, tags=["vllm"])
    async def unload_lora_adapter(req: P.UnloadLoraRequest) -> Any:
        """Restore the base weights."""
        if st.adapter.name != req.lora_name:
            raise P.APIError(404, f"The lora adapter '{req.lora_name}' cannot be found", param="lora_name",
                             code="not_found")
        await asyncio.to_thread(locked, st.adapter.unload)
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' removed successfully.")


# ---------------------------------------------------------------- streaming
async def _chat_events(body: dict[str, Any], include_usage: bool) -> AsyncIterator[str]:
    """``chat.completion.chunk`` events for a finished completion, then ``[DONE]``."""
    base = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": body["model"],
            "system_fingerprint": None}

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> str:
        return sse({**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish,
                                         "logprobs": logprobs}]})

    for ch in body["choices"]:
        i, msg = ch["index"], ch["message"]
        yield chunk(i, {"role": "assistant", "content": ""})
        for piece in text_chunks(msg["content"] or ""):
            yield chunk(i, {"content": piece})
        for k, call in enumerate(msg.get("tool_calls") or []):
            yield chunk(i, {"tool_calls": [{"index": k, **call}]})
        yield chunk(i, {}, ch["finish_reason"], ch["logprobs"])  # all the choice's token log-probs at once
    if include_usage:
        yield sse({**base, "choices": [], "usage": body["usage"]})
    yield SSE_DONE


async def _text_events(body: dict[str, Any], include_usage: bool) -> AsyncIterator[str]:
    """``text_completion`` chunk events for a finished completion, then ``[DONE]``."""
    base = {"id": body["id"], "object": "text_completion", "created": body["created"], "model": body["model"]}
    for ch in body["choices"]:
        for piece in text_chunks(ch["text"]):
            yield sse({**base, "choices": [{"index": ch["index"], "text": piece, "finish_reason": None,
                                            "logprobs": None}]})
        yield sse({**base, "choices": [{"index": ch["index"], "text": "", "finish_reason": ch["finish_reason"],
                                        "logprobs": ch["logprobs"]}]})
    if include_usage:
        yield sse({**base, "choices": [], "usage": body["usage"]})
    yield SSE_DONE


def _live_chat(st: _State, job: Any, req: Any, prompt_tokens: int) -> AsyncIterator[str]:
    """``chat.completion.chunk`` events sent while the choices are generated."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": st.name, "system_fingerprint": None}
    tok = st.sampler.tokenizer

    def event(i: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> str:
        return sse({**base, "choices": [{"index": i, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]})

    def chunk(i: int, text: str | None, c: Completion | None) -> str:
        out = event(i, {"content": text}) if text else ""
        if c is not None:
            out += event(i, {}, "length" if c.finish_reason == "length" else "stop",
                         chat_logprobs(tok, c) if req.logprobs else None)
        return out

    return _with_head([event(i, {"role": "assistant", "content": ""}) for i in range(req.n)],
                      live_events(st.batcher, job, tok, req.n, chunk, _usage_event(base, prompt_tokens, req)))


def _live_text(st: _State, job: Any, req: Any, prompt_tokens: int) -> AsyncIterator[str]:
    """``text_completion`` events sent while the choices are generated."""
    base = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": st.name}
    tok = st.sampler.tokenizer

    def chunk(i: int, text: str | None, c: Completion | None) -> str:
        out = sse({**base, "choices": [{"index": i, "text": text, "finish_reason": None, "logprobs": None}]}) \
            if text else ""
        if c is not None:
            out += sse({**base, "choices": [{"index": i, "text": "", "logprobs": None if req.logprobs is None else
                                             text_logprobs(tok, c),
                                             "finish_reason": "length" if c.finish_reason == "length" else "stop"}]})
        return out

    n = len(job.prompts)
    return live_events(st.batcher, job, tok, n, chunk, _usage_event(base, prompt_tokens, req))


def _usage_event(base: dict[str, Any], prompt_tokens: int, req: Any) -> Any:
    if not (req.stream_options and req.stream_options.include_usage):
        return None
    return lambda outs: sse({**base, "choices": [], "usage": _usage(prompt_tokens, outs)})


async def _with_head(head: list[str], rest: AsyncIterator[str]) -> AsyncIterator[str]:
    for line in head:
        yield line
    async for line in rest:
        yield line
