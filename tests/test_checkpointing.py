"""Gradient checkpointing (whole decoder layers recomputed in backward) changes no gradient."""

import pytest
import torch
from test_sampler import _group_batch  # GRPO-shaped batch: 3 prompts × 4 sampled completions

from verity.algos.losses import policy_loss
from verity.models.loading import load_model
from verity.rollout.hf_sampler import HFSampler
from verity.train.learner import LocalLearner, add_lora, checkpointed_layers, shared_prefix_index
from verity.types import Message

# Tolerance: the recomputation runs the same kernels on the same inputs, so on this CPU the
# gradients come out bit-identical; the comparison allows 1e-6 relative / 1e-7 absolute for
# kernels that pick a different reduction order on a second call.
RTOL, ATOL = 1e-6, 1e-7


def _loss(lp, mb):
    return policy_loss(lp, lp.detach(), mb.advantages, mb.loss_mask, loss_type="grpo")


def _grads(model):
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("rank", [0, 4])
def test_rl_gradients_equal_with_and_without_checkpointing(tiny_model_dir, rank):
    """RL forward/backward, with the shared-prompt forward and without it: checkpointing on gives
    the gradients of checkpointing off (and of the shared-prompt run, which it replaces)."""
    model, tok = load_model(tiny_model_dir, dtype="fp32", for_training=True)
    model = add_lora(model, rank, 8)
    batch = _group_batch(HFSampler(model, tok, batch_size=16), tok)
    assert shared_prefix_index(batch.input_ids, batch.attention_mask, batch.loss_mask.shape[1]) is not None
    learner = LocalLearner(model, lr=1e-3)
    with checkpointed_layers(model) as n:
        assert n == model.config.num_hidden_layers
    runs = {}
    for share in (False, True):
        for ckpt in (False, True):
            learner.share_prefixes, learner.gradient_checkpointing = share, ckpt
            model.zero_grad(set_to_none=True)
            m = learner.forward_backward(batch, _loss)
            runs[share, ckpt] = (m["loss"], _grads(model))
    for share in (False, True):
        (l0, g0), (l1, g1) = runs[share, False], runs[share, True]
        assert l0 == pytest.approx(l1, rel=RTOL)
        for a, b in zip(g0, g1, strict=True):
            torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
    for a, b in zip(runs[True, False][1], runs[True, True][1], strict=True):  # shared path vs checkpointed
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)  # the shared path's own tolerance (test_sampler)
    assert all("forward" not in m.__dict__ for m in model.modules())  # the wrappers are removed afterwards


@pytest.mark.parametrize("packing", [False, True])
def test_sft_gradients_equal_with_and_without_checkpointing(tiny_model_dir, tmp_path, packing):
    from verity.train.config import SFTConfig
    from verity.train.sft import SFTTrainer

    convs = [[Message(role="user", content=f"say {w}"), Message(role="assistant", content=f"{w} {w}!")]
             for w in ("cat", "dog", "a longer answer", "x")]
    model, tok = load_model(tiny_model_dir, dtype="fp32", for_training=True)
    cfg = SFTConfig(data="x", lora_rank=0, packing=packing, max_length=64, output_dir=str(tmp_path), dtype="fp32")
    tr = SFTTrainer(convs, (model, tok), cfg)
    grads = []
    for ckpt in (False, True):
        tr.learner.gradient_checkpointing = ckpt
        model.zero_grad(set_to_none=True)
        loss, _ = tr.micro_loss(tr.units)
        loss.backward()
        grads.append(_grads(model))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
