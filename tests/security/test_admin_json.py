"""The admin's JSON fields (a training run's settings, a prompt's chat, a response's sampling settings and token ids)
read what staff type the way every other JSON reader of the project does: an object that gives a key twice kept its
last value without a word ('{"beta": 0.5, "beta": 0.05}' trained at 0.05). It is now the field's error on the form,
and nothing is stored. (JSON nested too deep and numbers of thousands of digits never reach a form: the request
limits refuse them, tests/security/test_request_limits.py.)"""
from __future__ import annotations

import pytest

from generation.models import Prompt, Response
from tests.annotate.factories import make_prompt
from tests.compare.conftest import make_version
from training.models import TrainingRun

from .urlwalk import page_inputs

pytestmark = pytest.mark.django_db

BAD = {
    "at the top": ('{"beta": 0.5, "beta": 0.05}', "the key &#x27;beta&#x27; is given twice"),
    "nested": ('[{"role": "user", "content": "a", "content": "b"}]', "the key &#x27;content&#x27; is given twice"),
}


def _form(client, url) -> dict[str, str]:
    found = page_inputs(client.get(url).content.decode())
    return dict(found.values)


@pytest.mark.parametrize("bad", BAD)
def test_a_training_run_started_in_the_admin_with_unreadable_settings_is_refused_on_the_form(client, staff, bad):
    text, error = BAD[bad]
    base = make_version("base", is_current=True)
    client.force_login(staff)
    response = client.post("/admin/training/trainingrun/add/", {
        "input_version": base.pk, "reference_choice": "start", "data_choice": "all", "params": text})
    assert response.status_code == 200 and error in response.content.decode()
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize("bad", BAD)
def test_a_prompt_or_response_changed_in_the_admin_with_unreadable_json_is_refused_and_kept(client, staff, bad):
    text, error = BAD[bad]
    # a prompt with no answers or pairs yet, an answer in no pair: those that are keep their fields (generation.admin)
    prompt = make_prompt()
    answer = Response.objects.create(prompt=make_prompt(), text="An answer", source="test")
    client.force_login(staff)
    for url, field, obj in [(f"/admin/generation/prompt/{prompt.pk}/change/", "messages", prompt),
                            (f"/admin/generation/response/{answer.pk}/change/", "sampling_params", answer),
                            (f"/admin/generation/response/{answer.pk}/change/", "token_ids", answer)]:
        before = type(obj).objects.filter(pk=obj.pk).values().get()
        fields = {**_form(client, url), field: text}
        fields.pop("_continue", None), fields.pop("_addanother", None)
        response = client.post(url, fields)
        assert response.status_code == 200 and error in response.content.decode(), (url, field)
        assert type(obj).objects.filter(pk=obj.pk).values().get() == before
    assert Prompt.objects.count() == 2 and Response.objects.count() == 1
