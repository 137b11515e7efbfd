"""Constraint terms of the loss (training/dpo/terms.py): each against its formula, the allow-list, and a real run."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from training.dpo.config import DPOConfig
from training.dpo.data import PreferencePair, pair_from_row
from training.dpo.losses import dpo_loss
from training.dpo.terms import (
    LengthRegulariser,
    MarginCap,
    RulePenalty,
    TermBatch,
    TermResult,
    configured_terms,
    load_term,
    terms_for,
)
from training.dpo.trainer import TrainingDiverged, _pair_loss, train_dpo
from training.launcher import write_pairs
from training.services import TrainingError, check_loss_terms

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
    terms = terms_for(config)
    loss, _, _ = _pair_loss(config, torch.cat([pc, pr]), torch.cat([nc, nr]), rc, rr, None, terms)
    h = (pc - rc) - (pr - rr)
    expected = -F.logsigmoid(0.1 * h + alpha * (nc - nr)).mean()  # Park et al. 2024
    assert torch.isclose(torch.as_tensor(loss).double(), expected)
    plain, _, _ = _pair_loss(DPOConfig(beta=0.1), torch.cat([pc, pr]), torch.cat([nc, nr]), rc, rr, None)
    assert not torch.isclose(torch.as_tensor(plain).double(), expected)


def test_the_length_term_moves_the_policy_toward_the_shorter_answer_when_labels_prefer_neither():
    """Two labels on one prompt, each preferring another of a 40-token and a 10-token answer, policy equal to the
    reference: plain DPO's gradient is 0; R-DPO's must lower the long answer's log-prob against the short one's (with
    the sign reversed it raised it: the term rewarded length)."""
    config = DPOConfig(beta=0.1, length_alpha=0.01)
    long_, short = torch.tensor(-50.0, dtype=torch.float64), torch.tensor(-20.0, dtype=torch.float64)
    x = torch.stack([long_, short, short, long_]).clone().requires_grad_(True)  # chosen: long, short; rejected: short, long
    lengths = torch.tensor([40.0, 10.0, 10.0, 40.0], dtype=torch.float64)
    ref = torch.stack([long_, short]).detach()
    loss, _, _ = _pair_loss(config, x, lengths, ref, ref.flip(0), None, terms_for(config))
    torch.as_tensor(loss).backward()
    toward_long = x.grad[0] + x.grad[3] - x.grad[1] - x.grad[2]  # d loss / d (log π(long) − log π(short))
    assert toward_long > 0  # descent lowers the long answer's log-prob against the short one's


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
    assert set(logged) == {"terms/rule_penalty", "loss/preference"} and logged["terms/rule_penalty"] > 0


def test_terms_load_only_from_the_allow_list():
    with pytest.raises(ValueError, match="is not allowed"):
        load_term("os:system?command=touch /tmp/pwned")
    with pytest.raises(ValueError, match="is not allowed"):
        configured_terms(0, 0, "subprocess:Popen")
    term = load_term("training.dpo.terms:LengthRegulariser?alpha=0.5")
    assert isinstance(term, LengthRegulariser) and term.alpha == 0.5
    assert load_term("tests.training.test_loss_terms:constant_term", allowed=["tests.training.test_loss_terms:constant_term"])


def constant_term(batch):
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


def test_a_term_class_named_without_arguments_is_built_with_its_defaults_or_refused_at_once():
    # named bare, a class used to be handed the batch as its first argument at the first step, in the worker
    penalty = load_term("training.dpo.terms:RulePenalty")
    assert isinstance(penalty, RulePenalty) and penalty.weight == 1.0
    with pytest.raises(ValueError, match="MarginCap\\?cap=x': building it failed: .*could not convert"):
        load_term("training.dpo.terms:MarginCap?cap=x")
    with pytest.raises(ValueError, match="cap must be a positive number"):
        load_term("training.dpo.terms:MarginCap?cap=-1")


shared_cap = MarginCap()


def test_a_margin_cap_named_without_a_cap_takes_it_from_the_runs_flip_rate(tiny_model_dir, tmp_path, dtype):
    """The capped robust loss is the setting measured for noisy labels, its cap ln((1 - eps)/eps); with
    label_agreement "measured" nobody knows eps before the round, so a bare cap reads it from the run's settings."""
    bare = "training.dpo.terms:MarginCap"
    (cap,) = configured_terms(0, 0, bare, loss_type="robust", smoothing=0.25)
    assert cap.cap == pytest.approx(math.log(3))
    config = DPOConfig(loss_type="robust", label_agreement=0.625, loss_terms=bare)  # agreement 0.625 is a 25% flip rate
    (cap,) = terms_for(config)
    assert cap.cap == pytest.approx(math.log(3))
    assert configured_terms(0, 0, bare + "?cap=2", smoothing=0.25)[0].cap == 2  # a stated cap stands
    # a cap a module holds is shared by every run that names it: each run gets its own flip rate's cap
    shared = "tests.training.test_loss_terms:shared_cap"
    first = configured_terms(0, 0, shared, [shared], smoothing=0.25)[0]
    second = configured_terms(0, 0, shared, [shared], smoothing=0.1)[0]
    assert first.cap == pytest.approx(math.log(3)) and second.cap == pytest.approx(math.log(9))
    assert shared_cap.cap is None
    # no flip rate: no cap to take; refused when the settings are read (before a round is queued) and in the worker
    with pytest.raises(TrainingError, match=r"loss_terms: margin_cap without cap= .* this run's is 0 \(every label "
                                            r"trusted.*\): give label_smoothing, or label_agreement under 1, or cap=C"):
        check_loss_terms(DPOConfig(loss_type="robust", loss_terms=bare))
    pairs = [PreferencePair(prompt=f"Tell me about topic {i}.", chosen="Thank you! Happy to help.", rejected="No.")
             for i in range(8)]
    with pytest.raises(ValueError, match="margin_cap without cap="):
        train_dpo(DPOConfig(dtype=dtype, batch_size=4, epochs=1, loss_terms=bare), tiny_model_dir, pairs,
                  tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    # with one, the worker builds the cap from it and trains
    steps = []
    result = train_dpo(DPOConfig(dtype=dtype, batch_size=4, epochs=1, loss_type="robust", label_smoothing=0.25,
                                 loss_terms=bare), tiny_model_dir, pairs, tmp_path / "out",
                       on_step=lambda s, t, m: steps.append(m))
    assert len(steps) == 2 and math.isfinite(result.mean_loss)


@pytest.mark.parametrize("loss_type", ["sigmoid", "robust"])
def test_the_margin_cap_counts_beta_h_up_to_the_cap_and_no_further(loss_type):
    pc, pr, rc, rr, nc, nr = _batch()
    pr = pr.clone()
    pr[0] -= 60  # pair 0 far past the cap (beta h about 6), the others near 0
    config = DPOConfig(beta=0.1, loss_type=loss_type, label_smoothing=0.2 if loss_type == "robust" else 0.0,
                       loss_terms="training.dpo.terms:MarginCap?cap=1.5")
    policy = torch.cat([pc, pr]).clone().requires_grad_(True)
    terms = configured_terms(0, 0, config.loss_terms)
    assert isinstance(terms[0], MarginCap) and terms[0].cap == 1.5
    loss, _, _ = _pair_loss(config, policy, torch.cat([nc, nr]), rc, rr, None, terms)
    h = (pc - rc) - (pr - rr)
    assert 0.1 * h[0] > 1.5 and (0.1 * h[1:] < 1.5).all()
    # the formula: the loss of the capped margin, built from its own pieces
    capped = torch.minimum(0.1 * h, torch.tensor(1.5, dtype=h.dtype))
    eps = 0.2
    expected = {"sigmoid": -F.logsigmoid(capped),
                "robust": (-(1 - eps) * F.logsigmoid(capped) + eps * F.logsigmoid(-capped)) / (1 - 2 * eps),
                }[loss_type].mean()
    uncapped = {"sigmoid": -F.logsigmoid(0.1 * h),
                "robust": (-(1 - eps) * F.logsigmoid(0.1 * h) + eps * F.logsigmoid(-0.1 * h)) / (1 - 2 * eps),
                }[loss_type].mean()
    assert not torch.isclose(expected, uncapped)  # the cap changes the loss here
    assert torch.isclose(torch.as_tensor(loss).double(), expected)
    loss.backward()
    assert policy.grad[0] == 0 and policy.grad[4] == 0  # past the cap: no pull on either answer
    assert (policy.grad[1:4] != 0).all()
    # without the cap the robust loss keeps pulling a pair however far it is ahead
    if loss_type == "robust":
        free = torch.cat([pc, pr]).clone().requires_grad_(True)
        _pair_loss(DPOConfig(beta=0.1, loss_type="robust", label_smoothing=0.2), free, torch.cat([nc, nr]), rc, rr,
                   None)[0].backward()
        assert free.grad[0] < 0  # descent raises the chosen answer's log-prob further
        assert abs(float(free.grad[0])) > 0.1 * 0.2 / 0.6 / 4 * 0.99  # at least the floor, beta eps / (1 - 2 eps) / B


def test_a_coin_flip_label_adds_nothing_to_the_robust_loss():
    """A label of probability 0.5 (an imported row, a judge routed at chance) made the robust loss divide by
    1 - 2 eps = 0: a loss of -inf or nan, and a round's weights nan. One just above it (0.51) was weighed 50 times
    a sure label's, with what is mostly noise. Past a flip rate of 0.45 a pair adds nothing; up to it, the formula."""
    pc, pr, rc, rr, _, _ = _batch()
    policy = torch.cat([pc, pr]).clone().requires_grad_(True)
    chosen, rejected = policy.chunk(2)
    prefs = torch.tensor([0.5, 1.0, 0.51, 0.55], dtype=torch.float64)
    losses, _, _ = dpo_loss(chosen, rejected, rc, rr, beta=0.1, loss_type="robust", preference_prob=prefs)
    assert torch.isfinite(losses).all()
    z = 0.1 * ((pc - rc) - (pr - rr))
    assert losses[0] == 0 and losses[2] == 0
    assert torch.isclose(losses[1], -F.logsigmoid(z[1]))
    assert torch.isclose(losses[3], (-0.55 * F.logsigmoid(z[3]) + 0.45 * F.logsigmoid(-z[3])) / 0.1)
    losses.mean().backward()
    assert torch.isfinite(policy.grad).all() and policy.grad[0] == 0 and policy.grad[2] == 0
    # a round's own flip rate past it is refused when the settings are read, not trained on as nothing
    with pytest.raises(ValueError, match="label_smoothing=0.47: the robust loss takes a flip rate up to 0.45"):
        DPOConfig(loss_type="robust", label_smoothing=0.47)
    with pytest.raises(ValueError, match="label_agreement=0.501: the robust loss"):
        DPOConfig(loss_type="robust", label_agreement=0.501)
    DPOConfig(loss_type="sigmoid", label_smoothing=0.47)  # cDPO's smoothing has no such weight


def test_a_robust_round_with_coin_flip_labels_trains_to_finite_weights(tiny_model_dir, tmp_path, dtype):
    pairs = [PreferencePair(prompt=f"Tell me about topic {i}.", chosen="Thank you! Happy to help.", rejected="No.",
                            preference_prob=0.5 if i % 2 else 1.0) for i in range(8)]
    result = train_dpo(DPOConfig(dtype=dtype, batch_size=4, epochs=1, loss_type="robust", label_smoothing=0.1),
                       tiny_model_dir, pairs, tmp_path / "out")
    assert math.isfinite(result.mean_loss)
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def nan_term(batch):
    return TermResult(loss=batch.policy_chosen.sum() * float("nan"))


def test_a_step_whose_loss_is_not_finite_stops_the_run_before_the_weights_take_it(tiny_model_dir, tmp_path, dtype,
                                                                                   monkeypatch):
    pairs = [PreferencePair(prompt=f"Tell me about topic {i}.", chosen="Thank you!", rejected="No.") for i in range(8)]
    name = "tests.training.test_loss_terms:nan_term"
    steps = []  # a spy on the optimiser: the real step, counted
    real_step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: steps.append(1) or real_step(self, *a, **k))
    with pytest.raises(TrainingDiverged, match=r"step 1 of 2: the loss is nan .*nothing was saved"):
        train_dpo(DPOConfig(dtype=dtype, batch_size=4, epochs=1, loss_terms=name), tiny_model_dir, pairs,
                  tmp_path / "out", allowed_terms=[name])
    assert not steps and not (tmp_path / "out").exists()
    train_dpo(DPOConfig(dtype=dtype, batch_size=4, epochs=1), tiny_model_dir, pairs, tmp_path / "plain")
    assert len(steps) == 2  # the spy counts the steps a run takes


