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


@dataclasses.dataclass
class _Job:
    prompts: list[list[int]]
    args: SamplingArgs
    future: asyncio.Future

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


def row_seed(seed: int, index: int) -> int:
    """The generator seed of sequence ``index`` of a request with ``seed`` (any int, also negative)."""
    return (seed * 1_000_003 + index) % (2**63)


class Batcher:
    """Groups concurrent generation requests into batches for one local sampler."""

    def __init__(self, sampler: Any, max_batch_size: int = 32, max_queue: int = 256, batch_wait_s: float = 0.1):
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be >= 1")
        self.sampler = sampler
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
        """One completion per prompt, generated in a shared batch. Raises :class:`QueueFull`."""
        if self._task is None or self._task.done():
            raise RuntimeError("batcher is not running")
        if self.unfinished >= self.max_queue:
            raise QueueFull(f"{self.unfinished} requests are waiting (limit {self.max_queue})")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job([list(p) for p in prompts], args, fut))
        except asyncio.QueueFull:
            raise QueueFull(f"queue is full (limit {self.max_queue})") from None
        self.unfinished += 1
        fut.add_done_callback(self._finished)
        return await fut  # a cancelled caller cancels the future; the worker then skips the job

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

        def take(job: _Job) -> None:
            nonlocal size
            if job.future.done():
                return
            if job.key == key and size + len(job.prompts) <= self.max_batch_size:
                batch.append(job)
                size += len(job.prompts)
            else:
                skipped.append(job)

        while self._pending and size < self.max_batch_size:
            take(self._pending.popleft())
        while not self._queue.empty() and size < self.max_batch_size:
            take(self._queue.get_nowait())
        skipped.extend(self._pending)  # pending jobs not looked at stay behind the skipped ones
        self._pending = skipped
        return batch

    async def _generate(self, batch: list[_Job]) -> None:
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
        i = 0
        for job in batch:
            res = [self._trim(c, job.args) for c in outs[i:i + len(job.prompts)]]
            i += len(job.prompts)
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
