"""`label_agreement: "measured"`: cDPO's label smoothing set from how often people's labels agreed so far (pairs two
people labelled, gold pairs), recorded on the run with what it was measured on; too little evidence is refused
with nothing stored."""
from __future__ import annotations

import dataclasses

import pytest
from django.urls import reverse

from annotate.models import Label
from annotate.quality import label_noise
from generation.models import ModelVersion
from tests.annotate.factories import make_pair, make_user
from training import services
from training.dpo.config import DPOConfig, agreement_for_smoothing, smoothing_for_agreement
from training.models import TrainingRun
from training.services import TrainingError, start_training_run


@pytest.fixture
def current(db):
    return ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)


def _label(pair, user, choice, **fields):
    return Label.objects.create(pair=pair, annotator=user, choice=choice, side="left", left_is_a=True, **fields)


def _team(agree: int, disagree: int, gold_right: int = 0, gold_wrong: int = 0):
    """Two people on `agree + disagree` shared pairs, a third on gold pairs whose answer is "a"."""
    first, second, third = make_user(), make_user(), make_user()
    for i in range(agree + disagree):
        pair = make_pair()
        _label(pair, first, "a")
        _label(pair, second, "a" if i < agree else "b")
    for i in range(gold_right + gold_wrong):
        _label(make_pair(is_gold=True, gold_choice="a"), third, "a" if i < gold_right else "b")
    return first, second, third


def test_label_noise_counts_peoples_decided_labels_against_each_other_and_gold(db):
    first, second, third = _team(agree=9, disagree=3, gold_right=8, gold_wrong=2)
    three = make_pair()  # three people: 2 comparisons, of which a third agree ((a, a) yes, (a, b) twice no)
    for user, choice in ((first, "a"), (second, "a"), (third, "b")):
        _label(three, user, choice)
    undecided = make_pair()  # a tie says nothing about which side is right
    _label(undecided, first, "tie")
    _label(undecided, second, "a")
    judge = make_user("judge-bot")
    _label(three, judge, "b", is_automatic=True)  # judges are not people
    _label(make_pair(is_gold=True, gold_choice="tie"), third, "a")  # gold without a decided answer

    noise = label_noise()
    assert (noise.shared, noise.gold, noise.gold_wrong) == (14, 10, 2)
    assert noise.agreed == pytest.approx(9 + 2 / 3)
    expected = (14 * smoothing_for_agreement((9 + 2 / 3) / 14) + 10 * 0.2) / 24
    assert noise.flip_rate == pytest.approx(expected)
    assert "agreed on 9.667 of 14 comparisons" in noise.describe()
    assert "8 of 10 labels on gold pairs" in noise.describe()


def test_agreement_and_flip_rate_are_inverse():
    for flips in (0.0, 0.1, 0.25, 0.45):
        assert smoothing_for_agreement(agreement_for_smoothing(flips)) == pytest.approx(flips)
    assert agreement_for_smoothing(0.25) == pytest.approx(0.625)
    with pytest.raises(ValueError, match="under 0.5"):
        agreement_for_smoothing(0.5)


def test_agreement_below_chance_reads_as_labels_that_say_nothing(db):
    _team(agree=4, disagree=16)
    assert label_noise().flip_rate == 0.5


def test_a_run_set_to_measured_trains_with_the_measured_flip_rate_and_says_so(current):
    _team(agree=17, disagree=3, gold_right=9, gold_wrong=1)
    noise = label_noise()
    run = start_training_run(params={"label_agreement": "measured", "epochs": 1}, enqueue=False)
    config = DPOConfig.from_dict(run.params)
    assert run.params["label_agreement"] == pytest.approx((1 - noise.flip_rate) ** 2 + noise.flip_rate**2, abs=1e-4)
    assert config.smoothing == pytest.approx(noise.flip_rate, abs=1e-3) and config.smoothing > 0.05
    assert config.epochs == 1
    assert "label agreement measured" in run.log and "agreed on 17 of 20 comparisons" in run.log


def test_too_little_evidence_or_chance_level_labels_are_refused_with_nothing_stored(current):
    _team(agree=8, disagree=2)
    with pytest.raises(TrainingError, match=r"label_agreement 'measured' needs at least 20 comparisons .* found 10"):
        start_training_run(params={"label_agreement": "measured"}, enqueue=False)
    _team(agree=2, disagree=18)
    with pytest.raises(TrainingError, match="little better than chance"):
        start_training_run(params={"label_agreement": "measured"}, enqueue=False)
    _team(agree=40, disagree=0)
    with pytest.raises(TrainingError, match="not both"):
        start_training_run(params={"label_agreement": "measured", "label_smoothing": 0.1}, enqueue=False)
    with pytest.raises(TrainingError, match="sigmoid"):  # cDPO's smoothing needs the sigmoid or robust loss
        start_training_run(params={"label_agreement": "measured", "loss_type": "ipo"}, enqueue=False)
    assert not TrainingRun.objects.exists()


def test_the_train_page_measures_it_when_asked(client, staff, current, monkeypatch):
    client.force_login(staff)
    assert "measure label agreement" in client.get(reverse("training:runs")).content.decode()
    form = {f.name: f.default for f in dataclasses.fields(DPOConfig)}
    form = {k: v for k, v in form.items() if v is not False}
    form.update(reference_choice="base", data_choice="all", measure_agreement="on")
    response = client.post(reverse("training:runs"), form)
    assert response.status_code == 200
    assert "needs at least 20 comparisons" in str(response.context["form"].errors["measure_agreement"])
    response = client.post(reverse("training:runs"), {**form, "label_agreement": "0.7"})
    assert "not both" in str(response.context["form"].errors["measure_agreement"])
    assert not TrainingRun.objects.exists()
    _team(agree=18, disagree=6)
    response = client.post(reverse("training:runs"), {**form, "loss_type": "ipo"})  # the measured number's error
    assert "sigmoid" in str(response.context["form"].errors["measure_agreement"])  # shows where it came from
    measured = []  # a spy: the real measurement, counted
    monkeypatch.setattr(services, "label_noise", lambda: measured.append(1) or label_noise())
    response = client.post(reverse("training:runs"), form)
    assert response.status_code == 302
    assert len(measured) == 1  # the form measures it, the service takes the number: once a request
    run = TrainingRun.objects.get()
    assert run.params["label_agreement"] == pytest.approx(0.75, abs=1e-4)  # (1 - e)² + e² for 18 of 24
    assert "agreed on 18 of 24 comparisons" in run.log


def test_a_loop_is_told_its_labels_come_from_a_judge(current):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="label_agreement 'measured' is measured on people's labels"):
        call_command("run_loop", rounds=1, pairs=1, judge="judges.rules:length_target",
                     params='{"training": {"label_agreement": "measured"}}')