def test_the_sft_warm_start_stops_on_a_non_finite_loss_too(tiny_model_dir, tmp_path, dtype, monkeypatch):
    from training.dpo import trainer

    pairs = [PreferencePair(prompt=f"Tell me about topic {i}.", chosen="Thank you!", rejected="No.") for i in range(8)]
    monkeypatch.setattr(trainer, "nll_loss", lambda logps, counts: logps * float("nan"))
    with pytest.raises(TrainingDiverged, match="the SFT warm start: the loss is nan"):
        train_dpo(DPOConfig(dtype=dtype, batch_size=4, epochs=1, sft_warmup_epochs=1), tiny_model_dir, pairs,
                  tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_train_service_refuses_a_term_it_cannot_run_with_nothing_stored(db):
    from generation.models import ModelVersion
    from training.models import TrainingRun
    from training.services import TrainingError, start_training_run

    ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)
    for params, why in (
        ({"loss_terms": "os:system?command=touch /tmp/pwned"}, "is not allowed"),
        ({"loss_terms": "training.dpo.terms:MarginCap"}, "margin_cap without cap= .* this run's is 0"),
        ({"loss_terms": "training.dpo.terms:MarginCap?cap=0"}, "building it failed: .*positive"),
        ({"loss_type": "ipo", "loss_terms": "training.dpo.terms:MarginCap?cap=2"}, "not the 'ipo' loss"),
        ({"loss_type": "hinge", "loss_terms": "training.dpo.terms:MarginCap?cap=2"}, "stops at beta.h = 1 by itself"),
        ({"loss_terms": "training.dpo.terms:MarginCap?cap=2,training.dpo.terms:MarginCap?cap=3"}, "more than once"),
    ):
        with pytest.raises(TrainingError, match=f"training settings: loss_terms: .*{why}"):
            start_training_run(params=params, enqueue=False)
    assert not TrainingRun.objects.exists()
    run = start_training_run(params={"loss_type": "robust", "label_smoothing": 0.25,
                                     "loss_terms": "training.dpo.terms:MarginCap?cap=1.1"}, enqueue=False)
    assert run.params["loss_terms"] == "training.dpo.terms:MarginCap?cap=1.1"
    run.delete()
    run = start_training_run(params={"loss_type": "robust", "label_agreement": 0.625,
                                     "loss_terms": "training.dpo.terms:MarginCap"}, enqueue=False)
    assert run.params["loss_terms"] == "training.dpo.terms:MarginCap"  # its cap, ln 3, is the settings' to derive


