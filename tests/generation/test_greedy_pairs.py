"""Temperature 0 with K >= 2 samples a prompt and a pairing: greedy decoding gives K identical answers, so no pair
can be made. `generate_pairs --prompts 4 --samples 4 --temperature 0` ran to the end and said "0 pairs queued";
now the command, the Generate page and the API refuse it up front, with the one message of check_pairing."""
from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from api.tokens import create_token
from generation.backends.base import SamplingConfig
from generation.models import GenerationJob, ModelVersion, Prompt
from generation.services import PAIRING_STRATEGIES, GenerationError, check_pairing, start_generation_job

pytestmark = pytest.mark.django_db

REFUSAL = "temperature 0 samples greedily: the 4 samples per prompt would be 4 identical answers"
FORM = {"prompts": 4, "samples": 4, "split": "train", "pairing": "random", "temperature": 0, "top_p": 0.95,
        "max_new_tokens": 8, "seed": 0}


@pytest.fixture
def version(db):
    for i in range(4):
        Prompt.objects.create(text=f"Train prompt {i}.")
    # no model behind it: a refused start never loads one, and an accepted one is only queued here
    return ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)


@pytest.mark.parametrize("pairing", [p for p in PAIRING_STRATEGIES if p != "none"])
def test_every_pairing_but_none_refuses_greedy_samples(pairing):
    with pytest.raises(GenerationError, match=f"{REFUSAL}, so pairing '{pairing}' can make no pair; set "
                                              "temperature from 0.01 to 2.0, or pairing 'none'"):
        check_pairing(pairing, "judges.rules:length_target" if pairing == "judge" else "", 4, 0.0)
    check_pairing("none", "", 4, 0.0)  # samples only (a self-play round's): K greedy answers are what was asked
    check_pairing("random", "", 4, 0.8)
    check_pairing("random", "", 4)  # a caller that does not say the temperature is not refused for it


def test_the_command_refuses_it_in_one_line_and_queues_nothing(version):
    with pytest.raises(CommandError) as caught:
        call_command("generate_pairs", "--prompts", "4", "--samples", "4", "--temperature", "0")
    assert str(caught.value).startswith(f"generate_pairs: {REFUSAL}") and "\n" not in str(caught.value)
    assert not GenerationJob.objects.exists()


def test_a_job_of_greedy_samples_with_pairing_none_is_started(version):
    job = start_generation_job(version, n_prompts=4, config=SamplingConfig(n=4, temperature=0), pairing="none",
                               enqueue=False)
    assert job.params["pairing"] == "none" and job.params["sampling"]["temperature"] == 0


def test_the_generate_page_refuses_it_with_the_same_message(client, staff, version):
    client.force_login(staff)
    page = client.post("/generation/", FORM, follow=True).content.decode()
    assert REFUSAL in page
    assert not GenerationJob.objects.exists()


def test_the_api_refuses_it_with_the_same_message(client, staff, version):
    token = create_token(staff, "test pipeline")[1]
    answer = client.post("/api/v1/jobs/generation", json.dumps({"n_prompts": 4, "sampling": {"n": 4, "temperature": 0}}),
                         content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 400, answer.content
    assert REFUSAL in json.dumps(answer.json())
    assert not GenerationJob.objects.exists()
