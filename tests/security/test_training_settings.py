"""Row 12 of issue 17: training settings had lower bounds only (epochs 1e23, max_length 1e9 and lr 1e308 were
accepted; lr 1e30 failed later as an IntegrityError), and `--params []` or `null` silently meant the defaults. Now
every number has an upper bound a person would call sane, stated in DPOConfig and in the form's help text, NaN and
infinity are refused, and params that are not an object are an error. Nothing is stored for a refused run."""
from __future__ import annotations

import dataclasses

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from generation.models import ModelVersion
from training.dpo.config import BOUNDS, DPOConfig
from training.models import TrainingRun
from training.services import TrainingError, start_training_run


@pytest.fixture
def current(db):
    return ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)


def test_every_numeric_setting_has_a_stated_range():
    kinds = {f.name: type(f.default) for f in dataclasses.fields(DPOConfig) if type(f.default) in (int, float)}
    assert set(kinds) <= set(BOUNDS)
    for name, kind in kinds.items():
        above = BOUNDS[name].high * 10 + 1
        with pytest.raises(ValueError, match=rf"DPOConfig\.{name}=.*: must be"):
            DPOConfig.from_dict({name: kind(above)})
        for value in (float("nan"), float("inf"), float("-inf")):  # never accepted: "must be a finite number ..."
            with pytest.raises(ValueError, match=rf"DPOConfig\.{name}="):  # or, for whole numbers, "expected int"
                DPOConfig.from_dict({name: value})


@pytest.mark.parametrize("params, field", [
    ('{"epochs": 1e23}', "epochs"),
    ('{"epochs": 100000000000000000000000}', "epochs"),
    ('{"max_length": 1000000000}', "max_length"),
    ('{"learning_rate": 1e308}', "learning_rate"),
    ('{"learning_rate": 1e30}', "learning_rate"),
    ('{"learning_rate": NaN}', "learning_rate"),
    ('{"beta": Infinity}', "beta"),
    ('{"batch_size": 100000}', "batch_size"),
    ('{"lora_r": 100000}', "lora_r"),
    ('{"learning_rate": 1' + "0" * 400 + "}", "learning_rate"),
])
def test_train_round_refuses_insane_settings_naming_the_field_and_its_range(current, params, field):
    with pytest.raises(CommandError, match=rf"train_round: training settings: DPOConfig\.{field}=.*: must be"):
        call_command("train_round", params=params)
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize("params", ["[]", "null", "5", '"epochs"', "[1, 2]"])
def test_params_that_are_not_an_object_are_an_error_not_the_defaults(current, params):
    with pytest.raises(CommandError, match="train_round: --params must be a JSON object"):
        call_command("train_round", params=params)
    with pytest.raises(CommandError, match="run_loop: --params must be a JSON object"):
        call_command("run_loop", rounds=1, pairs=1, judge="judges.rules:length_target", params=params)
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize("params, problem", [
    ("[" * 100_000 + "]" * 100_000, "--params is JSON nested too deeply"),
    ('{"beta": 1' + "0" * 5000 + "}", "--params holds a value no setting takes"),
])
def test_params_past_what_json_reads_are_a_one_line_error_not_a_traceback(current, params, problem):
    """A RecursionError or ValueError from json.loads came out of both commands as a traceback."""
    with pytest.raises(CommandError, match=f"^train_round: {problem}"):
        call_command("train_round", params=params)
    with pytest.raises(CommandError, match=f"^run_loop: {problem}"):
        call_command("run_loop", rounds=1, pairs=1, judge="judges.rules:length_target", params=params)
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize("params", ['{"beta": 0.5, "beta": 0.05}', '{"training": {"epochs": 1, "epochs": 9}}'])
def test_params_that_give_a_key_twice_are_refused_not_the_last_one_taken(current, params):
    """json.loads kept the last value without a word: a pasted '{"beta": 0.5, ..., "beta": 0.05}' trained at 0.05."""
    with pytest.raises(CommandError, match="^train_round: --params: the key '(beta|epochs)' is given twice"):
        call_command("train_round", params=params)
    with pytest.raises(CommandError, match="^run_loop: --params: the key '(beta|epochs)' is given twice"):
        call_command("run_loop", rounds=1, pairs=1, judge="judges.rules:length_target", params=params)
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize("params", [[], 0, "x"])
def test_the_service_refuses_params_that_are_not_an_object(current, params):
    with pytest.raises(TrainingError, match="expected an object of settings"):
        start_training_run(params=params, enqueue=False)
    assert not TrainingRun.objects.exists()


def test_loop_sections_that_are_not_objects_are_refused(current):
    for params in ('{"training": []}', '{"training": null}', '{"sampling": [1]}'):
        with pytest.raises(CommandError, match="must be an object of settings"):
            call_command("run_loop", rounds=1, pairs=1, judge="judges.rules:length_target", params=params)
    with pytest.raises(CommandError, match="rounds must be from 1 to 100"):
        call_command("run_loop", rounds=10**9, pairs=1, judge="judges.rules:length_target")


def test_the_form_states_the_ranges_and_refuses_values_outside_them(client, staff, current):
    client.force_login(staff)
    html = client.get(reverse("training:runs")).content.decode()
    assert "From 1 to 100 (preference data overfits within a few epochs)." in html
    assert "More than 0 and at most 0.01 (DPO fine-tunes at 1e-7 to 1e-4" in html
    form = {f.name: f.default for f in dataclasses.fields(DPOConfig)}
    form = {k: v for k, v in form.items() if v is not False}
    form.update(reference_choice="base", data_choice="all")
    for field, value in [("epochs", "1e23"), ("epochs", "101"), ("max_length", "1000000000"),
                         ("learning_rate", "1e308"), ("learning_rate", "0.5"), ("beta", "nan"), ("beta", "inf")]:
        response = client.post(reverse("training:runs"), {**form, field: value})
        assert response.status_code == 200
        errors = response.context["form"].errors
        assert field in errors, (field, value, errors)
    assert not TrainingRun.objects.exists()
    response = client.post(reverse("training:runs"), form)  # the defaults are within every range
    assert response.status_code == 302 and TrainingRun.objects.count() == 1
