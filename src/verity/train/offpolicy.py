"""Asynchronous off-policy RL (``--max-off-policy-steps S``): generation runs ahead of training.

A :class:`RolloutProducer` thread rolls out data steps n+1, n+2, … on its own copy of the policy
while the learner trains on step n; a queue of at most S batches bounds how far it runs ahead.
After every optimiser step the learner publishes its trainable weights (a version number and a
copy); before each batch the producer loads the newest published weights into its copy. A batch
generated with weights of version v that reaches the learner at version V is *stale* when
V - v > S (:func:`is_stale`); it is dropped and counted, and the next one is taken. The loss then
reweights the tokens by truncated importance weights (:func:`~verity.algos.losses.truncated_is_weights`),
since the sampler's policy lags the learner's. Runs are not bit-reproducible (which weights a
batch sees depends on timing), and one process only (not under torchrun).
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from dataclasses import replace
from typing import Any

import torch

from verity.types import RolloutBatch


def is_stale(learner_version: int, sampler_version: int, max_off_policy_steps: int) -> bool:
    """Whether a batch sampled at ``sampler_version`` is too old for a learner at ``learner_version``."""
    return learner_version - sampler_version > max_off_policy_steps


class RolloutProducer:
    """Rolls out data steps ``start, start+1, …`` in a background thread for ``trainer`` (an RLTrainer)."""

    def __init__(self, trainer: Any, start: int, max_off_policy_steps: int):
        from verity.rollout.hf_sampler import HFSampler
        from verity.train.rl import TimedSampler

        self.trainer, self.max_lag = trainer, max_off_policy_steps
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max_off_policy_steps)
        self.model = copy.deepcopy(trainer.model).eval()  # the sampler's copy of the policy
        for p in self.model.parameters():
            p.requires_grad_(False)
        names = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
        self._dst = [p for n, p in self.model.named_parameters() if n in names]
        self._src = [p for n, p in trainer.model.named_parameters() if n in names]
        inner = trainer.sampler.inner
        self.sampler = TimedSampler(HFSampler(self.model, trainer.tokenizer, batch_size=inner.batch_size,
                                              name=inner.name, autocast_dtype=inner.autocast_dtype))
        self._lock = threading.Lock()
        self._published: tuple[int, list[torch.Tensor]] | None = None
        self.version = 0  # of the weights in self.model
        self.next_step, self.generated, self.dropped = start, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="verity-rollout-producer", daemon=True)

    def start(self) -> RolloutProducer:
        self._thread.start()
        return self

    def publish(self, version: int) -> None:
        """The learner's weights after ``version`` optimiser steps (copied now; loaded by the producer)."""
        snapshot = [p.detach().clone() for p in self._src]
        with self._lock:
            self._published = (version, snapshot)

    def _load_published(self) -> float:
        t0 = time.perf_counter()
        with self._lock:
            pub, self._published = self._published, None
        if pub is not None:
            with torch.no_grad():
                for dst, src in zip(self._dst, pub[1], strict=True):
                    dst.copy_(src)
            self.version = pub[0]
        return time.perf_counter() - t0

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                t_w = self._load_published()
                rb = self.trainer.collect(self.next_step, self.sampler)
                self.next_step += 1
                self.generated += 1
                if not self._put(replace(rb, version=self.version, t_weights=t_w)):
                    return
        except BaseException as e:  # re-raised in the learner's thread by next()
            self._put(e)

    def next(self, learner_version: int) -> tuple[RolloutBatch, float]:
        """The oldest batch that is not stale for ``learner_version`` (stale ones are dropped and
        counted in ``self.dropped``), and the seconds the learner waited for it."""
        t0 = time.perf_counter()
        while True:
            item = self.queue.get()
            if isinstance(item, BaseException):
                raise item
            if not is_stale(learner_version, item.version, self.max_lag):
                return item, time.perf_counter() - t0
            self.dropped += 1

    def stop(self) -> None:
        """Stop producing; a batch still being generated is finished in the background and discarded
        (the thread is a daemon and touches only its own copy of the policy)."""
        self._stop.set()
