"""A job's admin page, its end when a cancel meets a failure, and a comparison set's bar and Cancel: what an audit
found saying untrue things (a finished job back to "running", a stage read as still at work, a stale total)."""
import pytest
from django.urls import reverse

from compare import services as compare_services
from compare.models import CompareJob
from generation.models import GenerationJob, ModelVersion, Response
from jobs import lifecycle
from jobs.lifecycle import Tracker
from tests.compare import conftest as compare_fixtures
from tests.compare.conftest import make_job, make_prompt

versions = compare_fixtures.versions  # the compare tests' fixture: a base version and its child

pytestmark = pytest.mark.django_db


def _running_generation_job() -> GenerationJob:
    version = ModelVersion.objects.create(name="v0", path="/nowhere", is_current=True)
    job = GenerationJob.objects.create(version=version, total=8, params={"prompt_ids": list(range(8))})
    job = lifecycle.claim(GenerationJob, job.pk)
    Tracker(job).report(done=4, progress=0.5, stage="sampling prompts 5–8", force=True)
    return job


@pytest.mark.parametrize("kind", ["generationjob", "comparejob"])
def test_a_jobs_admin_page_cannot_write_back_what_it_showed(client, staff, kind):
    """Staff opened a running job's page; the worker finished; Save put it back to running at 50%, no worker."""
    if kind == "generationjob":
        job = _running_generation_job()
    else:
        a = ModelVersion.objects.create(name="v0", path="/nowhere", is_current=True)
        b = ModelVersion.objects.create(name="v1", path="/nowhere")
        job = lifecycle.claim(CompareJob, CompareJob.objects.create(version_a=a, version_b=b, prompt_ids=[1],
                                                                    total=2).pk)
        Tracker(job).report(done=1, progress=0.5, stage="answering with B", force=True)
    client.force_login(staff)
    url = f"/admin/{job._meta.app_label}/{kind}/{job.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200 and 'name="status"' not in page.content.decode()  # shown, not a field
    lifecycle.finish(job)
    client.post(url, {"status": "running", "progress": "0.5", "stage": "sampling", "attempts": "1"})
    job.refresh_from_db()
    assert (job.status, job.progress) == ("succeeded", 1.0)


def test_the_admin_adds_no_job_a_worker_would_never_run_and_cancels_from_the_list(client, staff):
    job = _running_generation_job()
    client.force_login(staff)
    assert client.get("/admin/generation/generationjob/add/").status_code == 403
    client.post("/admin/generation/generationjob/add/", {"version": job.version_id, "status": "queued"})
    assert GenerationJob.objects.count() == 1  # only the job started by its service
    response = client.post("/admin/generation/generationjob/",
                           {"action": "cancel_selected", "_selected_action": [job.pk]}, follow=True)
    assert "asked to stop" in response.content.decode()
    job.refresh_from_db()
    assert job.status == "cancelling"


def test_a_failure_while_stopping_ends_cancelled_saying_so(db):
    job = _running_generation_job()
    lifecycle.cancel(job)
    lifecycle.fail(job, "RuntimeError: CUDA error: device-side assert triggered")
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert job.stage == "cancelled; failed while stopping in: sampling prompts 5–8"  # not read as still sampling
    assert "cancelled; failed while stopping: RuntimeError: CUDA error" in job.log


def test_a_set_counts_against_the_prompts_it_answers_when_some_were_deleted(versions):
    base, child = versions
    prompts = [make_prompt() for _ in range(4)]
    job = compare_services.start_compare_job(child, base, limit=10, enqueue=False)
    prompts[0].delete()
    seen = []

    def answer(version, prompts, config, *, seed, on_progress=None, should_stop=None, on_partial=None):
        out = {}
        for k, prompt in enumerate(prompts, 1):
            out[prompt.pk], _ = Response.objects.get_or_create(prompt=prompt, version=version,
                                                               defaults={"text": version.name, "token_count": 3})
            on_progress(k, len(prompts))
            row = CompareJob.objects.get(pk=job.pk)
            seen.append((row.done, row.total))
        return out

    job = compare_services.run_compare_job(job.pk, answer=answer)
    assert (job.done, job.total) == (6, 6)
    assert seen == [(k, 6) for k in range(1, 7)]  # "6 / 8 answers" at 99%, then a jump to "6 / 6"


def test_cancel_by_htmx_of_a_set_that_had_ended_keeps_its_vote_form(client, staff, versions):
    """The Cancel button was on screen while the set was answered; clicked just after it finished, the answer
    replaced the set with a card reading "succeeded" and no vote form, its comparisons votable all the same."""
    base, child = versions
    job = make_job(child, base, n=2)
    client.force_login(staff)
    assert "vote-keys" in client.get(reverse("compare:job", args=[job.pk]), HTTP_HX_REQUEST="true").content.decode()
    after = client.post(reverse("compare:cancel", args=[job.pk]), HTTP_HX_REQUEST="true")
    assert after.status_code == 200 and "vote-keys" in after.content.decode()
