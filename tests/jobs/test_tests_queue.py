"""The tests' queued tasks stay in the test run: with the folder broker they went to the checkout's var/broker/queue,
and the next `make run` worker ran those job ids (a test's export, comparison or training run) on the instance's own
database."""
import base64
import json
from pathlib import Path

import pytest
from django.conf import settings

from annotate import export_jobs
from annotate.forms import ExportForm

pytestmark = pytest.mark.django_db(transaction=True)  # committed: the task is sent, as in production


@pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("filesystem://"), reason="the folder broker's case")
def test_a_job_a_test_queues_goes_to_the_test_runs_own_broker_folder(staff, _broker_folder_of_its_own):
    instance_queue = Path(settings.BROKER_DIR) / "queue"
    before = set(instance_queue.iterdir()) if instance_queue.is_dir() else set()
    ours = set((_broker_folder_of_its_own / "queue").iterdir())
    form = ExportForm({"format": "jsonl", "license": "", "boxes_shown": "1"})
    assert form.is_valid(), form.errors
    job = export_jobs.start_form(form.cleaned_data, staff)
    sent = set((_broker_folder_of_its_own / "queue").iterdir()) - ours
    assert len(sent) == 1
    message = json.loads(next(iter(sent)).read_text())
    assert (message["headers"]["task"], json.loads(base64.b64decode(message["body"]))[0]) == (
        "annotate.tasks.run_export_job", [job.pk])
    after = set(instance_queue.iterdir()) if instance_queue.is_dir() else set()
    assert after == before


@pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")), reason="Redis's case")
def test_a_job_a_test_queues_goes_under_the_test_runs_own_redis_keys(staff, _broker_folder_of_its_own):
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    prefix = _broker_folder_of_its_own
    before = client.llen("default")  # the queue an instance's workers read
    ours = client.llen(f"{prefix}default")
    form = ExportForm({"format": "jsonl", "license": "", "boxes_shown": "1"})
    assert form.is_valid(), form.errors
    job = export_jobs.start_form(form.cleaned_data, staff)
    assert client.llen(f"{prefix}default") == ours + 1
    message = json.loads(client.lindex(f"{prefix}default", 0))
    assert (message["headers"]["task"], json.loads(base64.b64decode(message["body"]))[0]) == (
        "annotate.tasks.run_export_job", [job.pk])
    assert client.llen("default") == before
