"""Noisy labels: an expected annotator agreement sets cDPO's label smoothing from the flip rate it implies."""
import dataclasses
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


def test_smoothing_applies_to_labels_that_carry_a_probability(tiny_model_dir, tmp_path, dtype):
    """Pairs from the database all carry a preference_prob (1.0 for a plain label): label smoothing used to be
    dropped for them, so a round's label_agreement changed nothing. A 1.0 label smoothed by ε now trains exactly
    as a hard label smoothed by ε, and not as an unsmoothed one; a slight label (0.75) composes, 0.75(1-ε)+0.25ε."""
    from tests.training.test_trainer import synthetic_pairs
    from training.dpo.trainer import noisy_target, train_dpo

    def second_step_loss(prob, config):
        pairs = [dataclasses.replace(p, preference_prob=prob) for p in synthetic_pairs(8)]
        steps = []
        train_dpo(config, tiny_model_dir, pairs, tmp_path / f"out{len(list(tmp_path.iterdir()))}",
                  on_step=lambda s, t, m: steps.append(m["loss"]))
        return steps[1]

    smoothed = DPOConfig(dtype=dtype, batch_size=4, epochs=1, learning_rate=1e-3, warmup_ratio=0.0,
                         label_smoothing=0.25)
    plain = dataclasses.replace(smoothed, label_smoothing=0.0)
    hard = second_step_loss(None, smoothed)
    assert second_step_loss(1.0, smoothed) == pytest.approx(hard, abs=1e-6)
    assert abs(second_step_loss(1.0, plain) - hard) > 1e-3
    assert noisy_target(0.75, 0.25) == pytest.approx(0.75 * 0.75 + 0.25 * 0.25)
    assert noisy_target(0.75, 0.0) == 0.75 and noisy_target(None, 0.2) == pytest.approx(0.8)
