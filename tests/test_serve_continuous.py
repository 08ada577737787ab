"""Continuous batching and live streaming in ``verity serve`` (in process, a tiny random model).

* a streamed request's first tokens reach the client while the batch is still decoding;
* a request that arrives while a batch decodes joins it between decode steps and gets the same
  completion as alone (same seed);
* a request whose KV cache cannot fit in the server's budget is refused with 400, and one that
  fits only once the running batch ends waits for it (no 500).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from verity.serve.batcher import Batcher, KVTooLarge
from verity.types import SamplingArgs

NAME = "tiny"


@pytest.fixture(scope="module")
def sampler(tmp_path_factory: pytest.TempPathFactory):
    from verity.envs.pii_masking import tokenizer_corpus
    from verity.models.tokenizer import make_tiny_model
    from verity.rollout.hf_sampler import HFSampler

    d = make_tiny_model(str(tmp_path_factory.mktemp("tiny")), tokenizer_corpus(), hidden_size=64,
                        max_position_embeddings=1024)
    s = HFSampler.from_pretrained(d, batch_size=16, dtype="fp32")
    s.eos_ids = [10_000]  # never sampled: every completion is max_tokens long
    return s


@pytest.fixture
def steps(sampler):
    """Counts the model's forwards (prefills and decode steps)."""
    n = {"forwards": 0}

    def hook(*_):
        n["forwards"] += 1

    h = sampler.model.register_forward_pre_hook(hook)
    yield n
    h.remove()


def _prompt(sampler, text: str) -> list[int]:
    return sampler.render([{"role": "user", "content": text}])


def test_stream_starts_before_the_last_token(sampler, steps) -> None:
    T = 40

    async def go() -> tuple[int | None, list[int], list]:
        b = Batcher(sampler, max_batch_size=8)
        b.start()
        try:
            job = b.enqueue([_prompt(sampler, "hello")], SamplingArgs(max_tokens=T, temperature=1.0, seed=5),
                            stream=True)
            first_at, got = None, []
            async for kind, payload in b.events(job):
                if kind == "tokens":
                    first_at = steps["forwards"] if first_at is None else first_at
                    got.extend(t for _, t in payload)
                else:
                    final = payload
            return first_at, got, final
        finally:
            await b.stop()

    first_at, streamed, final = asyncio.run(go())
    assert first_at is not None and first_at < T // 2  # the first tokens came with the first decode steps
    assert streamed == list(final[0].completion_ids) and len(streamed) == T


def test_late_request_joins_the_running_batch(sampler) -> None:
    args = SamplingArgs(max_tokens=30, temperature=1.0, seed=11)
    pa, pb = _prompt(sampler, "first request, a long one with many words"), _prompt(sampler, "second")

    async def go() -> tuple[list, list, dict]:
        b = Batcher(sampler, max_batch_size=8)
        b.start()
        try:
            job_a = b.enqueue([pa], args, stream=True)
            events = b.events(job_a)
            kind, _ = await events.__anext__()  # A is decoding now
            assert kind == "tokens"
            out_b = await b.submit([pb], args.replace(seed=12))
            out_a = None
            async for kind, payload in events:
                if kind == "done":
                    out_a = payload
            return out_a, out_b, dict(b.stats)
        finally:
            await b.stop()

    out_a, out_b, stats = asyncio.run(go())
    assert stats["batches"] == 1 and stats["requests"] == 2  # B joined A's batch
    from verity.serve.batcher import row_seed

    alone_a = sampler.generate_ids([pa], args.replace(seed=None), seeds=[row_seed(11, 0)])[0]
    alone_b = sampler.generate_ids([pb], args.replace(seed=None), seeds=[row_seed(12, 0)])[0]
    assert out_a[0].completion_ids == alone_a.completion_ids
    assert out_b[0].completion_ids == alone_b.completion_ids


def test_kv_budget_refuses_or_queues(sampler) -> None:
    p = _prompt(sampler, "hello there")
    need = len(p) + 16  # one sequence of max_tokens 16

    async def go() -> dict:
        b = Batcher(sampler, max_batch_size=8, max_kv_tokens=need + 5)
        b.start()
        try:
            with pytest.raises(KVTooLarge, match="KV-cache positions"):
                b.enqueue([p, p], SamplingArgs(max_tokens=16, temperature=0))  # two sequences: never fits
            outs = await asyncio.gather(*(b.submit([p], SamplingArgs(max_tokens=16, temperature=0)) for _ in range(2)))
            assert all(len(o[0].completion_ids) == 16 for o in outs)
            return dict(b.stats)
        finally:
            await b.stop()

    stats = asyncio.run(go())
    assert stats["batches"] == 2 and stats["largest_batch"] == 1  # the second waited instead of joining


def test_kv_refusal_is_a_400_in_openai_shape(sampler) -> None:
    from verity.serve.app import create_app

    app = create_app(sampler, NAME, max_kv_tokens=64)

    async def go() -> tuple[httpx.Response, httpx.Response]:
        batcher = app.state.verity.batcher
        batcher.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                msgs = [{"role": "user", "content": "hi"}]
                big = await c.post("/v1/chat/completions", json={"model": NAME, "messages": msgs, "max_tokens": 60,
                                                                 "n": 4, "stream": True})
                ok = await c.post("/v1/chat/completions", json={"model": NAME, "messages": msgs, "max_tokens": 4})
                return big, ok
        finally:
            await batcher.stop()

    big, ok = asyncio.run(go())
    assert big.status_code == 400 and big.json()["error"]["code"] == "kv_cache_exceeded"
    assert "KV-cache positions" in big.json()["error"]["message"]
    assert ok.status_code == 200
