"""Preference losses over sequence log-probabilities: the DPO family, KTO and the Bradley-Terry
reward-model loss.

Everything here is a pure function of [N] tensors, one entry per pair (or per KTO row): the
summed log-probability of a completion's tokens under the policy being trained (with gradient)
and under the frozen reference (no gradient). The implicit reward of a completion y for
prompt x is r(x, y) = beta * (log pi_theta(y|x) - log pi_ref(y|x)) (Rafailov et al. 2023, DPO
sec. 5).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

__all__ = ["PAIR_LOSS_TYPES", "PREF_LOSS_TYPES", "PairLossType", "PrefLossType", "bradley_terry_loss",
           "dpo_loss", "kto_loss"]

#: Losses on (chosen, rejected) pairs (see :func:`dpo_loss`).
PairLossType = Literal["sigmoid", "ipo", "hinge"]
PAIR_LOSS_TYPES: tuple[PairLossType, ...] = get_args(PairLossType)
#: Every preference loss ``verity dpo --loss`` offers: the pair losses and KTO (unpaired rows).
PrefLossType = Literal["sigmoid", "ipo", "hinge", "kto"]
PREF_LOSS_TYPES: tuple[PrefLossType, ...] = get_args(PrefLossType)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    loss_type: PairLossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO-family losses and the implicit rewards of both completions.

    With h = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)):

      * ``"sigmoid"`` (DPO, Rafailov et al. 2023 eq. 7; conservative DPO with label smoothing
        eps, Mitchell 2023): loss = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h).
      * ``"ipo"`` (Azar et al. 2023, IPO eq. 17): loss = (h - 1 / (2 beta))^2. Summed
        (not length-averaged) log-probabilities, as in the paper.
      * ``"hinge"`` (SLiC-HF, Zhao et al. 2023 eq. 2 with delta = 1 / beta, as in TRL):
        loss = max(0, 1 - beta h).

    Rewards: r_w = beta (log pi(y_w|x) - log pi_ref(y_w|x)), r_l likewise; both detached.

    Args:
        policy_chosen, policy_rejected: [N] summed log-probs of the chosen / rejected completions
            under the policy (require grad).
        ref_chosen, ref_rejected: [N] the same under the reference (detached here).
        beta: > 0, the inverse temperature of the implicit reward (IPO: its regularisation tau).
        label_smoothing: eps in [0, 0.5), the assumed probability that a label is flipped (sigmoid only).

    Returns:
        (loss [N], chosen_rewards [N], rejected_rewards [N]).
    """
    if loss_type not in PAIR_LOSS_TYPES:
        raise ValueError(f"unknown pair loss {loss_type!r}; valid: {', '.join(PAIR_LOSS_TYPES)}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    shape = policy_chosen.shape
    if policy_chosen.dim() != 1 or any(t.shape != shape for t in (policy_rejected, ref_chosen, ref_rejected)):
        raise ValueError("policy/reference chosen/rejected log-probs must all have the same shape [N]")
    chosen_logratio = policy_chosen - ref_chosen.detach()  # [N]
    rejected_logratio = policy_rejected - ref_rejected.detach()  # [N]
    h = chosen_logratio - rejected_logratio  # [N]
    if loss_type == "sigmoid":
        loss = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        loss = (h - 1 / (2 * beta)) ** 2
    else:
        loss = torch.relu(1 - beta * h)
    return loss, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row KTO loss (Ethayarajh et al. 2024, KTO eq. 8) and the implicit rewards.

    r = log pi(y|x) - log pi_ref(y|x); z0 = max(0, kl) is the reference point (an estimate of
    KL(pi || pi_ref), detached, as in the paper's implementation);
    desirable rows: loss = lambda_D (1 - sigma(beta (r - z0)));
    undesirable rows: loss = lambda_U (1 - sigma(beta (z0 - r))).

    Args:
        policy_logps: [N] summed log-probs of each row's completion under the policy.
        ref_logps: [N] the same under the reference (detached here).
        desirable: [N] bool, True where the completion is labelled desirable.
        kl: scalar, the KL estimate (e.g. the batch mean of r over mismatched prompt/completion pairs).

    Returns:
        (loss [N], rewards [N] = beta r, detached).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if policy_logps.dim() != 1 or ref_logps.shape != policy_logps.shape or desirable.shape != policy_logps.shape:
        raise ValueError("policy_logps, ref_logps and desirable must all have the same shape [N]")
    r = policy_logps - ref_logps.detach()  # [N]
    z0 = kl.detach().clamp(min=0)  # []
    good = desirable_weight * (1 - torch.sigmoid(beta * (r - z0)))  # [N]
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r)))  # [N]
    return torch.where(desirable.bool(), good, bad), beta * r.detach()


def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """Per-pair Bradley-Terry reward-model loss: -log sigma(s_w - s_l).

    Bradley & Terry 1952; the reward-model objective of Ouyang et al. 2022 (InstructGPT eq. 1,
    one comparison per pair). Shapes: chosen_scores, rejected_scores [N] -> loss [N].
    """
    if chosen_scores.shape != rejected_scores.shape or chosen_scores.dim() != 1:
        raise ValueError("chosen_scores and rejected_scores must have the same shape [N]")
    return -F.logsigmoid(chosen_scores - rejected_scores)
