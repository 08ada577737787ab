"""Tests for verity.algos against hand-computed values (literal numbers)."""

from __future__ import annotations

import math

import pytest
import torch

from verity.algos import (
    LOSS_TYPES,
    compute_advantages,
    entropy_from_logits,
    k3_kl,
    policy_loss,
    selective_log_softmax,
    sft_loss,
    zero_std_groups,
)

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])


def close(actual, expected, tol=1e-5):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float32),
                               torch.tensor(expected, dtype=torch.float32), atol=tol, rtol=0)


# ---------------------------------------------------------------- advantages
def test_grpo_group_scaling_and_zero_std():
    # group 1: mean .5, unbiased std sqrt(1/3)=.57735; .5/(.57735+1e-4)=.86588. group 2: std 0 -> 0.
    adv = compute_advantages(REWARDS, 4)
    close(adv, [0.8658754, -0.8658754, -0.8658754, 0.8658754, 0, 0, 0, 0])
    assert zero_std_groups(REWARDS, 4).tolist() == [False, True]


def test_rloo_estimator():
    # r_1 - mean(others) = 1 - 1/3 = 2/3
    adv = compute_advantages(REWARDS, 4, estimator="rloo", scale="none")
    close(adv, [2 / 3, -2 / 3, -2 / 3, 2 / 3, 0, 0, 0, 0])
    # with group std: (2/3) / (0.57735 + 1e-4)
    adv = compute_advantages(REWARDS, 4, estimator="rloo", scale="group")
    close(adv[:2], [1.1545006, -1.1545006])


def test_batch_and_none_scaling():
    # batch std (unbiased) of all 8 rewards: sqrt(5.5 / 7) = 0.886405
    adv = compute_advantages(REWARDS, 4, scale="batch")
    close(adv, [0.5640124, -0.5640124, -0.5640124, 0.5640124, 0, 0, 0, 0])
    adv = compute_advantages(REWARDS, 4, scale="none")
    close(adv, [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    # integer rewards are accepted
    close(compute_advantages(torch.tensor([3, 1]), 2, scale="none"), [1.0, -1.0])


def test_advantage_errors():
    with pytest.raises(ValueError, match="estimator"):
        compute_advantages(REWARDS, 4, estimator="ppo")
    with pytest.raises(ValueError, match="scale"):
        compute_advantages(REWARDS, 4, scale="token")
    with pytest.raises(ValueError, match="group_size"):
        compute_advantages(REWARDS, 1)
    with pytest.raises(ValueError, match="multiple"):
        compute_advantages(REWARDS, 3)
    with pytest.raises(ValueError, match="multiple"):
        zero_std_groups(REWARDS[:7], 4)


# ---------------------------------------------------------------- policy loss
def test_clipping_both_sides_values_and_grads():
    # seq0 A=+1: ratios 1.5 (clipped high), 1.1; seq1 A=-2: ratios 0.5 (clipped low), 1.5 (unclipped)
    old = torch.zeros(2, 2)
    lp = torch.tensor([[math.log(1.5), math.log(1.1)], [math.log(0.5), math.log(1.5)]], requires_grad=True)
    adv = torch.tensor([1.0, -2.0])
    loss, m = policy_loss(lp, old, adv, torch.ones(2, 2))
    # seq0 obj mean (1.2 + 1.1)/2 = 1.15; seq1 (-1.6 + -3.0)/2 = -2.3; loss = -(1.15 - 2.3)/2
    close(loss, 0.575)
    close(m["clip_frac"], 0.5)
    close(m["clip_frac_low"], 0.25)
    close(m["clip_frac_high"], 0.25)
    close(m["ratio_mean"], (1.5 + 1.1 + 0.5 + 1.5) / 4)
    close(m["kl"], 0.0)
    loss.backward()
    # dloss/dlp = -A * r / (|o| * B): seq0 tok1 -1*1.1/4 = -0.275; seq1 tok1 2*1.5/4 = 0.75
    close(lp.grad, [[0.0, -0.275], [0.0, 0.75]])


def test_epsilon_high_clip_higher():
    lp = torch.tensor([[math.log(1.25), math.log(1.3)]], requires_grad=True)
    loss, m = policy_loss(lp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2), epsilon_high=0.28)
    close(loss, -(1.25 + 1.28) / 2)  # 1.25 inside [0.8, 1.28], 1.3 clipped to 1.28
    close(m["clip_frac_high"], 0.5)
    loss.backward()
    close(lp.grad, [[-0.625, 0.0]])  # -1.25 / 2
    # symmetric eps=0.2 clips both
    loss, m = policy_loss(lp.detach(), torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2))
    close(loss, -1.2)
    close(m["clip_frac"], 1.0)


