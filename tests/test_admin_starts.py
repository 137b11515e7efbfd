"""Jobs started from the admin's "Add" forms and its "Generate pairs" action: a queue that is down is said on the
page (it answered 500), and settings that are not an object are refused as the page and the API refuse them (they ran with the defaults)."""
from __future__ import annotations

import pytest

from generation.models import GenerationJob, ModelVersion, Prompt
from loop.models import LoopRun
from tests.api.test_queue_down import queue  # noqa: F401 - the queue stood in for, down at first
from training.models import TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def base():
    base = ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)
    for k in range(2):
        Prompt.objects.create(text=f"Train prompt {k}.")
        Prompt.objects.create(text=f"Eval prompt {k}.", split=Prompt.EVAL)
    return base


def test_admin_starts_with_the_queue_down_say_so(client, staff, queue, base):  # noqa: F811
    client.force_login(staff)
    starts = [
        (TrainingRun, "/admin/training/trainingrun/add/",
         {"input_version": base.pk, "reference_choice": "start", "data_choice": "all", "params": "{}"}),
        (LoopRun, "/admin/loop/looprun/add/",
         {"rounds": 1, "pairs": 4, "judge": "judges.rules:length_target", "eval_judge": "", "tag": "",
          "eval_limit": 2, "seed": 0}),
    ]
    for model, url, form in starts:
        response = client.post(url, form, follow=True)
        assert response.status_code == 200, (url, response.status_code)
        page = response.content.decode()
        assert "task queue could not be reached" in page and "queued;" not in page, url
        assert model.objects.get().status == "failed", url


@pytest.mark.parametrize("params", ["[]", "0", '"beta"'])
def test_admin_training_settings_that_are_not_an_object_are_refused(client, staff, base, params):
    client.force_login(staff)
    response = client.post("/admin/training/trainingrun/add/", {
        "input_version": base.pk, "reference_choice": "start", "data_choice": "all", "params": params}, follow=True)
    assert response.status_code == 200
    assert "training settings" in response.content.decode()
    assert not TrainingRun.objects.exists()


def test_the_admin_generate_pairs_action_with_the_queue_down_says_so(client, staff, queue, base):  # noqa: F811
    """The versions list's "Generate pairs" action (found by an outside probe: it answered 500, the job failed)."""
    client.force_login(staff)
    response = client.post("/admin/generation/modelversion/", {"action": "generate_pairs",
                                                               "_selected_action": [base.pk]}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert any("task queue could not be reached" in m for m in shown), shown
    assert not any("queued" in m for m in shown), shown
    assert GenerationJob.objects.get().status == "failed"
