"""PPO with a value model: generalized advantage estimation and the clipped value loss.

Pure functions of [B, T] tensors over completion tokens (B sequences, T positions) with a [B, T]
mask that is 1 on the tokens of each sequence (right-padded: a sequence's tokens come first).
Masked positions never contribute and may hold arbitrary values.
"""

from __future__ import annotations

import torch

__all__ = ["gae", "value_loss"]


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, GAE eq. 16) per token.

    delta_t = r_t + gamma V_{t+1} - V_t (V past a sequence's last token = 0),
    A_t = delta_t + gamma lam A_{t+1}, and the value targets R_t = A_t + V_t.

    Args:
        rewards: [B, T] per-token rewards (e.g. the sequence reward on the last token minus a
            per-token KL penalty).
        values: [B, T] value estimates V_t (detached here).
        mask: [B, T] 1 on each sequence's tokens, 0 after them.

    Returns:
        (advantages [B, T], returns [B, T]), 0 off-mask.
    """
    if rewards.shape != values.shape or mask.shape != values.shape or values.dim() != 2:
        raise ValueError("rewards, values and mask must all have the same shape [B, T]")
    keep = mask.bool()
    v = torch.where(keep, values.detach(), 0.0)  # [B, T]
    r = torch.where(keep, rewards, 0.0)  # [B, T]
    adv = torch.zeros_like(v)  # [B, T]
    nxt_v = torch.zeros_like(v[:, 0])  # [B]
    nxt_a = torch.zeros_like(v[:, 0])  # [B]
    for t in range(v.shape[1] - 1, -1, -1):
        delta = r[:, t] + gamma * nxt_v - v[:, t]  # [B]
        a = torch.where(keep[:, t], delta + gamma * lam * nxt_a, 0.0)  # [B]
        adv[:, t] = a
        nxt_v, nxt_a = v[:, t], a
    return adv, torch.where(keep, adv + v, 0.0)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float | None = 0.2) -> torch.Tensor:
    """Clipped value loss (the PPO value clipping of OpenAI baselines' ppo2; Ziegler et al. 2019):

    V_clip = V_old + clip(V - V_old, -c, c); loss = 0.5 * mean_masked(max((V - R)^2, (V_clip - R)^2)).
    ``clip=None``: 0.5 * mean_masked((V - R)^2).

    Shapes: values (with grad), old_values, returns, mask [B, T] -> scalar (0 on an empty mask).
    """
    if not (values.shape == old_values.shape == returns.shape == mask.shape):
        raise ValueError("values, old_values, returns and mask must all have the same shape [B, T]")
    keep = mask.bool()
    target = returns.detach()
    loss = (values - target) ** 2  # [B, T]
    if clip is not None:
        old = old_values.detach()
        clipped = old + torch.clamp(values - old, -clip, clip)  # [B, T]
        loss = torch.maximum(loss, (clipped - target) ** 2)
    return 0.5 * torch.where(keep, loss, 0.0).sum() / keep.sum().clamp(min=1)
