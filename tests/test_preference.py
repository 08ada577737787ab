"""Preference losses (DPO, IPO, hinge, KTO, Bradley-Terry) and PPO pieces (GAE, value loss), hand-computed."""

import math

import pytest
import torch

from verity.algos.preference import bradley_terry_loss, dpo_loss, kto_loss

# two pairs: h = (pc - rc) - (pr - rr) = 2 for the first, 0 for the second
PC, PR = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -2.0])
RC, RR = torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0])


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize(("loss_type", "smoothing", "want"), [
    # -log sigma(0.5 * 2) = log(1 + e^-1); -log sigma(0) = log 2
    ("sigmoid", 0.0, [0.31326169, 0.69314718]),
    # 0.9 * log(1 + e^-1) + 0.1 * log(1 + e^1)
    ("sigmoid", 0.1, [0.9 * 0.31326169 + 0.1 * 1.31326169, 0.69314718]),
    # (h - 1 / (2 * 0.5))^2
    ("ipo", 0.0, [(2 - 1) ** 2.0, (0 - 1) ** 2.0]),
    # max(0, 1 - 0.5 h)
    ("hinge", 0.0, [0.0, 1.0]),
])
def test_pair_losses_hand_computed(loss_type, smoothing, want):
    loss, rc, rr = dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type=loss_type, label_smoothing=smoothing)
    torch.testing.assert_close(loss, torch.tensor(want), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rc, torch.tensor([0.5, 0.0]))  # 0.5 * (pc - rc)
    torch.testing.assert_close(rr, torch.tensor([-0.5, 0.0]))  # 0.5 * (pr - rr)


def test_dpo_gradient_hand_computed():
    pc, pr = PC.clone().requires_grad_(), PR.clone().requires_grad_()
    loss, _, _ = dpo_loss(pc, pr, RC, RR, beta=0.5)
    loss.sum().backward()
    # d/dpc -log sigma(beta h) = -beta sigma(-beta h); d/dpr = +beta sigma(-beta h)
    assert pc.grad is not None and pr.grad is not None
    torch.testing.assert_close(pc.grad, torch.tensor([-0.5 * _sig(-1), -0.5 * 0.5]))
    torch.testing.assert_close(pr.grad, torch.tensor([0.5 * _sig(-1), 0.5 * 0.5]))


def test_reference_gets_no_gradient():
    rc = RC.clone().requires_grad_()
    loss, _, _ = dpo_loss(PC.clone().requires_grad_(), PR, rc, RR)
    loss.sum().backward()
    assert rc.grad is None


def test_kto_hand_computed():
    pol, ref, good = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -2.0]), torch.tensor([True, False])
    # r = [1, -1], z0 = 0.5: desirable 1 - sigma(0.5), undesirable 1 - sigma(0.5 + 1)
    loss, rewards = kto_loss(pol, ref, good, torch.tensor(0.5), beta=1.0)
    torch.testing.assert_close(loss, torch.tensor([1 - _sig(0.5), 1 - _sig(1.5)]))
    torch.testing.assert_close(rewards, torch.tensor([1.0, -1.0]))
    # a negative KL estimate is clamped to 0; the undesirable weight scales its rows only
    loss, _ = kto_loss(pol, ref, good, torch.tensor(-1.0), beta=1.0, undesirable_weight=2.0)
    torch.testing.assert_close(loss, torch.tensor([1 - _sig(1.0), 2 * (1 - _sig(1.0))]))


def test_bradley_terry_hand_computed():
    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(loss, torch.tensor([math.log(1 + math.exp(-1)), math.log(1 + math.exp(3))]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown pair loss"):
        dpo_loss(PC, PR, RC, RR, loss_type="kto")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(PC, PR, RC, RR, beta=0)
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(PC, PR[:1], RC, RR)


def test_gae_hand_computed():
    from verity.algos.ppo import gae

    r = torch.tensor([[0.0, 0.0, 1.0, 9.0]])  # the last position is padding
    v = torch.tensor([[0.5, 0.5, 0.5, 9.0]])
    m = torch.tensor([[1, 1, 1, 0]])
    adv, ret = gae(r, v, m, gamma=1.0, lam=1.0)
    # delta = [0, 0, 0.5]; lam = gamma = 1: A_t = sum of later deltas
    torch.testing.assert_close(adv, torch.tensor([[0.5, 0.5, 0.5, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    adv, _ = gae(r, v, m, gamma=0.9, lam=0.5)
    # delta = [0.9*0.5 - 0.5, same, 1 - 0.5] = [-0.05, -0.05, 0.5]; A = delta + 0.45 A_next
    torch.testing.assert_close(adv, torch.tensor([[-0.05 + 0.45 * 0.175, -0.05 + 0.45 * 0.5, 0.5, 0.0]]))


def test_value_loss_hand_computed():
    from verity.algos.ppo import value_loss

    v = torch.tensor([[1.0, 0.0, 5.0]], requires_grad=True)
    old = torch.tensor([[0.5, 0.5, 0.0]])
    ret = torch.tensor([[2.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 0]])
    # clipped values [0.7, 0.3]; max((v-R)^2, (v_clip-R)^2) = [max(1, 1.69), max(0, 0.09)]
    loss = value_loss(v, old, ret, m, clip=0.2)
    torch.testing.assert_close(loss, torch.tensor(0.5 * (1.69 + 0.09) / 2))
    loss.backward()
    assert v.grad is not None
    # both tokens take the clipped branch, whose gradient w.r.t. v is 0 (v - old is outside the clip)
    torch.testing.assert_close(v.grad, torch.zeros(1, 3))
    unclipped = value_loss(v, old, ret, m, clip=None)
    torch.testing.assert_close(unclipped, torch.tensor(0.5 * (1.0 + 0.0) / 2))
