"""Rollouts in Ray actors (``--rollout-workers N [--ray-address ADDR]``; needs the ``ray`` extra).

Each :class:`RolloutWorker` actor loads the environment and its own copy of the policy (the base
model plus LoRA of the same rank, built exactly as the trainer builds it), and rolls out and
scores a contiguous share of the step's prompt groups; while one actor scores (a slow judge, a
sandbox), the others generate. Before a step the trainer puts its trainable weights in Ray's
object store once (``ray.put``) and every actor loads them when their version changed. Groups
are seeded from (seed, step, position) (:func:`~verity.train.rollouts.rollout_seed`), so the
rollouts equal the in-process ones with ``--rollout-seeding group``. Local Ray when no address
is given.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from verity.errors import ConfigError
from verity.train.config import RLConfig
from verity.types import Rollout


class RolloutWorker:
    """One actor: environment + policy copy; ``rollouts(step, lo, hi, version, weights)``."""

    def __init__(self, config: dict[str, Any], threads: int = 1):
        from verity.envs.registry import load_env_for
        from verity.models.loading import load_model, pick_dtype
        from verity.rollout.hf_sampler import HFSampler
        from verity.train.learner import add_lora

        torch.set_num_threads(threads)
        self.cfg = RLConfig(**config)
        self.env = load_env_for(self.cfg.env, self.cfg.env_args)
        self.examples = self.env.get_examples("train")
        model, tok = load_model(self.cfg.model, for_training=True)
        torch.manual_seed(self.cfg.seed)
        model = add_lora(model, self.cfg.lora_rank, self.cfg.lora_alpha).eval()
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        dev = next(model.parameters()).device.type
        amp = pick_dtype("auto" if self.cfg.dtype == "auto" else self.cfg.dtype, dev)
        self.sampler = HFSampler(model, tok, batch_size=self.cfg.batch_size, name=self.cfg.model, autocast_dtype=amp)
        self.version = -1

    def rollouts(self, step: int, lo: int, hi: int, version: int, weights: dict[str, torch.Tensor]) -> list[Rollout]:
        from verity.train.rollouts import rollout_groups, step_examples
        from verity.utils import run_sync

        if version != self.version:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(weights[n])
            self.version = version
        examples = step_examples(self.examples, self.cfg, step)[lo:hi]
        return run_sync(rollout_groups(self.env, self.sampler, self.cfg, step, examples, lo, group_seeding=True))


class RayRollouts:
    """N :class:`RolloutWorker` actors on a local or remote Ray cluster."""

    def __init__(self, cfg: RLConfig, model: Any):
        try:
            import ray
        except ImportError:
            raise ConfigError("--rollout-workers needs Ray: pip install 'verity[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True)
        self.ray = ray
        actor = ray.remote(num_cpus=1)(RolloutWorker)
        self.workers: list[Any] = [actor.remote(asdict(cfg)) for _ in range(cfg.rollout_workers)]
        self.model = model
        self.version, self._ref = 0, None

    def publish(self) -> None:
        """The trainer's current trainable weights, for the next :meth:`rollouts` (one object-store copy)."""
        state = {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        self._ref = self.ray.put(state)
        self.version += 1

    def rollouts(self, step: int, groups: int) -> list[Rollout]:
        """All ``groups`` prompt groups of ``step``, split contiguously over the actors, in order."""
        if self._ref is None:
            self.publish()
        n = len(self.workers)
        bounds = [(i * groups // n, (i + 1) * groups // n) for i in range(n)]
        refs = [w.rollouts.remote(step, lo, hi, self.version, self._ref)
                for w, (lo, hi) in zip(self.workers, bounds, strict=True) if hi > lo]
        return [r for part in self.ray.get(refs) for r in part]

    def close(self) -> None:
        for w in self.workers:
            self.ray.kill(w)