def test_mask_excludes_prompt_and_padding():
    # token 0 = prompt, token 3 = padding, both with garbage log-probs
    lp = torch.tensor([[5.0, math.log(1.1), 0.0, float("inf")]], requires_grad=True)
    old = torch.tensor([[-100.0, 0.0, 0.0, float("-inf")]])
    mask = torch.tensor([[0, 1, 1, 0]])
    ref = torch.tensor([[7.0, 0.0, 0.0, float("nan")]])
    for lt in ("grpo", "dapo", "dr_grpo", "gspo"):
        lp.grad = None
        loss, m = policy_loss(lp, old, torch.tensor([1.0]), mask, loss_type=lt,
                              max_completion_length=2, ref_logprobs=ref, kl_beta=0.1)
        assert torch.isfinite(loss), lt
        loss.backward()
        assert lp.grad[0, 0] == 0 and lp.grad[0, 3] == 0, lt
        assert lp.grad[0, 1] != 0 and torch.isfinite(lp.grad).all(), lt
        assert all(torch.isfinite(v) for v in m.values()), lt
    # grpo value: -(1.1 + 1.0)/2 + 0.1 * mean k3; k3(0.0953) = 1/1.1 + 0.0953102 - 1 = 0.0044011
    loss, _ = policy_loss(lp, old, torch.tensor([1.0]), mask, ref_logprobs=ref, kl_beta=0.1)
    close(loss, -1.05 + 0.1 * 0.0044011 / 2)


def test_all_zero_mask_sequence_no_nan():
    lp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    for lt in ("grpo", "dapo", "dr_grpo", "gspo"):
        loss, m = policy_loss(lp, torch.zeros(2, 3), torch.tensor([1.0, 1.0]), mask, loss_type=lt,
                              max_completion_length=3)
        assert torch.isfinite(loss) and all(torch.isfinite(v) for v in m.values()), lt
    loss, m = policy_loss(lp, torch.zeros(2, 3), torch.ones(2), torch.zeros(2, 3))
    assert loss.item() == 0.0 and m["ratio_mean"].item() == 0.0


def test_normalisations_differ_by_length():
    # ratio 1; seq0 has 1 token with A=1, seq1 has 3 tokens with A=2 -> per-token loss -1 and -2
    lp = torch.zeros(2, 4)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]])
    adv = torch.tensor([1.0, 2.0])
    kw = dict(max_completion_length=4)
    close(policy_loss(lp, lp, adv, mask, "grpo", **kw)[0], -1.5)      # (-1 + -2) / 2
    close(policy_loss(lp, lp, adv, mask, "dapo", **kw)[0], -1.75)     # (-1 - 6) / 4
    close(policy_loss(lp, lp, adv, mask, "dr_grpo", **kw)[0], -0.875)  # (-1 - 6) / (2 * 4)
    close(policy_loss(lp, lp, adv, mask, "gspo", **kw)[0], -1.5)