def test_a_loop_refuses_a_term_it_cannot_run_before_its_first_round(db):
    from django.core.management import CommandError, call_command

    from generation.models import ModelVersion
    from loop.models import LoopRun

    ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)
    for terms, why in (("os:system?command=touch /tmp/pwned", "is not allowed"),
                       ("training.dpo.terms:MarginCap", "margin_cap without cap= .* this run's is 0")):
        with pytest.raises(CommandError, match=f"loss_terms: .*{why}"):
            call_command("run_loop", rounds=1, pairs=1, judge="judges.rules:length_target",
                         params=json.dumps({"training": {"loss_terms": terms}}))
    assert not LoopRun.objects.exists()


def test_a_margin_term_is_logged_per_step_as_a_loss_term_is():
    """Only terms that add a loss were logged: the R-DPO length term and the margin cap, which shift the margin,
    left no trace in the step's metrics (an outside review)."""
    pc, pr, rc, rr, nc, nr = _batch()
    logged = {}
    _pair_loss(DPOConfig(length_alpha=0.05), torch.cat([pc, pr]), torch.cat([nc, nr]), rc, rr, None,
               configured_terms(0.05, 0, ""), None, logged)
    assert logged["terms/length/margin"] == pytest.approx(float((0.05 * (nr - nc)).mean()))
