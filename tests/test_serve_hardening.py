"""``verity serve`` hardening (issue 11, Server section): a 500 that does not leak exception text,
header/body read deadlines (raw sockets against a real server), token log-probs in OpenAI's
shape (checked with the official ``openai`` client against a forward pass), and requests with
different seeds sharing one batch while each stays reproducible."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import httpx
import openai
import pytest
import torch

from verity.serve.launch import ServerProcess

NAME = "tiny"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def sampler(tiny_model_dir: str):
    from verity.rollout.hf_sampler import HFSampler

    return HFSampler.from_pretrained(tiny_model_dir, batch_size=32, dtype="fp32")


class Recorder:
    """Wraps a sampler: records every batch (sizes, completions); optionally holds it until ``gate``."""

    def __init__(self, inner, fail: Exception | None = None):
        self.inner, self.model, self.tokenizer = inner, inner.model, inner.tokenizer
        self.context = getattr(inner, "context", None)
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[int] = []
        self.outs: list = []
        self.fail = fail

    def generate_ids(self, prompts, args, seeds=None):
        self.calls.append(len(prompts))
        assert self.gate.wait(20)
        if self.fail is not None:
            raise self.fail
        outs = self.inner.generate_ids(prompts, args, *([] if seeds is None else [seeds]))
        self.outs.extend(outs)
        return outs


def _client(tc) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=tc, max_retries=0)


# ---------------------------------------------------------------- 500
def test_internal_error_is_logged_not_sent(sampler, caplog: pytest.LogCaptureFixture) -> None:
    from fastapi.testclient import TestClient

    from verity.serve.app import create_app

    rec = Recorder(sampler, fail=RuntimeError("secret detail /home/someone/weights.bin"))
    with caplog.at_level(logging.ERROR), TestClient(create_app(rec, NAME), raise_server_exceptions=False) as tc:
        r = tc.post(CHAT, json={"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["type"] == "server_error" and "secret" not in r.text and "RuntimeError" not in r.text
    assert "secret detail" in caplog.text  # the operator still sees what happened


# ---------------------------------------------------------------- seeds and batching
def test_different_seeds_share_a_batch_and_each_stays_reproducible(sampler) -> None:
    import asyncio

    from verity.serve.app import create_app

    rec = Recorder(sampler)
    rec.gate.clear()
    app = create_app(rec, NAME, max_batch_size=16, batch_wait_s=0.5)
    msgs = [{"role": "user", "content": "hello there"}]
    bodies = [{"model": NAME, "messages": msgs, "max_tokens": 8, "temperature": 1.0, "seed": s} for s in range(6)]

    async def go():
        batcher = app.state.verity.batcher
        batcher.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                tasks = [asyncio.create_task(c.post(CHAT, json=b)) for b in bodies]
                await asyncio.sleep(0.5)
                rec.gate.set()
                together = await asyncio.gather(*tasks)
                alone = [await c.post(CHAT, json=b) for b in bodies]
                return together, alone
        finally:
            await batcher.stop()

    together, alone = asyncio.run(go())
    assert rec.calls[:len(rec.calls) - 6] == [6] or sorted(rec.calls[:-6]) == [1, 5]  # one batch (+ the first)
    texts = [r.json()["choices"][0]["message"]["content"] for r in together]
    assert texts == [r.json()["choices"][0]["message"]["content"] for r in alone]
    assert len(set(texts)) > 1  # the seeds do make a difference


# ---------------------------------------------------------------- log-probs
def _reference(sampler, prompt_ids, completion_ids, temperature: float) -> torch.Tensor:
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        logits = sampler.model(ids).logits[0, len(prompt_ids) - 1:-1].float()
    return torch.log_softmax(logits / (temperature or 1.0), -1)


def test_chat_logprobs_match_the_model(sampler) -> None:
    from fastapi.testclient import TestClient

    from verity.serve.app import create_app

    rec = Recorder(sampler)
    msgs = [{"role": "user", "content": "hello there"}]
    with TestClient(create_app(rec, NAME)) as tc:
        c = _client(tc)
        r = c.chat.completions.create(model=NAME, messages=msgs, max_tokens=6, temperature=0.7, seed=5,
                                      logprobs=True, top_logprobs=3)
        out = rec.outs[-1]
        content = r.choices[0].logprobs.content
        assert len(content) == r.usage.completion_tokens == len(out.completion_ids)
        ref = _reference(sampler, out.prompt_ids, out.completion_ids, 0.7)
        tok = sampler.tokenizer
        for n, (e, t) in enumerate(zip(content, out.completion_ids, strict=True)):
            assert e.token == tok.decode([t])
            assert abs(e.logprob - float(ref[n, t])) < 1e-4
            vals, idx = ref[n].topk(3)
            assert [a.token for a in e.top_logprobs] == [tok.decode([i]) for i in idx.tolist()]
            assert all(abs(a.logprob - float(v)) < 1e-4 for a, v in zip(e.top_logprobs, vals, strict=True))
        raw = b"".join(bytes(e.bytes) for e in content)  # the bytes concatenate to the completion's text
        assert raw.decode("utf-8", "replace") == tok.decode(list(out.completion_ids))
        stream = c.chat.completions.create(model=NAME, messages=msgs, max_tokens=6, temperature=0.7, seed=5,
                                           logprobs=True, top_logprobs=3, stream=True)
        streamed = [e for ch in stream if ch.choices and ch.choices[0].logprobs for e in ch.choices[0].logprobs.content]
        assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]
        plain = c.chat.completions.create(model=NAME, messages=msgs, max_tokens=6, temperature=0.7, seed=5)
        assert plain.choices[0].logprobs is None and plain.choices[0].message.content == r.choices[0].message.content
        greedy = c.chat.completions.create(model=NAME, messages=msgs, max_tokens=4, temperature=0, logprobs=True)
        g = rec.outs[-1]
        gref = _reference(sampler, g.prompt_ids, g.completion_ids, 0.0)
        assert [abs(e.logprob - float(gref[n].max())) < 1e-4 for n, e in enumerate(greedy.choices[0].logprobs.content)]
        assert all(e.top_logprobs == [] for e in greedy.choices[0].logprobs.content)
        with pytest.raises(openai.BadRequestError, match="top_logprobs"):
            c.chat.completions.create(model=NAME, messages=msgs, max_tokens=2, top_logprobs=2)
        with pytest.raises(openai.BadRequestError, match="top_logprobs"):
            c.chat.completions.create(model=NAME, messages=msgs, max_tokens=2, logprobs=True, top_logprobs=21)


def test_completion_logprobs_in_the_legacy_shape(sampler) -> None:
    from fastapi.testclient import TestClient

    from verity.serve.app import create_app

    rec = Recorder(sampler)
    with TestClient(create_app(rec, NAME)) as tc:
        c = _client(tc)
        r = c.completions.create(model=NAME, prompt="hello there", max_tokens=6, temperature=1.0, seed=2, logprobs=2)
        out, lp = rec.outs[-1], r.choices[0].logprobs
        n = len(out.completion_ids)
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n
        ref = _reference(sampler, out.prompt_ids, out.completion_ids, 1.0)
        for k, t in enumerate(out.completion_ids):
            assert abs(lp.token_logprobs[k] - float(ref[k, t])) < 1e-4
            top = lp.top_logprobs[k]  # the 2 most likely, plus the sampled token (OpenAI: up to logprobs + 1)
            assert 1 <= len(top) <= 3 and top[lp.tokens[k]] >= lp.token_logprobs[k]
            assert abs(max(top.values()) - float(ref[k].max())) < 1e-4
        assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
        with pytest.raises(openai.BadRequestError, match="echo"):
            c.completions.create(model=NAME, prompt="hi", max_tokens=2, echo=True)


# ---------------------------------------------------------------- read deadlines (real server, raw sockets)
@pytest.fixture(scope="module")
def deadline_server(tiny_model_dir: str):
    with ServerProcess(tiny_model_dir, "--served-model-name", NAME, "--header-timeout", "1", "--body-timeout", "1",
                       env={"OMP_NUM_THREADS": "1"}) as srv:
        yield srv


def _until_closed(sock: socket.socket, drip: bytes = b"", limit: float = 8.0) -> tuple[bytes, float]:
    """Read until the server closes the connection (dripping ``drip`` a byte per 0.2 s meanwhile)."""
    t0, got = time.monotonic(), b""
    sock.settimeout(0.2)
    while time.monotonic() - t0 < limit:
        if drip:
            with contextlib.suppress(OSError):
                sock.sendall(drip[:1])
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return got, time.monotonic() - t0


@pytest.mark.parametrize("case", ["silent", "partial-headers", "partial-body", "dripping-body"])
def test_slow_clients_are_cut_off(deadline_server: ServerProcess, case: str) -> None:
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            "content-length: 1000\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", deadline_server.port)) as s:
        if case == "partial-headers":
            s.sendall(head[:30])
        elif case != "silent":
            s.sendall(head + b'{"model": ')
        got, took = _until_closed(s, drip=b"x" * 100 if case == "dripping-body" else b"")
    assert took < 5, f"connection still open after {took:.1f}s"
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b"not received within 1 s" in got
    assert httpx.get(deadline_server.url + "/health", timeout=10).status_code == 200  # still serving