def test_gspo_sequence_ratio_and_gradient():
    # masked log-ratios 0.1, -0.3 -> mean -0.1 -> s = exp(-0.1) = 0.9048374; A = 2
    old = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    lp = torch.tensor([[0.1, -0.3, 9.0], [0.5, 0.3, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    adv = torch.tensor([2.0, 1.0])  # seq1: s = exp(0.4) = 1.4918 > 1.2 -> clipped, A>0
    loss, m = policy_loss(lp, old, adv, mask, loss_type="gspo")
    close(loss, -(2 * 0.9048374 + 1.2) / 2)
    close(m["ratio_mean"], (2 * 0.9048374 + 2 * 1.4918247) / 4)
    close(m["clip_frac_high"], 0.5)
    loss.backward()
    # seq0: dloss/dlp_t = -A * s / |y| / B = -2 * 0.9048374 / 2 / 2; seq1 clipped -> 0
    close(lp.grad, [[-0.4524187, -0.4524187, 0.0], [0.0, 0.0, 0.0]])

    # same gradient as the literal sequence-level objective
    lp2 = lp.detach().clone().requires_grad_(True)
    s = torch.exp(((lp2 - old) * mask).sum(-1) / mask.sum(-1))
    ref_loss = -torch.minimum(s * adv, s.clamp(0.8, 1.2) * adv).mean()
    ref_loss.backward()
    close(lp.grad, lp2.grad.tolist())
    close(loss.detach(), ref_loss.detach().item())


def test_k3_kl_values_and_penalty():
    lp = torch.tensor([[math.log(0.5), math.log(0.5), -1.0]])
    ref = torch.tensor([[math.log(0.25), math.log(1.0), -1.0]])
    # delta=-ln2: 0.5 + ln2 - 1 = 0.1931472; delta=+ln2: 2 - ln2 - 1 = 0.3068528; equal -> 0
    close(k3_kl(lp, ref), [[0.1931472, 0.3068528, 0.0]])
    loss, m = policy_loss(lp, lp, torch.zeros(1), torch.tensor([[1, 1, 0]]), ref_logprobs=ref, kl_beta=0.1)
    close(loss, 0.025)  # A=0; 0.1 * (0.1931472 + 0.3068528) / 2
    close(m["kl"], 0.25)


def test_policy_loss_errors():
    z = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="grpo, dapo, dr_grpo, gspo"):
        policy_loss(z, z, torch.zeros(1), z, loss_type="ppo")
    with pytest.raises(ValueError, match="max_completion_length"):
        policy_loss(z, z, torch.zeros(1), z, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(z, z, torch.zeros(1), z, kl_beta=0.1)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(z, z, torch.zeros(2), z)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("split", [(2, 2, 2), (4, 1, 1), (6,)])
def test_summed_micro_batch_gradient_equals_full_batch(loss_type, split):
    """Each micro-batch's loss is its share of the full-batch loss: sums of losses and gradients match."""
    g = torch.Generator().manual_seed(0)
    B, T = 6, 5
    base = torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3 - 1.0
    old = (base + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.4).detach()  # clipping active
    ref = (base + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.2).detach()
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5, 0.0, 0.7], dtype=torch.float64)
    lengths = [5, 1, 3, 0, 4, 2]  # different lengths, one empty sequence
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lengths], dtype=torch.float64)
    kw = dict(loss_type=loss_type, epsilon=0.2, epsilon_high=0.28, max_completion_length=T, kl_beta=0.05)

    full_lp = base.clone().requires_grad_(True)
    full, _ = policy_loss(full_lp, old, adv, mask, ref_logprobs=ref, **kw)
    full.backward()

    micro_lp = base.clone().requires_grad_(True)
    total, start = torch.zeros((), dtype=torch.float64), 0
    for n in split:
        sl = slice(start, start + n)
        loss, _ = policy_loss(micro_lp[sl], old[sl], adv[sl], mask[sl], ref_logprobs=ref[sl], **kw,
                              batch_sequences=B, batch_tokens=int(mask.sum()))
        loss.backward()
        total, start = total + loss.detach(), start + n
    assert full_lp.grad is not None and micro_lp.grad is not None
    assert full_lp.grad.abs().sum() > 0
    torch.testing.assert_close(total, full.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(micro_lp.grad, full_lp.grad, rtol=1e-12, atol=1e-12)


def test_micro_batch_share_is_not_the_micro_batch_mean():
    """Without the batch normalisers each micro-batch normalises by itself: the sums then differ."""
    lp = torch.tensor([[-1.0, -1.0], [-2.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([1.0, 1.0])
    full = policy_loss(lp, lp.detach(), adv, mask, "dapo")[0]  # -(1 + 1 + 1) / 3
    own = sum(policy_loss(lp[i:i + 1], lp[i:i + 1].detach(), adv[i:i + 1], mask[i:i + 1], "dapo")[0]
              for i in range(2))  # -1 + -1
    share = sum(policy_loss(lp[i:i + 1], lp[i:i + 1].detach(), adv[i:i + 1], mask[i:i + 1], "dapo",
                            batch_sequences=2, batch_tokens=3)[0] for i in range(2))
    close(full, -1.0)
    close(own, -2.0)
    close(share, -1.0)


def test_sft_loss():
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 0]])
    close(sft_loss(lp, mask), 8 / 3)  # (1 + 2 + 5) / 3
    close(sft_loss(lp, torch.zeros(2, 3)), 0.0)


# ---------------------------------------------------------------- logprobs
def test_selective_log_softmax_matches_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 17, generator=g) * 3
    idx = torch.randint(0, 17, (3, 5), generator=g)
    ref = torch.log_softmax(logits, -1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
    close(selective_log_softmax(logits, idx), ref.tolist())
    ref_t = torch.log_softmax(logits / 0.7, -1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
    close(selective_log_softmax(logits, idx, temperature=0.7), ref_t.tolist())
    # bf16 input: upcast internally, fp32 output
    lb = logits.bfloat16()
    out = selective_log_softmax(lb, idx)
    assert out.dtype == torch.float32
    ref_b = torch.log_softmax(lb.float(), -1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
    close(out, ref_b.tolist(), tol=1e-4)
    ref_b16 = torch.log_softmax(lb, -1).gather(-1, idx.unsqueeze(-1)).squeeze(-1).float()
    close(out, ref_b16.tolist(), tol=0.1)
    # uniform logits: log(1/4)
    close(selective_log_softmax(torch.zeros(1, 2, 4), torch.zeros(1, 2, dtype=torch.long)),
          [[-1.3862944, -1.3862944]])
    # gradient flows to logits
    lg = logits.clone().requires_grad_(True)
    selective_log_softmax(lg, idx).sum().backward()
    assert lg.grad is not None and torch.isfinite(lg.grad).all()


def _per_row_autograd(logits, index, temperature=1.0):
    """The per-row code left to autograd: the reference for the hand-written backward."""
    out = []
    for b in range(logits.shape[0]):
        row = logits[b].float() if logits.dtype == torch.bfloat16 else logits[b]
        if temperature != 1.0:
            row = row / temperature
        out.append(row.gather(-1, index[b].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(row, dim=-1))
    return torch.stack(out)


def _bits(t):
    return t.view(torch.int16 if t.dtype == torch.bfloat16 else torch.int32)


@pytest.mark.parametrize("dtype,temperature,B", [(torch.bfloat16, 1.0, 5), (torch.float32, 1.0, 5),
                                                 (torch.bfloat16, 0.7, 3), (torch.bfloat16, 1.0, 1)])
def test_selective_log_softmax_backward_has_autograds_bits(dtype, temperature, B):
    """Same log-probs and the same gradient bits as autograd through the per-row code (the
    RL demo's figures depend on it), including saturated rows whose softmax underflows."""
    g = torch.Generator().manual_seed(3)
    base = (torch.randn(B, 9, 301, generator=g) * 4).to(dtype)
    base[0, 0, 5] = 200  # one dominant logit: exp underflows to 0 elsewhere in that row
    idx = torch.randint(0, 301, (B, 9), generator=g)
    w = torch.randn(B, 9, generator=g)
    a, b = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    out_a = selective_log_softmax(a, idx, temperature=temperature)
    out_b = _per_row_autograd(b, idx, temperature)
    (out_a * w).sum().backward()
    (out_b * w).sum().backward()
    assert torch.equal(_bits(out_a.detach()), _bits(out_b.detach()))
    assert torch.equal(_bits(a.grad), _bits(b.grad))


def test_entropy_from_logits():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 9, generator=g)
    p = torch.log_softmax(logits, -1)
    ref = -(p.exp() * p).sum(-1)
    close(entropy_from_logits(logits), ref.tolist())
    close(entropy_from_logits(logits, chunk_size=2), ref.tolist())
    close(entropy_from_logits(torch.zeros(1, 1, 4)), [[1.3862944]])  # log 4
    assert entropy_from_logits(logits.bfloat16()).dtype == torch.float32


def test_logprob_errors():
    with pytest.raises(ValueError):
        selective_log_softmax(torch.zeros(2, 3, 4), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        entropy_from_logits(torch.zeros(2, 3, 4), chunk_size=0)


@pytest.mark.parametrize("B", [1, 3])
def test_log_probs_and_entropy_in_position_chunks_equal_the_whole_row(monkeypatch, B):
    """Chunks of 2 positions (a chunk budget of 2·V elements) give the same bits as whole rows,
    forward and backward; the entropy equals the reference log-softmax formula."""
    from verity.algos import logprobs

    g = torch.Generator().manual_seed(5)
    base = (torch.randn(B, 7, 301, generator=g) * 4).bfloat16()
    idx = torch.randint(0, 301, (B, 7), generator=g)
    w = torch.randn(B, 7, generator=g)
    a, b = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    whole = selective_log_softmax(a, idx, temperature=0.9)
    (whole * w).sum().backward()
    ent_whole = entropy_from_logits(base, chunk_size=2)
    monkeypatch.setattr(logprobs, "CHUNK_ELEMENTS", 2 * 301)
    assert logprobs.position_chunks(7, 301) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    chunked = selective_log_softmax(b, idx, temperature=0.9)
    (chunked * w).sum().backward()
    assert torch.equal(_bits(whole.detach()), _bits(chunked.detach()))
    assert torch.equal(_bits(a.grad), _bits(b.grad))
    ent = entropy_from_logits(base, chunk_size=2)
    p = torch.log_softmax(base.float(), -1)
    assert torch.allclose(ent, -(p.exp() * p).sum(-1), atol=1e-5) and torch.allclose(ent, ent_whole, atol=1e-6)


def test_mismatch_kl_hand_computed():
    from verity.algos.losses import mismatch_kl

    learner = torch.log(torch.tensor([[0.5, 0.25, 0.9]]))
    sampler = torch.log(torch.tensor([[0.25, 0.25, 0.1]]))
    # token 0: d = ln 0.5 - ln 0.25 = ln 2, k3 = 2 - ln 2 - 1 = 0.3068528; token 1: d = 0, k3 = 0;
    # token 2 is masked out (its k3 would be 9 - ln 9 - 1 = 5.80278)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert float(mismatch_kl(learner, sampler, mask)) == pytest.approx(0.3068528 / 2, abs=1e-6)
    assert float(mismatch_kl(learner, sampler, torch.ones(1, 3))) == pytest.approx((0.3068528 + 5.8027754) / 3,
                                                                                     abs=1e-5)
    assert float(mismatch_kl(learner, learner, torch.ones(1, 3))) == 0.0
    assert float(mismatch_kl(learner, sampler, torch.zeros(1, 3))) == 0.0
    # float32 inputs differing by 1e-5 still show a (tiny) positive mismatch: d^2/2 = 5e-11
    assert 0 < float(mismatch_kl(learner + 1e-5, learner, torch.ones(1, 3))) < 1e-9


def test_truncated_is_weights_hand_computed():
    from verity.algos.losses import policy_loss, truncated_is_weights

    old = torch.log(torch.tensor([[0.5, 0.2, 0.9]]))
    sampler = torch.log(torch.tensor([[0.25, 0.4, 0.1]]))
    # ratios 0.5/0.25 = 2, 0.2/0.4 = 0.5, 0.9/0.1 = 9 -> capped at 3
    w = truncated_is_weights(old, sampler, cap=3.0)
    assert w.tolist()[0] == pytest.approx([2.0, 0.5, 3.0], abs=1e-5)
    # at ratio 1 (lp = old) the grpo per-token loss is -A; weighted: -(2 + 0.5 + 3) * A / 3 for one sequence
    lp = old.clone().requires_grad_(True)
    loss, _ = policy_loss(lp, old, torch.tensor([1.5]), torch.ones(1, 3), is_weights=w)
    assert float(loss) == pytest.approx(-(2.0 + 0.5 + 3.0) * 1.5 / 3, abs=1e-5)
    loss.backward()  # d/dlp of -w * A * exp(lp - old) at lp = old: -w * A / T
    assert lp.grad.tolist()[0] == pytest.approx([-2.0 * 1.5 / 3, -0.5 * 1.5 / 3, -3.0 * 1.5 / 3], abs=1e-5)
