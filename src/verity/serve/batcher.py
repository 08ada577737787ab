"""Dynamic batching for ``verity serve``: concurrent requests share one generation call.

Each request puts a job (its tokenised prompts and :class:`~verity.types.SamplingArgs`) on a
bounded :class:`asyncio.Queue`; a single worker task takes the oldest job, adds every waiting
job with the same batching key (max_tokens, temperature, top_p) up to ``max_batch_size``
sequences, runs ``sampler.generate_ids`` in a thread and resolves each job's future. Jobs with
another key wait, in order, for the next round. Seeds do not split batches: every sequence
samples from its own generator, seeded from its request's seed and its index in the request,
so a seeded request gets the same completions whichever requests share its batch. Admission
is bounded: more than ``max_queue`` unfinished requests raises :class:`QueueFull` (the server
answers 429), so load never piles up.

With a sampler that supports it (``generate_continuous``), requests also join a running batch
between decode steps and streamed requests get their tokens as they are generated
(:mod:`verity.serve.continuous`); ``max_kv_tokens`` bounds the KV cache a batch may hold.

Stop strings are applied per request after generation (the sampler cuts at them after the
fact anyway), and ``top_logprobs`` are computed for the largest k in the batch and cut per
request, so neither splits batches. The worker is the only caller of the sampler.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from verity.types import Completion, SamplingArgs

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The batcher holds ``max_queue`` unfinished requests already."""


class KVTooLarge(Exception):
    """A request whose KV cache alone exceeds the server's KV budget (it could never run)."""


@dataclasses.dataclass
class _Job:
    prompts: list[list[int]]
    args: SamplingArgs
    future: asyncio.Future
    #: Token events for a streaming request: ("tokens", [(index, token id), ...]), ("done", completions)
    #: or ("error", exception); None when the request is not streamed.
    events: asyncio.Queue | None = None

    @property
    def kv_tokens(self) -> int:
        """KV-cache positions the request holds at most: sequences × (longest prompt + max_tokens)."""
        return len(self.prompts) * (max(len(p) for p in self.prompts) + self.args.max_tokens)

    @property
    def key(self) -> tuple[Any, ...]:
        a = self.args
        if a.temperature <= 0:  # greedy: top_p makes no difference
            return (a.max_tokens, 0.0, 1.0)
        return (a.max_tokens, a.temperature, a.top_p)

    def row_seeds(self) -> list[int]:
        """One sampling seed per sequence: from the request's seed (random without one) and the index."""
        base = self.args.seed if self.args.seed is not None else secrets.randbits(63)
        return [row_seed(base, i) for i in range(len(self.prompts))]


def kv_bytes_per_token(model: Any) -> int:
    """Bytes of KV cache one position takes: 2 (K, V) × layers × KV heads × head dim × element size."""
    cfg = model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    elem = next(model.parameters()).element_size()
    return 2 * cfg.num_hidden_layers * heads * head_dim * elem


