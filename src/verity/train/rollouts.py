"""What an RL step rolls out: its prompts, its sampling arguments and seeds, the scored groups.

Pure functions of the config and the step, shared by the trainer and by rollout workers in other
processes (:mod:`verity.train.ray_workers`), so every place that rolls out step n produces the
same prompts with the same seeds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from verity.train.batching import epoch_order
from verity.train.config import RLConfig
from verity.types import Example, Rollout, SamplingArgs


def rollout_seed(seed: int, step: int, position: int) -> int:
    """The sampling seed of the prompt group at ``position`` of step ``step``'s global batch."""
    digest = hashlib.blake2b(f"{seed}:{step}:{position}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def step_examples(examples: Sequence[Example], cfg: RLConfig, step: int) -> list[Example]:
    """The prompts of ``step``: a deterministic function of (seed, step), so resume is exact."""
    n, k = len(examples), cfg.groups_per_batch
    out = []
    for j in range(step * k, step * k + k):
        epoch, pos = divmod(j, n)
        out.append(examples[epoch_order(n, cfg.seed, epoch)[pos]])
    return out


def step_sampling_args(cfg: RLConfig, step: int) -> SamplingArgs:
    return SamplingArgs(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                        seed=cfg.seed * 7919 + step)


async def rollout_groups(env: Any, sampler: Any, cfg: RLConfig, step: int, examples: Sequence[Example], first: int,
                         group_seeding: bool) -> list[Rollout]:
    """``group_size`` scored rollouts per example; ``first`` is the position of ``examples[0]`` in
    the step's global batch. Group seeding samples each group with its own seed
    (:func:`rollout_seed`), so a group's rollouts do not depend on the rest of the batch."""
    G, args = cfg.group_size, step_sampling_args(cfg, step)
    if not group_seeding:
        return await env.rollout_batch(sampler, [(ex, i) for ex in examples for i in range(G)], args)
    out: list[Rollout] = []
    for k, ex in enumerate(examples):
        seed = rollout_seed(cfg.seed, step, first + k)
        out += await env.rollout_batch(sampler, [(ex, i) for i in range(G)], args.replace(seed=seed))
    return out
