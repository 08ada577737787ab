"""Policy-gradient and supervised losses over per-token log-probabilities.

Everything here is a pure function of [B, T] tensors (B sequences, T token
positions) plus a [B, T] mask that is 1 on completion tokens that enter the
loss and 0 on prompt and padding tokens.  Masked positions never contribute to
the loss value or receive gradient, and may hold arbitrary (even non-finite)
log-probabilities.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

__all__ = ["LOSS_TYPES", "LossType", "batch_share", "k3_kl", "policy_loss", "sft_loss"]

#: The policy losses (see :func:`policy_loss`); the CLI offers exactly these.
LossType = Literal["grpo", "dapo", "dr_grpo", "gspo"]
LOSS_TYPES: tuple[LossType, ...] = get_args(LossType)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi_theta || pi_ref).

    k3 = exp(ref - logp) - (ref - logp) - 1, unbiased for KL under samples from
    pi_theta and always >= 0.  Schulman 2020, "Approximating KL Divergence"
    (http://joschu.net/blog/kl-approx.html); used per token by Shao et al. 2024
    (DeepSeekMath) eq. 4.

    Args:
        logprobs: [...] log pi_theta of the sampled tokens.
        ref_logprobs: [...] log pi_ref of the same tokens (no gradient needed).

    Returns:
        [...] per-token KL estimates, same shape as the inputs.
    """
    delta = ref_logprobs - logprobs  # [...]
    return torch.exp(delta) - delta - 1.0


