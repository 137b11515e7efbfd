"""A start page sent with the task queue (the broker) down: the page says so and the job is ended failed. The pages
answered 500 (the API answers 503: tests/api/test_queue_down.py)."""
from __future__ import annotations

import pytest
from django.urls import reverse

from compare.models import CompareJob
from generation.models import GenerationJob, ModelVersion, Prompt
from loop.models import LoopRun
from tests.api.test_queue_down import queue  # noqa: F401 - the queue stood in for, down at first

pytestmark = pytest.mark.django_db(transaction=True)


def test_start_pages_with_the_queue_down_say_so_and_leave_no_job_queued(client, staff, queue):  # noqa: F811
    base = ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)
    other = ModelVersion.objects.create(name="round-1", path="/nonexistent", parent=base)
    for k in range(2):
        Prompt.objects.create(text=f"Train prompt {k}.")
        Prompt.objects.create(text=f"Eval prompt {k}.", split=Prompt.EVAL)
    client.force_login(staff)
    starts = [
        (GenerationJob, reverse("generation:jobs"), {"prompts": 1, "samples": 2, "split": "train", "pairing": "random",
                                                     "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 8, "seed": 0}),
        (LoopRun, "/loop/", {"rounds": 1, "pairs": 4, "judge": "judges.rules:length_target", "tag": "",
                             "eval_limit": 2, "seed": 0}),
        (CompareJob, reverse("compare:index"), {"version_a": other.pk, "version_b": base.pk, "prompts": "eval",
                                                "limit": 2, "seed": 0, "blind": "on", "max_new_tokens": 16}),
    ]
    for model, url, form in starts:
        response = client.post(url, form, follow=True)
        assert response.status_code in (200, 503), (url, response.status_code)
        assert "the task queue could not be reached" in response.content.decode(), url
        job = model.objects.get()
        assert job.status == "failed", (url, job.status)
