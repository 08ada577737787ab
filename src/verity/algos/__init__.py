"""verity's RL algorithm components: pure tensor functions for advantages,
clipped policy-gradient / SFT losses, and memory-frugal token log-probs."""

from verity.algos.advantages import ESTIMATORS, SCALES, compute_advantages, zero_std_groups
from verity.algos.logprobs import entropy_from_logits, selective_log_softmax
from verity.algos.losses import LOSS_TYPES, batch_share, k3_kl, policy_loss, sft_loss

__all__ = [
    "ESTIMATORS",
    "LOSS_TYPES",
    "SCALES",
    "batch_share",
    "compute_advantages",
    "entropy_from_logits",
    "k3_kl",
    "policy_loss",
    "selective_log_softmax",
    "sft_loss",
    "zero_std_groups",
]
