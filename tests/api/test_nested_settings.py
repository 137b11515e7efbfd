"""Settings objects nested in a request (sampling, training params, loop params) with an integer too large for a
float, or a judge name that is not text: a 400 naming the setting, never a 500, and nothing stored. The API's JSON
reads integers of up to 4,300 digits, and float() of one past 1e308 raises OverflowError, which the settings'
checks did not catch."""
from __future__ import annotations

import pytest

from compare.models import CompareJob
from generation.models import GenerationJob, ModelVersion, Prompt
from loop.models import LoopRun
from training.models import TrainingRun

from .conftest import http

pytestmark = pytest.mark.django_db(transaction=True)

HUGE = int("1" + "0" * 400)


def _attacks(a: int, b: int) -> list[tuple[str, dict, str]]:
    loop = {"rounds": 1, "pairs": 1, "judge": "judges.rules:length_target"}
    return [
        ("generation", {"n_prompts": 1, "sampling": {"temperature": HUGE}}, "temperature"),
        ("generation", {"n_prompts": 1, "sampling": {"max_new_tokens": HUGE}}, "max_new_tokens"),
        ("compare", {"version_a": a, "version_b": b, "sampling": {"top_p": HUGE}}, "top_p"),
        ("training", {"params": {"epochs": HUGE}}, "epochs"),
        ("training", {"params": {"beta": HUGE}}, "beta"),
        ("loop", {**loop, "params": {"training": {"batch_size": HUGE}}}, "batch_size"),
        ("loop", {**loop, "params": {"sampling": {"top_p": HUGE}}}, "top_p"),
        ("loop", {**loop, "params": {"eval_judge": 1}}, "eval_judge"),
        ("loop", {**loop, "params": {"eval_judge": ["judges.rules:length_target"]}}, "eval_judge"),
        # falsy ones too (an outside probe: they were read as "none given", and the run started, 201)
        *(("loop", {**loop, "params": {"eval_judge": value}}, "eval_judge") for value in (0, False, [], {})),
    ]


def test_huge_integers_and_non_text_judges_in_nested_settings_are_refused_by_name(live_server, staff, token_for):
    base = ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)
    other = ModelVersion.objects.create(name="other", path="/nonexistent", parent=base, round=1)
    Prompt.objects.create(text="A train prompt.")
    Prompt.objects.create(text="An eval prompt.", split=Prompt.EVAL)
    headers = {"Authorization": f"Bearer {token_for(staff)}"}
    for kind, body, field in _attacks(base.pk, other.pk):
        answer = http("POST", f"{live_server.url}/api/v1/jobs/{kind}", body, headers)
        assert answer.status == 400, (kind, field, answer.status, answer.body)
        assert field in answer.body["detail"], (kind, answer.body)
    for model in (GenerationJob, CompareJob, TrainingRun, LoopRun):
        assert not model.objects.exists(), model
