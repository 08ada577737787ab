"""Group-relative advantage estimators for RL with verifiable rewards.

A rollout batch holds ``num_groups`` prompts, each sampled ``group_size`` times.
Rewards arrive as one flat tensor laid out group-contiguous::

    [g0_s0, g0_s1, ..., g0_s{G-1}, g1_s0, ..., g{N-1}_s{G-1}]   # [N * G]

The functions here turn those rewards into per-completion advantages (the
baseline-subtracted, optionally scaled learning signal) and flag groups whose
rewards are all identical, which carry no gradient signal under any
group-relative baseline.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from verity.types import ZERO_STD_TOL

__all__ = ["ESTIMATORS", "SCALES", "Estimator", "Scale", "compute_advantages", "zero_std_groups"]

#: Baselines: ``grpo`` (group mean) or ``rloo`` (leave-one-out mean).
Estimator = Literal["grpo", "rloo"]
#: Advantage scaling: by the group's std, the batch's std, or none.
Scale = Literal["group", "batch", "none"]
ESTIMATORS: tuple[Estimator, ...] = get_args(Estimator)
SCALES: tuple[Scale, ...] = get_args(Scale)


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Validate ``rewards`` [N*G] and return a float view of shape [N, G]."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [num_groups * group_size], got shape {tuple(rewards.shape)}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for a group-relative baseline, got {group_size}")
    if rewards.numel() == 0 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"number of rewards ({rewards.numel()}) must be a positive multiple of group_size ({group_size})"
        )
    if not rewards.is_floating_point():
        rewards = rewards.float()
    return rewards.view(-1, group_size)  # [N, G]


def compute_advantages(
    rewards: torch.Tensor,
    group_size: int,
    estimator: Estimator = "grpo",
    scale: Scale = "group",
    eps: float = 1e-4,
) -> torch.Tensor:
    """Per-completion advantages from group-contiguous rewards.

    Estimators (baseline subtraction):
      * ``"grpo"`` -- A_i = r_i - mean(r_group).  Shao et al. 2024, "DeepSeekMath",
        eq. 3 / sec. 4.1.2 (outcome supervision), GRPO.
      * ``"rloo"`` -- REINFORCE leave-one-out, A_i = r_i - mean_{j != i} r_j
        = G / (G - 1) * (r_i - mean(r_group)).  Ahmadian et al. 2024, "Back to
        Basics: Revisiting REINFORCE Style Optimization for Learning from Human
        Feedback in LLMs", sec. 3 (RLOO; Kool et al. 2019).

    Scales (applied after baseline subtraction):
      * ``"group"`` -- divide by the group's reward std + ``eps`` (Shao et al.
        2024, eq. 3).  Uses the *unbiased* (Bessel-corrected, ``torch.std``
        default) std to match TRL's ``GRPOTrainer``.
      * ``"batch"`` -- divide by the std (unbiased) of all rewards in the batch
        + ``eps``: group mean, batch std, as in "Tricks or Traps? A Deep Dive
        into RL for LLM Reasoning" (Liu et al. 2025, Lite PPO) and the global
        normalisation of REINFORCE++ (Hu 2025); TRL ``scale_rewards="batch"``.
      * ``"none"`` -- no scaling, removing GRPO's question-difficulty bias
        (Dr. GRPO; Liu et al. 2025, "Understanding R1-Zero-Like Training: A
        Critical Perspective", sec. 3.1).

    Args:
        rewards: [N * G] rewards, group-contiguous.
        group_size: G, completions per prompt (>= 2).
        eps: added to the std to avoid division by zero; a zero-std group
            therefore gets advantages of exactly 0.

    Returns:
        [N * G] float advantages, same layout as ``rewards``.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown advantage scale {scale!r}; valid: {', '.join(SCALES)}")
    grouped = _grouped(rewards, group_size)  # [N, G]

    centred = grouped - grouped.mean(dim=1, keepdim=True)  # [N, G]
    if estimator == "rloo":
        centred = centred * (group_size / (group_size - 1))

    if scale == "group":
        std = grouped.std(dim=1, keepdim=True)  # [N, 1], unbiased
        centred = centred / (std + eps)
    elif scale == "batch":
        std = grouped.reshape(-1).std()  # scalar, unbiased over all N*G rewards
        centred = centred / (std + eps)
    return centred.reshape(-1)  # [N * G]


def zero_std_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Flag groups whose rewards are all equal (max - min <= ZERO_STD_TOL, as :attr:`Group.has_signal`).

    Such groups have zero advantage under every estimator above, so they carry
    no policy-gradient signal; the trainer reports their share as
    ``frac_zero_std`` and may skip their forward/backward compute (cf. DAPO
    "dynamic sampling", Yu et al. 2025, sec. 3.2).

    Args:
        rewards: [N * G] rewards, group-contiguous.
        group_size: G.

    Returns:
        [N] bool tensor, True where the group has (numerically) zero spread.
    """
    grouped = _grouped(rewards, group_size)  # [N, G]
    spread = grouped.max(dim=1).values - grouped.min(dim=1).values  # [N]
    return spread <= ZERO_STD_TOL