def mismatch_kl(learner_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sampler/learner mismatch: masked token mean of k3 for KL(pi_sampler || pi_learner).

    mismatch_kl = sum_t m_t * (exp(d_t) - d_t - 1) / sum_t m_t with d_t = log pi_learner(y_t) -
    log pi_sampler(y_t) on the sampled tokens y_t (they come from the sampler, so k3 is unbiased for
    this direction; Schulman 2020). 0 when sampler and learner agree, and when the mask is empty.

    Args:
        learner_logprobs: [B, T] the learner's log-probs of the sampled tokens (before the update).
        sampler_logprobs: [B, T] the log-probs the sampler reported for the same tokens.
        mask: [B, T] tokens to average over.
    """
    keep = mask.bool()
    # float64: in float32, exp(d) - d - 1 cancels to 0 for |d| < ~1e-4, hiding small mismatches
    k3 = k3_kl(torch.where(keep, sampler_logprobs.double(), 0.0),
               torch.where(keep, learner_logprobs.detach().double(), 0.0))
    return _masked_mean(k3, keep).float()


def truncated_is_weights(learner_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor,
                         cap: float) -> torch.Tensor:
    """Truncated importance weights for tokens sampled by another policy (no gradient).

    w_t = min(pi_old(y_t) / pi_sampler(y_t), C) = min(exp(old_t - sampler_t), C): the
    policy-gradient estimate under the sampler's distribution is reweighted towards the learner's,
    with the weight capped at C to bound the variance (truncated IS, Espeholt et al. 2018 IMPALA;
    Yao et al. 2025 "Your efficient RL framework secretly brings you off-policy RL training").

    Args:
        learner_logprobs: [B, T] the learner's log-probs before the update (pi_old).
        sampler_logprobs: [B, T] the sampler's log-probs of the same tokens.
        cap: C > 0.
    """
    return torch.exp(learner_logprobs.detach().float() - sampler_logprobs.float()).clamp(max=cap)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is True; 0 when the mask is empty."""
    return torch.where(mask, x, 0.0).sum() / mask.sum().clamp(min=1)


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    loss_type: LossType = "grpo",
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    max_completion_length: int | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    batch_sequences: int | None = None,
    batch_tokens: int | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-style clipped surrogate loss with GRPO / DAPO / Dr. GRPO / GSPO normalisation.

    Per token: r_t = exp(logp_t - old_logp_t) and
    objective_t = min(r_t * A, clip(r_t, 1 - eps, 1 + eps_high) * A)
    (Schulman et al. 2017, PPO eq. 7; asymmetric "clip-higher" from Yu et al.
    2025, DAPO sec. 3.1; ``epsilon_high`` defaults to ``epsilon``).  The
    per-token loss is -objective_t (+ kl_beta * k3_t when a reference is given).

    Normalisations (``loss_type``):
      * ``"grpo"``: mean over each sequence's tokens, then mean over sequences
        (Shao et al. 2024, DeepSeekMath eq. 3).
      * ``"dapo"``: token level, sum over all tokens / number of masked tokens in
        the batch (Yu et al. 2025, DAPO sec. 3.3, eq. 8).
      * ``"dr_grpo"``: sum over all tokens / (B * max_completion_length), a
        constant normaliser free of length bias (Liu et al. 2025,
        "Understanding R1-Zero-Like Training", Dr. GRPO sec. 3.1).
      * ``"gspo"``: sequence-level ratio s_i = exp(mean_t(logp_t - old_logp_t))
        over the sequence's masked tokens (Zheng et al. 2025, GSPO eq. 7),
        clipped with eps / eps_high, averaged over sequences.  Implemented in
        the paper's GSPO-token form (sec. 4.3): s_{i,t} = sg[s_i] *
        exp(logp_t - sg[logp_t]), whose value is s_i on every token and whose
        gradient, after the per-sequence token mean, equals that of the
        sequence-level objective (paper eqs. 11 and 18) when A is constant
        over the sequence, as it is here.

    Micro-batches: when the [B, T] inputs are one micro-batch of a larger batch, pass the
    batch's ``batch_sequences`` and ``batch_tokens`` (masked tokens). The loss is then this
    micro-batch's exact share of the full-batch loss — its own normalised loss times
    :func:`batch_share` — so the summed micro-batch losses (and gradients) equal the
    full-batch ones and a trainer only sums. Without them the inputs are the whole batch.

    Args:
        logprobs: [B, T] current-policy log-probs (requires grad).
        old_logprobs: [B, T] log-probs of the sampling policy (detached here).
        advantages: [B] one advantage per sequence.
        mask: [B, T] 1/True on completion tokens in the loss, 0 elsewhere.
        max_completion_length: required for ``"dr_grpo"``.
        ref_logprobs: [B, T] reference-policy log-probs, for the KL penalty / metric.
        kl_beta: weight of the per-token k3 KL penalty; > 0 requires ``ref_logprobs``.
        batch_sequences: sequences in the whole batch (default: B).
        batch_tokens: masked tokens in the whole batch (default: those of ``mask``).
        is_weights: [B, T] per-token weights multiplying the clipped surrogate (no gradient), e.g.
            :func:`truncated_is_weights` for samples drawn by a stale or different sampler.

    Returns:
        (scalar loss, metrics) with detached scalar metrics over this micro-batch's tokens: ``clip_frac``,
        ``clip_frac_low``, ``clip_frac_high``, ``kl`` (masked mean k3, 0 if no
        reference) and ``ratio_mean`` (masked mean of the ratio).
    """
    _check_policy_inputs(logprobs, old_logprobs, advantages, mask, loss_type,
                         max_completion_length, ref_logprobs, kl_beta)
    eps_low = epsilon
    eps_high = epsilon if epsilon_high is None else epsilon_high
    keep = mask.bool()  # [B, T]
    adv = advantages.to(logprobs.dtype).unsqueeze(-1)  # [B, 1]

    ratio = _importance_ratio(logprobs, old_logprobs, keep, sequence_level=loss_type == "gspo")  # [B, T]
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)  # [B, T]
    per_token = -torch.minimum(ratio * adv, clipped * adv)  # [B, T]
    if is_weights is not None:
        per_token = per_token * is_weights.detach().to(per_token.dtype)

    kl = None
    if ref_logprobs is not None:
        # zero both sides off-mask so garbage there cannot leak NaN into values or grads
        kl = k3_kl(torch.where(keep, logprobs, 0.0), torch.where(keep, ref_logprobs.detach(), 0.0))  # [B, T]
        if kl_beta > 0:
            per_token = per_token + kl_beta * kl
    loss = _aggregate(torch.where(keep, per_token, 0.0), keep, loss_type, max_completion_length)
    if batch_sequences is not None or batch_tokens is not None:
        n_tokens = int(keep.sum())
        loss = loss * batch_share(loss_type, keep.shape[0], n_tokens, batch_sequences or keep.shape[0],
                                  n_tokens if batch_tokens is None else batch_tokens)

    return loss, _clip_metrics(ratio, adv, keep, kl, eps_low, eps_high)


def _clip_metrics(ratio, adv, keep, kl, eps_low: float, eps_high: float) -> dict[str, torch.Tensor]:
    """Detached scalar diagnostics over masked tokens (shapes: ratio, keep, kl [B, T]; adv [B, 1]).

    A token counts as clipped only where the clip is active in the min():
    low = ratio < 1 - eps_low with A < 0, high = ratio > 1 + eps_high with A > 0.
    """
    with torch.no_grad():
        low = (ratio < 1.0 - eps_low) & (adv < 0) & keep  # [B, T]
        high = (ratio > 1.0 + eps_high) & (adv > 0) & keep  # [B, T]
        n = keep.sum().clamp(min=1)
        metrics = {
            "clip_frac": (low | high).sum() / n,
            "clip_frac_low": low.sum() / n,
            "clip_frac_high": high.sum() / n,
            "kl": _masked_mean(kl, keep) if kl is not None else ratio.new_zeros(()),
            "ratio_mean": _masked_mean(ratio, keep),
        }
    return {k: v.detach().float() for k, v in metrics.items()}


def _check_policy_inputs(logprobs, old_logprobs, advantages, mask, loss_type,
                         max_completion_length, ref_logprobs, kl_beta) -> None:
    """Raise ValueError on an unknown loss_type, missing arguments or mismatched shapes."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; valid: {', '.join(LOSS_TYPES)}")
    if loss_type == "dr_grpo" and (max_completion_length is None or max_completion_length < 1):
        raise ValueError("loss_type 'dr_grpo' requires max_completion_length >= 1")
    if kl_beta > 0 and ref_logprobs is None:
        raise ValueError("kl_beta > 0 requires ref_logprobs")
    if logprobs.dim() != 2 or old_logprobs.shape != logprobs.shape or mask.shape != logprobs.shape:
        raise ValueError("logprobs, old_logprobs and mask must all have the same shape [B, T]")
    if ref_logprobs is not None and ref_logprobs.shape != logprobs.shape:
        raise ValueError("ref_logprobs must have the same shape [B, T] as logprobs")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must have shape [B]={tuple(logprobs.shape[:1])}, got {tuple(advantages.shape)}")


