"""Tests for ``verity serve``: a real server subprocess driven by the official ``openai`` client
(sync and async, streaming and not), ``verity eval`` against it, malformed requests (4xx in
OpenAI's error shape, server still up), schemathesis property tests of the served OpenAPI
schema, and in-process tests of dynamic batching, 429 back-pressure and tool calls."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import openai
import pytest

from verity.serve.launch import ServerProcess
from verity.types import Completion

NAME = "tiny"
KEY = "test-key-0123456789"
KEY_VAR = "VERITY_SERVE_TEST_KEY"
AUTH = {"Authorization": f"Bearer {KEY}"}
HI = [{"role": "user", "content": "hello there"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from verity.envs.pii_masking import tokenizer_corpus
    from verity.models.tokenizer import make_tiny_model

    return make_tiny_model(str(tmp_path_factory.mktemp("tiny")), tokenizer_corpus(), hidden_size=64,
                           max_position_embeddings=1024)


@pytest.fixture(scope="module")
def server(tiny_dir: str):
    srv = ServerProcess(tiny_dir, "--served-model-name", NAME, "--api-key-env", KEY_VAR, "--default-max-tokens", "16",
                        "--max-batch-size", "32", env={KEY_VAR: KEY, "OMP_NUM_THREADS": "1"})
    with srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def sampler(tiny_dir: str):
    from verity.rollout.hf_sampler import HFSampler

    return HFSampler.from_pretrained(tiny_dir, batch_size=32, dtype="fp32")


# ---------------------------------------------------------------- real server, openai client
def test_models_health_and_auth(server: ServerProcess, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [NAME]
    assert client.models.retrieve(NAME).id == NAME
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.get(server.base_url + "/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base_url, api_key="nope", max_retries=0).models.list()


def test_chat_sync_n_and_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=NAME, messages=HI, max_tokens=5, n=3, temperature=1.0, top_p=0.9, seed=1)
    assert r.object == "chat.completion" and r.model == NAME and len(r.choices) == 3
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.role == "assistant" and isinstance(c.message.content, str) for c in r.choices)
    assert all(c.finish_reason in ("stop", "length") for c in r.choices)
    assert r.usage.prompt_tokens > 0 and 3 <= r.usage.completion_tokens <= 15
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    r2 = client.chat.completions.create(model=NAME, messages=HI, max_completion_tokens=4, temperature=0)
    assert r2.usage.completion_tokens <= 4


def test_stream_matches_non_stream_and_seed_is_reproducible(client: openai.OpenAI) -> None:
    kw = dict(model=NAME, messages=HI, max_tokens=8, temperature=0)
    full = client.chat.completions.create(**kw).choices[0].message.content
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 8
    seeded = dict(model=NAME, messages=HI, max_tokens=8, temperature=1.0, seed=1234)
    a, b = (client.chat.completions.create(**seeded).choices[0].message.content for _ in range(2))
    assert a == b


def test_completions_endpoint(client: openai.OpenAI) -> None:
    r = client.completions.create(model=NAME, prompt="My name is", max_tokens=4, n=2)
    assert r.object == "text_completion" and len(r.choices) == 2 and r.usage.completion_tokens <= 8
    r = client.completions.create(model=NAME, prompt=["one", "two", "three"], max_tokens=3, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2]
    r = client.completions.create(model=NAME, prompt=[5, 6, 7], max_tokens=3)
    assert r.usage.prompt_tokens == 3
    parts = list(client.completions.create(model=NAME, prompt="abc", max_tokens=4, temperature=0, stream=True))
    assert parts[-1].choices[0].finish_reason in ("stop", "length")


def test_async_client_concurrent_and_streaming(server: ServerProcess) -> None:
    before = httpx.get(server.url + "/health").json()

    async def go() -> tuple[list, str]:
        aclient = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=60)
        reqs = [aclient.chat.completions.create(model=NAME, messages=[{"role": "user", "content": f"q{i}"}],
                                                max_tokens=6, temperature=0.7) for i in range(24)]
        results = await asyncio.gather(*reqs)
        stream = await aclient.chat.completions.create(model=NAME, messages=HI, max_tokens=5, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await aclient.close()
        return results, text

    results, text = asyncio.run(go())
    assert len(results) == 24 and all(r.choices[0].message.content is not None for r in results)
    assert isinstance(text, str)
    after = httpx.get(server.url + "/health").json()
    assert after["requests"] - before["requests"] == 25
    assert after["batches"] - before["batches"] < 25  # concurrent requests shared batches


def test_tools_request_accepted(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "weather in Paris?"}],
                                       tools=[WEATHER], tool_choice="auto", max_tokens=6)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    history = [{"role": "user", "content": "weather?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    r = client.chat.completions.create(model=NAME, messages=history, tools=[WEATHER], max_tokens=4)
    assert r.usage.prompt_tokens > 10


def test_verity_eval_against_server(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "ev"
    cmd = [sys.executable, "-m", "verity", "eval", "reverse-text", "-b", server.base_url, "-m", NAME, "-k", KEY_VAR,
           "-n", "2", "-r", "2", "-t", "8", "-o", str(out), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, KEY_VAR: KEY})
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["model"] == NAME and summary["errors"] == 0 and "reward" in summary["metrics"]
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["error"] is None for r in rows)
    assert json.loads((out / "metadata.json").read_text())["status"] == "done"


# ---------------------------------------------------------------- malformed requests
CHAT, COMP = "/v1/chat/completions", "/v1/completions"
OK_CHAT = {"model": NAME, "messages": HI, "max_tokens": 2}
MALFORMED = [
    ("bad-json", "POST", CHAT, b'{"model": "tiny", "messages": [', 400, "invalid_json", None),
    ("empty-body", "POST", CHAT, b"", 400, None, None),
    ("body-is-array", "POST", CHAT, [1, 2], 400, None, None),
    ("messages-not-list", "POST", CHAT, {**OK_CHAT, "messages": "hi"}, 400, None, "messages"),
    ("messages-empty", "POST", CHAT, {**OK_CHAT, "messages": []}, 400, None, "messages"),
    ("bad-role", "POST", CHAT, {**OK_CHAT, "messages": [{"role": "wizard", "content": "x"}]},
     400, None, "messages.0.role"),
    ("temperature-string", "POST", CHAT, {**OK_CHAT, "temperature": "hot"}, 400, None, "temperature"),
    ("temperature-range", "POST", CHAT, {**OK_CHAT, "temperature": 3.5}, 400, None, "temperature"),
    ("top-p-zero", "POST", CHAT, {**OK_CHAT, "top_p": 0}, 400, None, "top_p"),
    ("max-tokens-string", "POST", CHAT, {**OK_CHAT, "max_tokens": "5"}, 400, None, "max_tokens"),
    ("max-tokens-negative", "POST", CHAT, {**OK_CHAT, "max_tokens": -1}, 400, None, "max_tokens"),
    ("n-zero", "POST", CHAT, {**OK_CHAT, "n": 0}, 400, None, "n"),
    ("stream-string", "POST", CHAT, {**OK_CHAT, "stream": "yes"}, 400, None, "stream"),
    ("missing-model", "POST", CHAT, {"messages": HI}, 400, None, "model"),
    ("image-content", "POST", CHAT, {**OK_CHAT, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, 400, None, "messages"),
    ("unknown-model", "POST", CHAT, {**OK_CHAT, "model": "gpt-9"}, 404, "model_not_found", "model"),
    ("max-tokens-too-many", "POST", CHAT, {**OK_CHAT, "max_tokens": 100_000},
     400, "context_length_exceeded", "messages"),
    ("prompt-too-long", "POST", CHAT, {**OK_CHAT, "messages": [{"role": "user", "content": "word " * 3000}]},
     400, "context_length_exceeded", "messages"),
    ("too-many-sequences", "POST", COMP, {"model": NAME, "prompt": ["a"] * 20, "n": 10, "max_tokens": 2},
     400, None, "n"),
    ("tool-choice-unknown", "POST", CHAT, {**OK_CHAT, "tools": [WEATHER], "tool_choice": {
        "type": "function", "function": {"name": "nope"}}}, 400, None, "tool_choice"),
    ("completion-token-out-of-vocab", "POST", COMP, {"model": NAME, "prompt": [10**7]}, 400, None, "prompt"),
    ("completion-empty-prompt", "POST", COMP, {"model": NAME, "prompt": ""}, 400, None, "prompt"),
    ("completion-too-long", "POST", COMP, {"model": NAME, "prompt": "x " * 3000},
     400, "context_length_exceeded", "prompt"),
    ("unknown-path", "POST", "/v1/nothing", OK_CHAT, 404, None, None),
    ("wrong-method", "GET", CHAT, None, 405, None, None),
    ("no-auth", "POST-NOAUTH", CHAT, OK_CHAT, 401, "invalid_api_key", None),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_requests_get_openai_errors(server: ServerProcess, case: tuple) -> None:
    _, method, path, body, status, code, param = case
    headers = {} if method == "POST-NOAUTH" else dict(AUTH)
    kw: dict = {"headers": headers, "timeout": 30}
    if isinstance(body, bytes):
        kw["content"], headers["content-type"] = body, "application/json"
    elif body is not None:
        kw["json"] = body
    r = httpx.request(method.split("-")[0], server.url + path, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    assert server.alive()


def test_openai_client_errors_and_server_survives(server: ServerProcess, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, messages=HI, max_tokens=10**6)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=HI, max_tokens=2)
    assert server.alive()
    assert client.chat.completions.create(model=NAME, messages=HI, max_tokens=3).choices


# ---------------------------------------------------------------- OpenAPI schema, property-based
@pytest.fixture(scope="module")
def api_schema(server: ServerProcess):
    import schemathesis
    from schemathesis.config import SchemathesisConfig

    config = SchemathesisConfig.from_dict({
        "generation": {"mode": "all", "max-examples": 8, "database": "none"},
        "phases": {"coverage": {"enabled": False}},
        "headers": AUTH,
    })
    return schemathesis.openapi.from_url(server.url + "/openapi.json", config=config)


def _cap_generation(body: object) -> None:
    """Keep schema-valid requests cheap on CPU: large n / max_tokens are lowered (still valid)."""
    if not isinstance(body, dict):
        return
    for key, cap in (("n", 2), ("max_tokens", 8), ("max_completion_tokens", 8)):
        v = body.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and cap < v <= 1024:
            body[key] = cap


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_openapi_schema_property_based(api_schema, server: ServerProcess, mode: str) -> None:
    """Schema-valid requests never crash the server and get documented answers; invalid ones get a 4xx.

    (schemathesis' own pytest plugin is not used: its parametrize breaks on pytest 9.)"""
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    if mode == "negative":
        checks.append(negative_data_rejection)
    seen: list[tuple[str, int, str]] = []

    def check(case) -> None:  # type: ignore[no-untyped-def]
        if mode == "positive" and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = NAME  # valid model, so that generation runs (unknown models: malformed tests)
            _cap_generation(case.body)
        response = case.call(headers=AUTH, timeout=60)
        seen.append((case.operation.label, response.status_code, response.text[:120]))
        case.validate_response(response, checks=checks, headers=AUTH)

    for op in api_schema.get_all_operations():
        op = op.ok()
        n = 20 if op.method.upper() == "POST" else 4
        strategy = op.as_strategy(generation_mode=GenerationMode(mode))
        test = settings(max_examples=n, deadline=None, database=None, derandomize=True,
                        suppress_health_check=list(HealthCheck))(given(case=strategy)(check))
        try:
            test()
        except Unsatisfiable:  # nothing to get wrong (no parameters): no negative cases exist
            assert mode == "negative" and op.method.upper() == "GET", op.label
    assert server.alive()
    posts = {label for label, _, _ in seen if label.startswith("POST")}
    # vLLM's LoRA hot-reload endpoints (issue #18) are fuzzed too: random adapter paths must get a 4xx, never a 5xx
    assert posts == {"POST /v1/chat/completions", "POST /v1/completions",
                     "POST /v1/load_lora_adapter", "POST /v1/unload_lora_adapter"}, seen
    if mode == "positive":
        ok = {label for label, status, _ in seen if status == 200}
        assert {"POST /v1/chat/completions", "POST /v1/completions"} <= ok, seen


def test_openapi_schema_documents_400_not_422(server: ServerProcess) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/completions"):
        responses = schema["paths"][path]["post"]["responses"]
        assert "422" not in responses and {"200", "400", "401", "404", "429"} <= set(responses)


# ---------------------------------------------------------------- in-process: batching, 429, tools
class GateSampler:
    """Wraps a sampler; every generate_ids call is recorded and waits for ``gate``."""

    def __init__(self, inner, canned: str | None = None):
        self.inner, self.model, self.tokenizer = inner, inner.model, inner.tokenizer
        self.gate = threading.Event()
        self.calls: list[tuple[int, int]] = []
        self.prompts: list[list[int]] = []
        self.canned = canned

    def generate_ids(self, prompts, args, seeds=None):
        self.calls.append((len(prompts), args.max_tokens))
        self.prompts.extend(prompts)
        assert self.gate.wait(20)
        if self.canned is None:
            return self.inner.generate_ids(prompts, args, seeds)
        ids = tuple(self.tokenizer(self.canned, add_special_tokens=False)["input_ids"])
        return [Completion(text=self.canned, completion_ids=ids, logprobs=(0.0,) * len(ids), prompt_ids=tuple(p),
                           usage={"prompt_tokens": len(p), "completion_tokens": len(ids)}) for p in prompts]


async def _with_app(app, fn):
    batcher = app.state.verity.batcher
    batcher.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await fn(c)
    finally:
        await batcher.stop()


def _fire(app, gate: threading.Event, bodies: list[dict]) -> list[httpx.Response]:
    """Send ``bodies`` at once while generation is held, release it, then send one more request (last)."""
    async def go(c: httpx.AsyncClient) -> list[httpx.Response]:
        tasks = [asyncio.create_task(c.post(CHAT, json=b)) for b in bodies]
        await asyncio.sleep(0.3)  # all requests admitted or refused while generation is held
        gate.set()
        return [*await asyncio.gather(*tasks), await c.post(CHAT, json=bodies[0])]

    return asyncio.run(_with_app(app, go))


def test_queue_full_gives_429_and_recovers(sampler) -> None:
    from verity.serve.app import create_app

    gs = GateSampler(sampler)
    app = create_app(gs, NAME, max_batch_size=1, max_queue=2)
    *rs, after = _fire(app, gs.gate, [{**OK_CHAT, "max_tokens": 2}] * 6)
    assert sorted(r.status_code for r in rs) == [200, 200, 429, 429, 429, 429]
    refused = next(r for r in rs if r.status_code == 429)
    err = refused.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and set(err) == {"message", "type", "param", "code"}
    assert refused.headers["retry-after"] == "1"
    assert after.status_code == 200 and len(gs.calls) == 3  # the queue drained and the server answers again


def test_concurrent_requests_are_batched_by_sampling_args(sampler) -> None:
    from verity.serve.app import create_app

    gs = GateSampler(sampler)
    app = create_app(gs, NAME, max_batch_size=16, max_queue=64)
    bodies = [{**OK_CHAT, "max_tokens": 2 + i % 2, "messages": [{"role": "user", "content": f"m{i}"}]}
              for i in range(10)]
    rs = _fire(app, gs.gate, bodies)[:-1]
    assert all(r.status_code == 200 for r in rs)
    calls = gs.calls[:-1]
    assert sum(n for n, _ in calls) == 10 and len(calls) <= 3  # one held batch + one per max_tokens group
    assert max(n for n, _ in calls) >= 4
    for r, b in zip(rs, bodies, strict=False):
        assert r.json()["usage"]["completion_tokens"] <= b["max_tokens"]


def test_tool_calls_in_openai_shape(sampler) -> None:
    from fastapi.testclient import TestClient

    from verity.serve.app import create_app

    gs = GateSampler(sampler, canned='Checking.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                                      '</tool_call> ok STOP tail')
    gs.gate.set()
    with TestClient(create_app(gs, NAME)) as tc:
        c = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=tc, max_retries=0)
        msgs = [{"role": "user", "content": "weather in Paris?"}]
        r = c.chat.completions.create(model=NAME, messages=msgs, tools=[WEATHER], max_tokens=8, stop=["STOP"])
        ch = r.choices[0]
        assert ch.finish_reason == "tool_calls"
        assert ch.message.content == "Checking. ok"
        call = ch.message.tool_calls[0]
        assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        prompt = sampler.tokenizer.decode(gs.prompts[-1])
        assert "get_weather" in prompt and "<tool_call>" in prompt
        chunks = list(c.chat.completions.create(model=NAME, messages=msgs, tools=[WEATHER], max_tokens=8, stream=True))
        deltas = [d.choices[0].delta.tool_calls for d in chunks if d.choices and d.choices[0].delta.tool_calls]
        assert deltas[0][0].function.name == "get_weather" and chunks[-1].choices[0].finish_reason == "tool_calls"
        r = c.chat.completions.create(model=NAME, messages=msgs, tools=[WEATHER], tool_choice="none", max_tokens=8)
        assert r.choices[0].message.tool_calls is None and "<tool_call>" in r.choices[0].message.content
        assert "get_weather" not in sampler.tokenizer.decode(gs.prompts[-1])
