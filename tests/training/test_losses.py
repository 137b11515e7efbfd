"""Every loss of the DPO family against its formula in float64, and its gradient against the analytic one."""
import math

import pytest
import torch

from training.dpo.losses import dpo_loss, kto_kl_estimate, kto_loss, nll_loss, rrhf_loss


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def make(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, generator=g, dtype=torch.float64) * 5 - 20).requires_grad_() for _ in range(4)]


EXPECTED = {
    "sigmoid": lambda h, b, e: -(1 - e) * logsig(b * h) - e * logsig(-b * h),
    "ipo": lambda h, b, e: (h - 1 / (2 * b)) ** 2,
    "hinge": lambda h, b, e: max(0.0, 1 - b * h),
    "robust": lambda h, b, e: (-(1 - e) * logsig(b * h) + e * logsig(-b * h)) / (1 - 2 * e),
}
# d loss / d h
GRADS = {
    "sigmoid": lambda h, b, e: -b * ((1 - e) * sig(-b * h) - e * sig(b * h)),
    "ipo": lambda h, b, e: 2 * (h - 1 / (2 * b)),
    "hinge": lambda h, b, e: -b if 1 - b * h > 0 else 0.0,
    "robust": lambda h, b, e: -b * ((1 - e) * sig(-b * h) + e * sig(b * h)) / (1 - 2 * e),
}


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge", "robust"])
@pytest.mark.parametrize("beta,eps", [(0.1, 0.0), (0.5, 0.2)])
def test_loss_and_gradient_match_formula(loss_type, beta, eps):
    pc, pr, rc, rr = make()
    losses, chosen_r, rejected_r = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type=loss_type, label_smoothing=eps)
    h = ((pc - rc) - (pr - rr)).detach().tolist()
    expected = [EXPECTED[loss_type](x, beta, eps) for x in h]
    assert losses.tolist() == pytest.approx(expected, abs=1e-6, rel=1e-6)
    assert chosen_r.tolist() == pytest.approx((beta * (pc - rc)).tolist(), abs=1e-9)
    assert rejected_r.tolist() == pytest.approx((beta * (pr - rr)).tolist(), abs=1e-9)
    assert not chosen_r.requires_grad and not rejected_r.requires_grad
    losses.sum().backward()
    dh = [GRADS[loss_type](x, beta, eps) for x in h]
    # h rises with policy chosen and falls with policy rejected
    assert pc.grad.tolist() == pytest.approx(dh, abs=1e-6)
    assert pr.grad.tolist() == pytest.approx([-x for x in dh], abs=1e-6)


def test_sigmoid_is_ln2_when_policy_equals_reference():
    pc, pr, _, _ = make()
    losses, _, _ = dpo_loss(pc, pr, pc.detach(), pr.detach())
    assert losses.tolist() == pytest.approx([math.log(2)] * 6, abs=1e-12)


def test_preference_prob_replaces_one_minus_eps():
    pc, pr, rc, rr = make(1)
    p = torch.tensor([1.0, 0.9, 0.75, 0.5, 0.3, 0.0], dtype=torch.float64)
    losses, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.2, preference_prob=p, label_smoothing=0.1)
    h = ((pc - rc) - (pr - rr)).detach().tolist()
    expected = [-q * logsig(0.2 * x) - (1 - q) * logsig(-0.2 * x) for q, x in zip(p.tolist(), h, strict=True)]
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)
    # p = 1 - eps gives the hard-label loss back
    hard, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.2, label_smoothing=0.1)
    soft, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.2, preference_prob=torch.full((6,), 0.9, dtype=torch.float64))
    assert soft.tolist() == pytest.approx(hard.tolist(), abs=1e-12)


def test_bad_loss_type_and_prob_on_hinge_are_errors():
    pc, pr, rc, rr = make()
    with pytest.raises(ValueError, match="unknown loss_type"):
        dpo_loss(pc, pr, rc, rr, loss_type="nope")
    with pytest.raises(ValueError, match="preference_prob"):
        dpo_loss(pc, pr, rc, rr, loss_type="hinge", preference_prob=torch.ones(6))


def test_kto_matches_formula_and_gradient():
    policy = torch.tensor([-10.0, -12.0, -9.0, -20.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-11.0, -11.0, -10.0, -18.0], dtype=torch.float64)
    desirable = torch.tensor([True, False, True, False])
    kl = kto_kl_estimate(torch.tensor([-5.0, -6.0]), torch.tensor([-5.5, -6.1]))
    assert float(kl) == pytest.approx(0.3)
    assert float(kto_kl_estimate(torch.tensor([-6.0]), torch.tensor([-5.0]))) == 0.0  # clamped
    beta, lam_d, lam_u = 0.5, 1.0, 1.5
    losses, rewards = kto_loss(policy, ref, desirable, kl, beta=beta, desirable_weight=lam_d, undesirable_weight=lam_u)
    r = (policy - ref).detach().tolist()
    z = float(kl)
    expected = [lam_d * (1 - sig(beta * (x - z))) if d else lam_u * (1 - sig(beta * (z - x))) for x, d in zip(r, desirable, strict=True)]
    assert losses.tolist() == pytest.approx(expected, abs=1e-9)
    assert rewards.tolist() == pytest.approx([beta * x for x in r])
    losses.sum().backward()
    grads = [
        -lam_d * beta * sig(beta * (x - z)) * (1 - sig(beta * (x - z))) if d
        else lam_u * beta * sig(beta * (z - x)) * (1 - sig(beta * (z - x)))
        for x, d in zip(r, desirable, strict=True)
    ]
    assert policy.grad.tolist() == pytest.approx(grads, abs=1e-9)


def test_rrhf_ranks_and_sft_term():
    p = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    nll = torch.tensor([1.0, 2.0], dtype=torch.float64)
    losses = rrhf_loss(p, scores, nll, sft_weight=0.5)
    # row 0: best 0 > 1 (no gap), 0 > 2 gap 0.5, 1 > 2 gap 1.5; row 1: 2 > 0 no, 2 > 1 gap 1, 1 > 0 no
    assert losses.tolist() == pytest.approx([0.5 + 1.5 + 0.5, 1.0 + 1.0])
    losses.sum().backward()
    assert p.grad.flatten().tolist() == pytest.approx([-1.0, -1.0, 2.0, 0.0, 1.0, -1.0])


def test_nll_is_per_token():
    assert nll_loss(torch.tensor([-6.0, -3.0]), torch.tensor([3, 1])).tolist() == [2.0, 3.0]