def auto_kv_tokens(model: Any, fraction: float = 0.9) -> int | None:
    """KV positions that fit in ``fraction`` of the accelerator's free memory; None (no limit) on a CPU."""
    dev = next(model.parameters()).device
    if dev.type != "cuda":
        return None
    import torch

    free, _ = torch.cuda.mem_get_info(dev)
    return max(1, int(free * fraction) // kv_bytes_per_token(model))


def row_seed(seed: int, index: int) -> int:
    """The generator seed of sequence ``index`` of a request with ``seed`` (any int, also negative)."""
    return (seed * 1_000_003 + index) % (2**63)


class Batcher:
    """Groups concurrent generation requests into batches for one local sampler."""

    def __init__(self, sampler: Any, max_batch_size: int = 32, max_queue: int = 256, batch_wait_s: float = 0.1,
                 max_kv_tokens: int | None = None):
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be >= 1")
        self.sampler = sampler
        #: KV-cache positions a batch may hold (None: no limit); see :attr:`_Job.kv_tokens`.
        self.max_kv_tokens = max_kv_tokens
        #: Whether batches take new requests between decode steps (the sampler supports it).
        self.continuous = callable(getattr(sampler, "generate_continuous", None))
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.batch_wait_s = batch_wait_s
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self._pending: collections.deque[_Job] = collections.deque()
        self._task: asyncio.Task | None = None
        self.unfinished = 0
        self._last_generation_s = 0.0
        self.stats: dict[str, float] = {"batches": 0, "sequences": 0, "requests": 0, "largest_batch": 0,
                                        "generation_s": 0.0}

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="verity-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            self._pending.append(self._queue.get_nowait())
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(RuntimeError("server shutting down"))
        self._pending.clear()

    # ------------------------------------------------------------ requests
    async def submit(self, prompts: Sequence[Sequence[int]], args: SamplingArgs) -> list[Completion]:
        """One completion per prompt, generated in a shared batch. Raises :class:`QueueFull`, :class:`KVTooLarge`."""
        return await self.enqueue(prompts, args).future  # a cancelled caller cancels the future: the job is skipped

    def enqueue(self, prompts: Sequence[Sequence[int]], args: SamplingArgs, stream: bool = False) -> _Job:
        """Queue a request; with ``stream``, its tokens arrive on ``job.events`` as they are generated
        (read them with :meth:`events`). Raises :class:`QueueFull` or :class:`KVTooLarge` at once."""
        if self._task is None or self._task.done():
            raise RuntimeError("batcher is not running")
        job = _Job([list(p) for p in prompts], args, asyncio.get_running_loop().create_future(),
                   asyncio.Queue() if stream else None)
        if self.max_kv_tokens is not None and job.kv_tokens > self.max_kv_tokens:
            raise KVTooLarge(f"this request needs {job.kv_tokens} KV-cache positions ({len(job.prompts)} sequences × "
                             f"(prompt + max_tokens)); the server holds at most {self.max_kv_tokens}")
        if self.unfinished >= self.max_queue:
            raise QueueFull(f"{self.unfinished} requests are waiting (limit {self.max_queue})")
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(f"queue is full (limit {self.max_queue})") from None
        self.unfinished += 1
        job.future.add_done_callback(self._finished)
        return job

    async def events(self, job: _Job) -> Any:
        """The events of a streamed job (see :class:`_Job`), ending with "done" or "error"."""
        assert job.events is not None
        try:
            while True:
                kind, payload = await job.events.get()
                yield kind, payload
                if kind != "tokens":
                    return
        finally:
            if not job.future.done():  # the client went away: drop the job's results
                job.future.cancel()

    def _finished(self, _: asyncio.Future) -> None:
        self.unfinished -= 1

    # ------------------------------------------------------------ worker
    async def _run(self) -> None:
        while True:
            first = self._pending.popleft() if self._pending else await self._queue.get()
            if first.future.done():
                continue
            await self._settle()
            batch = self._collect(first)
            try:
                await self._generate(batch)
            except asyncio.CancelledError:
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(RuntimeError("server shutting down"))
                raise
            except Exception as e:  # keep serving; the requests in this batch get a 500
                log.exception("generation failed")
                for job in batch:
                    if job.events is not None:
                        job.events.put_nowait(("error", e))
                    if not job.future.done():
                        job.future.set_exception(e)

    async def _settle(self, tick: float = 0.001) -> None:
        """Wait while requests keep arriving, so that clients answered by the last batch get their next
        requests into this one. Stops when the batch is full, after ``batch_wait_s``, or when nothing
        arrived for a quiet gap of 5% of the last batch's generation time (at least 2 ms): a lone
        client pays a few ms, and slow batches wait long enough to fill."""
        loop = asyncio.get_running_loop()
        quiet = min(self.batch_wait_s, max(0.002, 0.05 * self._last_generation_s))
        start = changed = loop.time()
        last = self._queue.qsize()
        while self._queue.qsize() + len(self._pending) + 1 < self.max_batch_size:
            now = loop.time()
            if now - start >= self.batch_wait_s or now - changed >= quiet:
                return
            await asyncio.sleep(tick)
            if self._queue.qsize() != last:
                last, changed = self._queue.qsize(), loop.time()

    def _collect(self, first: _Job) -> list[_Job]:
        """``first`` plus waiting jobs with its key, up to ``max_batch_size`` sequences, oldest first."""
        batch, size, key = [first], len(first.prompts), first.key
        skipped: collections.deque[_Job] = collections.deque()

        kv = first.kv_tokens

        def take(job: _Job) -> None:
            nonlocal size, kv
            if job.future.done():
                return
            if job.key == key and size + len(job.prompts) <= self.max_batch_size and self._kv_fits(kv + job.kv_tokens):
                batch.append(job)
                size += len(job.prompts)
                kv += job.kv_tokens
            else:
                skipped.append(job)

        while self._pending and size < self.max_batch_size:
            take(self._pending.popleft())
        while not self._queue.empty() and size < self.max_batch_size:
            take(self._queue.get_nowait())
        skipped.extend(self._pending)  # pending jobs not looked at stay behind the skipped ones
        self._pending = skipped
        return batch

    def _kv_fits(self, tokens: int) -> bool:
        return self.max_kv_tokens is None or tokens <= self.max_kv_tokens

    async def _generate(self, batch: list[_Job]) -> None:
        if self.continuous:
            from verity.serve.continuous import run_continuous

            return await run_continuous(self, batch)
        prompts = [p for job in batch for p in job.prompts]
        args = batch[0].args.replace(stop=(), seed=None, top_logprobs=max(job.args.top_logprobs for job in batch))
        seeds = None if args.temperature <= 0 else [s for job in batch for s in job.row_seeds()]
        t0 = time.perf_counter()
        outs = await asyncio.to_thread(self.sampler.generate_ids, prompts, args, seeds)
        self._last_generation_s = time.perf_counter() - t0
        self.stats["generation_s"] += self._last_generation_s
        log.debug("batch of %d sequences (%d requests) in %.3fs", len(prompts), len(batch), time.perf_counter() - t0)
        self.stats["batches"] += 1
        self.stats["sequences"] += len(prompts)
        self.stats["requests"] += len(batch)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(prompts))
        self._resolve(batch, outs)

    def _resolve(self, batch: list[_Job], outs: Sequence[Completion]) -> None:
        """Give each job its completions (in batch order), cut to its own stop strings and top log-probs."""
        i = 0
        for job in batch:
            res = [self._trim(c, job.args) for c in outs[i:i + len(job.prompts)]]
            i += len(job.prompts)
            if job.events is not None:
                job.events.put_nowait(("done", res))
            if not job.future.done():
                job.future.set_result(res)

    def _trim(self, c: Completion, args: SamplingArgs) -> Completion:
        """``c`` cut at the request's stop strings, with its own number of top log-probs."""
        k = args.top_logprobs
        top = tuple(alts[:k] for alts in c.top_logprobs) if k else ()
        if not args.stop:
            return dataclasses.replace(c, top_logprobs=top)
        from verity.rollout.hf_sampler import _apply_stop

        text, ids, lps, finish = _apply_stop(c.text, list(c.completion_ids), list(c.logprobs), c.finish_reason,
                                             args.stop, self.sampler.tokenizer)
        return dataclasses.replace(c, text=text, completion_ids=tuple(ids), logprobs=tuple(lps), finish_reason=finish,
                                   usage={**dict(c.usage), "completion_tokens": len(ids)}, top_logprobs=top[:len(ids)])
