"""Noisy labels: an expected annotator agreement sets cDPO's label smoothing from the flip rate it implies."""
import math

import pytest
import torch

from training.dpo.config import DPOConfig, smoothing_for_agreement
from training.dpo.losses import dpo_loss
from training.dpo.trainer import _pair_loss


def test_the_flip_rate_reproduces_the_agreement_it_came_from():
    for q in (0.55, 0.63, 0.7, 0.726, 0.9, 1.0):
        eps = smoothing_for_agreement(q)
        assert math.isclose((1 - eps) ** 2 + eps**2, q, abs_tol=1e-12)
        assert 0 <= eps < 0.5
    assert smoothing_for_agreement(1.0) == 0
    assert math.isclose(smoothing_for_agreement(0.7), 0.18377, abs_tol=1e-5)


def test_the_loss_with_an_agreement_is_cdpo_with_its_flip_rate():
    torch.manual_seed(0)
    logps, counts = torch.randn(8, dtype=torch.float64) - 20, torch.full((8,), 10.0, dtype=torch.float64)
    ref_c, ref_r = torch.randn(4, dtype=torch.float64) - 20, torch.randn(4, dtype=torch.float64) - 20
    noisy = DPOConfig(label_agreement=0.7)
    assert math.isclose(noisy.smoothing, smoothing_for_agreement(0.7))
    loss, _, _ = _pair_loss(noisy, logps, counts, ref_c, ref_r, None)
    pc, pr = logps.chunk(2)
    expected, _, _ = dpo_loss(pc, pr, ref_c, ref_r, beta=0.1, label_smoothing=smoothing_for_agreement(0.7))
    h = 0.1 * ((pc - ref_c) - (pr - ref_r))
    eps = smoothing_for_agreement(0.7)
    by_formula = -(1 - eps) * torch.nn.functional.logsigmoid(h) - eps * torch.nn.functional.logsigmoid(-h)
    assert torch.allclose(expected, by_formula)
    assert torch.isclose(torch.as_tensor(loss).double(), by_formula.mean())
    plain, _, _ = _pair_loss(DPOConfig(), logps, counts, ref_c, ref_r, None)
    assert not torch.isclose(torch.as_tensor(plain).double(), by_formula.mean())


def test_agreement_and_smoothing_are_one_setting_not_two():
    with pytest.raises(ValueError, match="label_agreement.*not both"):
        DPOConfig(label_agreement=0.7, label_smoothing=0.1)
    with pytest.raises(ValueError, match="label_agreement=0.4: must be more than 0.5 and at most 1"):
        DPOConfig(label_agreement=0.4)
    with pytest.raises(ValueError, match="label_agreement.*sigmoid"):
        DPOConfig(label_agreement=0.7, loss_type="ipo")
