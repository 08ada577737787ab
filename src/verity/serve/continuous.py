"""Continuous batching for :class:`~verity.serve.batcher.Batcher`: requests join a batch between decode steps.

The batch runs in a worker thread (``sampler.generate_continuous``). Between decode steps the
sampler calls ``admit``: it hands over the waiting jobs that an earlier call asked the event loop
to pick (same sampling key, room in the batch and in the KV budget) and asks for the next ones,
so the decode thread never waits for the event loop. Each step's tokens go to the jobs that
stream, through the event loop (``call_soon_threadsafe``); a job's completions are resolved
when the batch ends. Jobs picked but not yet handed over when the batch ends go back to the
head of the queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any


async def run_continuous(batcher: Any, batch: list[Any]) -> None:
    """Generate ``batch`` (jobs of one sampling key) and every job that joins it while it runs."""
    loop = asyncio.get_running_loop()
    first = batch[0]
    args = first.args.replace(stop=(), seed=None, top_logprobs=max(job.args.top_logprobs for job in batch))
    greedy = args.temperature <= 0
    rowmap: list[tuple[Any, int]] = [(job, i) for job in batch for i in range(len(job.prompts))]
    jobs = list(batch)
    kv = [sum(job.kv_tokens for job in batch)]
    asked: list[concurrent.futures.Future | None] = [None]

    def seeds_of(job: Any) -> list[int | None]:
        return [None] * len(job.prompts) if greedy else list(job.row_seeds())

    def admit(n_live: int) -> list[tuple[list[int], int | None]] | None:
        fut, new = asked[0], None
        if fut is not None:
            if not fut.done():
                return None
            asked[0] = None
            picked = fut.result()
            if picked:
                new = []
                for job in picked:
                    jobs.append(job)
                    kv[0] += job.kv_tokens
                    rowmap.extend((job, i) for i in range(len(job.prompts)))
                    new.extend(zip(job.prompts, seeds_of(job), strict=True))
        room = batcher.max_batch_size - n_live - (len(new) if new else 0)
        if room > 0 and asked[0] is None and (batcher._queue.qsize() or batcher._pending):
            asked[0] = asyncio.run_coroutine_threadsafe(_pick(batcher, first, args.top_logprobs, room, kv[0]), loop)
        return new

    def on_tokens(rows: Any, tok: Any, valid: Any) -> None:
        if not any(job.events is not None for job in jobs):
            return  # nobody streams: no host read of the step's tokens
        out: dict[int, tuple[Any, list[tuple[int, int]]]] = {}
        for r, t, v in zip(rows.tolist(), tok.tolist(), valid.tolist(), strict=True):
            job, i = rowmap[r]
            if v and job.events is not None:
                out.setdefault(id(job), (job, []))[1].append((i, t))
        if out:
            loop.call_soon_threadsafe(_deliver, list(out.values()))

    prompts = [p for job in batch for p in job.prompts]
    seeds = None if greedy else [s for job in batch for s in job.row_seeds()]
    t0 = time.perf_counter()
    try:
        outs = await asyncio.to_thread(batcher.sampler.generate_continuous, prompts, args, seeds, admit, on_tokens)
    finally:
        await _return_unused(batcher, asked[0])
    dt = time.perf_counter() - t0
    batcher._last_generation_s = dt
    st = batcher.stats
    st["generation_s"] += dt
    st["batches"] += 1
    st["sequences"] += len(outs)
    st["requests"] += len(jobs)
    st["largest_batch"] = max(st["largest_batch"], len(prompts))
    batcher._resolve(jobs, outs)


def _deliver(items: list[tuple[Any, list[tuple[int, int]]]]) -> None:
    for job, toks in items:
        if job.events is not None and not job.future.done():
            job.events.put_nowait(("tokens", toks))


async def _pick(batcher: Any, first: Any, top_k: int, room: int, kv: int) -> list[Any]:
    """Waiting jobs that can join: ``first``'s key, top log-probs within the batch's, room left (oldest first)."""
    picked, skipped = [], []
    while not batcher._queue.empty():
        batcher._pending.append(batcher._queue.get_nowait())
    while batcher._pending:
        job = batcher._pending.popleft()
        if job.future.done():
            continue
        fits = (job.key == first.key and job.args.top_logprobs <= top_k and len(job.prompts) <= room
                and batcher._kv_fits(kv + job.kv_tokens))
        if fits:
            picked.append(job)
            room -= len(job.prompts)
            kv += job.kv_tokens
        else:
            skipped.append(job)
    batcher._pending.extendleft(reversed(skipped))
    return picked


async def _return_unused(batcher: Any, fut: concurrent.futures.Future | None) -> None:
    """Jobs picked for a batch that ended before taking them go back to the head of the queue."""
    if fut is None:
        return
    picked = await asyncio.wrap_future(fut)
    batcher._pending.extendleft(reversed(picked))
