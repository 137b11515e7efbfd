"""Settings a run cannot use are refused when the run is configured, naming the setting, not accepted and then
ignored or failing in the worker: label smoothing and KTO's weights off their losses, a margin term on a loss
without a margin, a term's weight outside its setting's bounds, a LoRA adapter to train from."""
import pytest

from training.dpo.config import DPOConfig
from training.dpo.terms import terms_for

NOT_SMOOTHED = ["ipo", "hinge", "kto", "rrhf"]


@pytest.mark.parametrize("loss_type", NOT_SMOOTHED)
def test_label_smoothing_is_refused_for_a_loss_that_does_not_use_it(loss_type):
    with pytest.raises(ValueError, match=rf"DPOConfig.label_smoothing=0.4: .*the '{loss_type}' loss does not use it"):
        DPOConfig(loss_type=loss_type, label_smoothing=0.4)
    DPOConfig(loss_type=loss_type, label_smoothing=0.0)  # left at 0: nothing to refuse


@pytest.mark.parametrize("loss_type", ["sigmoid", "robust", "ipo", "hinge", "rrhf"])
@pytest.mark.parametrize("name", ["kto_desirable_weight", "kto_undesirable_weight"])
def test_kto_weights_are_refused_off_the_kto_loss(loss_type, name):
    with pytest.raises(ValueError, match=rf"DPOConfig.{name}=50.0: weighs the kto loss only, and the '{loss_type}'"):
        DPOConfig.from_dict({"loss_type": loss_type, name: 50})
    DPOConfig(loss_type=loss_type, **{name: 1.0})
    DPOConfig(loss_type="kto", **{name: 50.0})


@pytest.mark.parametrize("loss_type", ["ipo", "kto", "rrhf"])
def test_a_margin_term_by_name_is_refused_for_a_loss_without_a_margin(loss_type):
    config = DPOConfig(loss_type=loss_type, loss_terms="training.dpo.terms:LengthRegulariser?alpha=0.1")
    with pytest.raises(ValueError, match=rf"the length term shifts the margin .* the '{loss_type}' loss has no margin"):
        terms_for(config)
    for margin_loss in ("sigmoid", "robust", "hinge"):
        assert terms_for(DPOConfig(loss_type=margin_loss, loss_terms=config.loss_terms))


@pytest.mark.parametrize("name, why", [
    ("LengthRegulariser?alpha=nan", r"length alpha=nan: must be a finite number from 0 to 1 .*length_alpha"),
    ("LengthRegulariser?alpha=5", r"length alpha=5.0: must be a finite number from 0 to 1"),
    ("LengthRegulariser?alpha=-3", r"length alpha=-3.0: must be a finite number from 0 to 1"),
    ("LengthRegulariser?alpha=abc", r"length alpha='abc': must be a finite number"),
    ("RulePenalty?weight=nan", r"rule_penalty weight=nan: must be a finite number from 0 to 100 .*rule_penalty"),
    ("RulePenalty?weight=-100", r"rule_penalty weight=-100.0: must be a finite number from 0 to 100"),
    ("RulePenalty?weight=1&margin=inf", r"rule_penalty margin=inf: must be a finite number"),
])
def test_a_term_argument_outside_its_settings_bounds_is_refused(name, why):
    with pytest.raises(ValueError, match=rf"loss term 'training.dpo.terms:{name.replace('?', '.')}'.*{why}"):
        terms_for(DPOConfig(loss_terms=f"training.dpo.terms:{name}"))
    assert terms_for(DPOConfig(loss_terms="training.dpo.terms:LengthRegulariser?alpha=0.1,"
                                          "training.dpo.terms:RulePenalty?weight=100&margin=0.5"))


@pytest.mark.django_db
def test_the_train_service_refuses_them_before_anything_is_queued():
    from generation.models import ModelVersion
    from training.models import TrainingRun
    from training.services import TrainingError, start_training_run

    ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)
    for params, why in (
        ({"loss_type": "ipo", "loss_terms": "training.dpo.terms:LengthRegulariser?alpha=0.1"}, "shifts the margin"),
        ({"loss_terms": "training.dpo.terms:LengthRegulariser?alpha=nan"}, "must be a finite number"),
        ({"loss_type": "hinge", "label_smoothing": 0.2}, "label_smoothing=0.2"),
        ({"loss_type": "sigmoid", "kto_desirable_weight": 2}, "kto_desirable_weight=2.0"),
    ):
        with pytest.raises(TrainingError, match=f"training settings: .*{why}"):
            start_training_run(params=params, enqueue=False)
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("reference_choice", ["base", "start"])
def test_training_from_a_lora_version_is_refused_at_the_start(reference_choice):
    from generation.models import ModelVersion
    from training.models import TrainingRun
    from training.services import TrainingError, start_training_run

    base = ModelVersion.objects.create(name="base", path="/nonexistent")
    lora = ModelVersion.objects.create(name="round-1", path="/nonexistent-adapter", parent=base, round=1,
                                       kind=ModelVersion.LORA, base=base, is_current=True)
    with pytest.raises(TrainingError, match="the input version 'round-1' is a LoRA adapter: train from a full "
                                            "checkpoint"):
        start_training_run(input_version=lora, reference_choice=reference_choice, params={"epochs": 1},
                           enqueue=False)
    assert not TrainingRun.objects.exists()
    assert start_training_run(input_version=base, params={"lora": True}, enqueue=False).status == "queued"
