"""Constraint terms of the loss (training/dpo/terms.py): each against its formula, the allow-list, and a real run."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from training.dpo.config import DPOConfig
from training.dpo.data import PreferencePair, pair_from_row
from training.dpo.terms import LengthRegulariser, RulePenalty, TermBatch, configured_terms, load_term
from training.dpo.trainer import _pair_loss, train_dpo
from training.launcher import write_pairs

CUT, NONE = frozenset({"cut"}), frozenset()


def _batch():
    torch.manual_seed(1)
    pc, pr = torch.randn(4, dtype=torch.float64) - 20, torch.randn(4, dtype=torch.float64) - 20
    rc, rr = torch.randn(4, dtype=torch.float64) - 20, torch.randn(4, dtype=torch.float64) - 20
    nc = torch.tensor([10.0, 30.0, 5.0, 12.0], dtype=torch.float64)
    nr = torch.tensor([12.0, 6.0, 5.0, 40.0], dtype=torch.float64)
    return pc, pr, rc, rr, nc, nr


def test_the_length_term_is_r_dpo():
    pc, pr, rc, rr, nc, nr = _batch()
    config, alpha = DPOConfig(beta=0.1, length_alpha=0.02), 0.02
    terms = configured_terms(config.length_alpha, config.rule_penalty, config.loss_terms)
    loss, _, _ = _pair_loss(config, torch.cat([pc, pr]), torch.cat([nc, nr]), rc, rr, None, terms)
    h = (pc - rc) - (pr - rr)
    expected = -F.logsigmoid(0.1 * h - alpha * (nc - nr)).mean()
    assert torch.isclose(torch.as_tensor(loss).double(), expected)
    plain, _, _ = _pair_loss(DPOConfig(beta=0.1), torch.cat([pc, pr]), torch.cat([nc, nr]), rc, rr, None)
    assert not torch.isclose(torch.as_tensor(plain).double(), expected)


def test_the_rule_penalty_is_a_hinge_on_flagged_rewards_only():
    pc, pr, rc, rr, nc, nr = _batch()
    flags = ([CUT, NONE, NONE, CUT], [NONE, CUT, NONE, NONE])
    penalty = RulePenalty(weight=2.0, margin=0.5)
    result = penalty(TermBatch(pc, pr, rc, rr, nc, nr, *flags, beta=0.1))
    flagged = torch.stack([0.1 * (pc[0] - rc[0]), 0.1 * (pc[3] - rc[3]), 0.1 * (pr[1] - rr[1])])
    assert torch.isclose(result.loss, 2.0 * torch.relu(flagged + 0.5).mean())
    none = penalty(TermBatch(pc, pr, rc, rr, nc, nr, [NONE] * 4, [NONE] * 4, beta=0.1))
    assert float(none.loss) == 0.0
    # with it in the loss, the gradient pushes a flagged chosen answer's log-prob down
    policy = torch.cat([pc, pr]).clone().requires_grad_(True)
    logged = {}
    config = DPOConfig(rule_penalty=2.0)
    loss, _, _ = _pair_loss(config, policy, torch.cat([nc, nr]), rc - 10, rr - 10, None,
                            configured_terms(0, 2.0, ""), flags, logged)
    loss.backward()
    plain_policy = torch.cat([pc, pr]).clone().requires_grad_(True)
    plain, _, _ = _pair_loss(DPOConfig(), plain_policy, torch.cat([nc, nr]), rc - 10, rr - 10, None)
    plain.backward()
    assert policy.grad[0] > plain_policy.grad[0]  # descent lowers the cut chosen answer's log-prob more
    assert set(logged) == {"terms/rule_penalty"} and logged["terms/rule_penalty"] > 0


def test_terms_load_only_from_the_allow_list():
    with pytest.raises(ValueError, match="is not allowed"):
        load_term("os:system?command=touch /tmp/pwned")
    with pytest.raises(ValueError, match="is not allowed"):
        configured_terms(0, 0, "subprocess:Popen")
    term = load_term("training.dpo.terms:LengthRegulariser?alpha=0.5")
    assert isinstance(term, LengthRegulariser) and term.alpha == 0.5
    assert load_term("tests.training.test_loss_terms:constant_term", allowed=["tests.training.test_loss_terms:constant_term"])


def constant_term(batch):
    from training.dpo.terms import TermResult

    return TermResult(loss=batch.policy_chosen.sum() * 0 + 0.25)


def test_flags_travel_through_rows_and_the_multi_process_file(tmp_path):
    pair = PreferencePair(prompt="Hi", chosen="Hello there", rejected="Hel", chosen_flags=NONE, rejected_flags=CUT)
    write_pairs([pair], tmp_path / "p.jsonl")
    row = json.loads((tmp_path / "p.jsonl").read_text())
    assert row["rejected_flags"] == ["cut"] and "chosen_flags" not in row
    back = pair_from_row(row)
    assert back.rejected_flags == CUT and back.chosen_flags == NONE
    with pytest.raises(ValueError, match="field 'chosen_flags'"):
        pair_from_row({**row, "chosen_flags": "cut"})


def test_a_run_with_terms_logs_each_term_per_step(tiny_model_dir, tmp_path, dtype):
    pairs = [PreferencePair(prompt=f"Tell me about topic {i}.", chosen="Thank you! Happy to help.", rejected="No.",
                            rejected_flags=CUT if i % 2 else NONE) for i in range(8)]
    steps = []
    config = DPOConfig(dtype=dtype, batch_size=4, epochs=1, length_alpha=0.01, rule_penalty=1.0,
                       loss_terms="tests.training.test_loss_terms:constant_term")
    with pytest.raises(ValueError, match="is not allowed"):
        train_dpo(config, tiny_model_dir, pairs, tmp_path / "refused")
    train_dpo(config, tiny_model_dir, pairs, tmp_path / "out", on_step=lambda s, t, m: steps.append(m),
              allowed_terms=["tests.training.test_loss_terms:constant_term"])
    assert len(steps) == 2
    for metrics in steps:
        assert metrics["terms/constant_term"] == pytest.approx(0.25)
        assert "terms/rule_penalty" in metrics and math.isfinite(metrics["terms/rule_penalty"])
    # the first step: policy == reference, so the flagged rewards are 0 and the hinge is 0; the loss is
    # -log sigmoid(-alpha * (|y_w| - |y_l|)) + 0.25, above ln 2 because the chosen answers are longer
    assert steps[0]["terms/rule_penalty"] == pytest.approx(0, abs=1e-4)
    assert steps[0]["loss"] > math.log(2)