def _importance_ratio(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, keep: torch.Tensor, sequence_level: bool
) -> torch.Tensor:
    """Token ratio exp(logp - old_logp) (PPO eq. 6), or the GSPO-token ratio.

    GSPO-token (Zheng et al. 2025, sec. 4.3): s_{i,t} = sg[s_i] * exp(logp_t - sg[logp_t])
    with s_i = exp(mean over masked tokens of (logp - old_logp)) (GSPO eq. 7).
    Off-mask positions get log-ratio 0 (ratio 1) and no gradient, so garbage
    there cannot produce inf/NaN values or gradients.

    Shapes: logprobs, old_logprobs, keep [B, T] -> ratio [B, T].
    """
    log_ratio = torch.where(keep, logprobs - old_logprobs.detach(), 0.0)  # [B, T]
    if sequence_level:
        seq_log_ratio = log_ratio.sum(dim=-1) / keep.sum(dim=-1).clamp(min=1)  # [B]
        token_grad = torch.where(keep, logprobs - logprobs.detach(), 0.0)  # [B, T], value 0
        log_ratio = seq_log_ratio.detach().unsqueeze(-1) + token_grad  # [B, T]
    return torch.exp(log_ratio)


def _aggregate(
    per_token: torch.Tensor, keep: torch.Tensor, loss_type: LossType, max_completion_length: int | None
) -> torch.Tensor:
    """Reduce a masked per-token loss [B, T] (zero off-mask) to a scalar per ``loss_type``.

    grpo/gspo: per-sequence token mean, then mean over sequences (DeepSeekMath eq. 3);
    dapo: sum / #masked tokens (DAPO sec. 3.3); dr_grpo: sum / (B * max_completion_length)
    (Dr. GRPO).  Empty sequences / batches contribute 0, never NaN.
    """
    if loss_type in ("grpo", "gspo"):
        return (per_token.sum(dim=-1) / keep.sum(dim=-1).clamp(min=1)).mean()
    if loss_type == "dapo":
        return per_token.sum() / keep.sum().clamp(min=1)
    assert max_completion_length is not None  # _check_policy_inputs requires it for dr_grpo
    return per_token.sum() / (per_token.shape[0] * max_completion_length)


def batch_share(loss_type: LossType, sequences: int, tokens: int, batch_sequences: int, batch_tokens: int) -> float:
    """The weight of a micro-batch's normalised loss in the full-batch loss of ``loss_type``.

    dapo normalises by the batch's masked tokens, so a micro-batch weighs tokens / batch_tokens;
    grpo/gspo (mean over sequences) and dr_grpo (B * max_completion_length) normalise per
    sequence, so it weighs sequences / batch_sequences. Per-micro-batch means (the clip and KL
    metrics) combine with the same weights.
    """
    if loss_type == "dapo":
        return tokens / max(batch_tokens, 1)
    return sequences / batch_sequences


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-mean negative log-likelihood over completion tokens.

    loss = -sum(logp * mask) / sum(mask): standard maximum-likelihood fine-tuning
    (e.g. Ouyang et al. 2022, InstructGPT sec. 3.5 "SFT"), averaged per token.

    Args:
        logprobs: [B, T] log-probs of the target tokens.
        mask: [B, T] 1 on tokens that enter the loss, 0 on prompt/padding.

    Returns:
        Scalar loss (0 when the mask is empty).
    """
    if mask.shape != logprobs.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != logprobs shape {tuple(logprobs.shape)}")
    return -_masked_mean(logprobs, mask.bool())
