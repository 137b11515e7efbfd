"""A generation form sent twice (a double click, a retried request) while the first job waits in the queue: each
job chose its prompts when it was queued, from the prompts the version had not answered yet, so both took the same
prompts and seeds, and every pair was made, served and trained on twice."""
from __future__ import annotations

import pytest

from generation import services
from generation.backends.base import SamplingConfig
from generation.models import GenerationJob, ModelVersion, Prompt

pytestmark = pytest.mark.django_db

FORM = {"prompts": 2, "samples": 2, "split": "train", "pairing": "random", "temperature": 0.8, "top_p": 0.95,
        "max_new_tokens": 8, "seed": 0}


def test_a_generation_form_sent_twice_queues_jobs_on_different_prompts(client, staff):
    ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)
    prompts = {Prompt.objects.create(text=f"Train prompt {i}.").pk for i in range(3)}
    client.force_login(staff)
    client.post("/generation/", FORM)
    client.post("/generation/", FORM)
    first, second = (set(job.params["prompt_ids"]) for job in GenerationJob.objects.order_by("pk"))
    assert len(first) == 2 and second == prompts - first  # the one prompt left
    page = client.post("/generation/", FORM).content.decode()  # none left that no job is to answer
    assert "nor a queued or running job of it is to answer" in page and GenerationJob.objects.count() == 2


def test_prompts_of_a_job_that_ended_are_free_again_unless_answered(db):
    base = ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)
    for i in range(2):
        Prompt.objects.create(text=f"Train prompt {i}.")
    job = services.start_generation_job(base, n_prompts=2, config=SamplingConfig(n=2), enqueue=False)
    with pytest.raises(services.GenerationError, match="no prompts left"):
        services.start_generation_job(base, n_prompts=2, config=SamplingConfig(n=2), enqueue=False)
    GenerationJob.objects.filter(pk=job.pk).update(status=GenerationJob.CANCELLED)  # it answered none of them
    again = services.start_generation_job(base, n_prompts=2, config=SamplingConfig(n=2), enqueue=False)
    assert sorted(again.params["prompt_ids"]) == sorted(job.params["prompt_ids"])
