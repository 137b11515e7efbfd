"""Jobs through the API, over real HTTP: started by calling the apps' services (run here at once in the web process),
watched until they end, cancelled; bad settings refused with the service's own message."""
from __future__ import annotations

import pytest

from compare.models import CompareJob
from generation import services as generation_services
from generation.models import GenerationJob, Prompt, Response
from loop.models import LoopRun
from prefloop_client import APIError
from training import services as training_services
from training.models import TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)
TINY_SAMPLING = {"n": 2, "max_new_tokens": 4, "temperature": 0.8, "seed": 3}


@pytest.fixture
def tiny_version(db, tiny_model_dir):
    return generation_services.register_version("base", tiny_model_dir)


def test_staff_start_a_generation_job_and_wait_for_its_pairs(staff_api, tiny_version, eager_tasks):
    Prompt.objects.create(text="Say something.", split=Prompt.TRAIN)
    job = staff_api.start_generation(1, sampling=TINY_SAMPLING)
    assert job["kind"] == "generation" and job["details"]["version"] == "base"
    done = staff_api.wait(job, timeout=300, poll=0.2)
    assert done["status"] == "succeeded" and done["progress"] == 1.0 and done["details"]["pairs_made"] == 1
    assert Response.objects.filter(job_id=job["id"]).count() == 2
    assert staff_api.jobs("generation")[0]["id"] == job["id"]


def test_a_jobs_progress_is_what_its_page_shows_within_a_chunk_too(staff_api, tiny_version):
    """A generation of one chunk of prompts read 0.0 through the API for its whole run while its page moved 3% to 78%:
    the API divided prompts done by prompts, which moves only when a whole chunk is stored."""
    job = GenerationJob.objects.create(version=tiny_version, status="running", total=8, done=0, progress=0.56,
                                       stage="sampling prompts 1-8")
    seen = staff_api.job("generation", job.pk)
    assert seen["progress"] == 0.56 and seen["stage"] == "sampling prompts 1-8"


def test_a_pipeline_gets_a_judges_votes_on_a_comparison_and_the_gate_counts_them(staff_api, tiny_version,
                                                                                 tiny_model_dir, eager_tasks):
    """From code there was no way to have a comparison voted on (only pages and commands), so a candidate could
    never pass the gate's minimum of blind votes without people."""
    from compare.models import Vote

    other = generation_services.register_version("round-1", tiny_model_dir, parent=tiny_version)
    for k in range(3):
        Prompt.objects.create(text=f"Which is better {k}?", split=Prompt.EVAL)
    with pytest.raises(APIError) as refused:
        staff_api.start_compare(tiny_version.pk, other.pk, limit=3, sampling=TINY_SAMPLING, judge="os:system")
    assert refused.value.status == 400 and not CompareJob.objects.exists()
    job = staff_api.start_compare(tiny_version.pk, other.pk, limit=3, sampling=TINY_SAMPLING,
                                  judge="judges.rules:longer_text")
    done = staff_api.wait(job, timeout=300, poll=0.2)
    assert done["status"] == "succeeded"
    votes = Vote.objects.filter(comparison__job_id=job["id"])
    assert votes.count() == 3 and all(v.is_automatic and v.judge == "judges.rules:longer_text" for v in votes)
    # the set's summary counts people's votes (none here), and the judge's apart: it read all zeros before
    details = done["details"]
    assert sum(details["summary"].values()) == 0 and sum(details["judges_summary"].values()) == 3


def test_a_comparison_through_the_api(staff_api, tiny_version, tiny_model_dir, eager_tasks):
    other = generation_services.register_version("round-1", tiny_model_dir, parent=tiny_version)
    Prompt.objects.create(text="Which is better?", split=Prompt.EVAL)
    job = staff_api.start_compare(tiny_version.pk, other.pk, limit=1, sampling=TINY_SAMPLING)
    done = staff_api.wait(job, timeout=300, poll=0.2)
    assert done["status"] == "succeeded" and done["details"]["total"] == 2
    with pytest.raises(APIError) as refused:
        staff_api.cancel(done)
    assert refused.value.status == 409 and "has already ended (succeeded)" in refused.value.detail


def test_a_training_round_that_cannot_run_fails_with_its_reason(staff_api, tiny_version, eager_tasks):
    from prefloop_client import JobFailed

    job = staff_api.start_training(params={"beta": 0.1})
    # a script that waits on it stops there: returned like any other end, it went on as if the round had trained
    with pytest.raises(JobFailed) as failed:
        staff_api.wait(job, timeout=300, poll=0.2)
    assert failed.value.job["id"] == job["id"] and "label some pairs first" in str(failed.value)
    done = staff_api.wait(job, timeout=300, poll=0.2, check=False)
    assert done["status"] == "failed" and "label some pairs first" in done["error"]
    assert staff_api.get(f"/training/{job['id']}/metrics")["status"] == "failed"


def test_a_second_training_round_on_a_version_already_training_is_a_conflict(staff_api, tiny_version):
    """It answered 400, as a bad setting does, where the API's other "already at work" refusals answer 409."""
    first = training_services.start_training_run(input_version=tiny_version, enqueue=False)
    TrainingRun.objects.filter(pk=first.pk).update(status="running")
    with pytest.raises(APIError) as refused:
        staff_api.start_training(input_version=tiny_version.pk)
    assert refused.value.status == 409
    assert refused.value.detail == "a training round on version 'base' is already queued or running"
    assert list(TrainingRun.objects.values_list("pk", flat=True)) == [first.pk]  # nothing new was made


def test_queued_jobs_are_cancelled_through_their_services(staff_api, tiny_version):
    Prompt.objects.create(text="Say something.", split=Prompt.TRAIN)
    queued = {
        "generation": generation_services.start_generation_job(tiny_version, n_prompts=1, enqueue=False),
        "training": training_services.start_training_run(input_version=tiny_version, enqueue=False),
        "loop": LoopRun.objects.create(judge="judges.rules:length_target"),
    }
    for kind, job in queued.items():
        assert staff_api.job(kind, job.pk)["active"]
        cancelled = staff_api.cancel(kind, job.pk)
        assert cancelled["status"] == "cancelled" and not cancelled["active"], kind
    assert GenerationJob.objects.get().status == TrainingRun.objects.get().status == "cancelled"


def test_bad_settings_are_refused_with_the_services_message(staff_api, tiny_version):
    Prompt.objects.create(text="Say something.", split=Prompt.TRAIN)
    cases = [
        (lambda: staff_api.start_generation(1, sampling={"n": 1}), "at least 2"),
        (lambda: staff_api.start_generation(1, sampling={"colour": 1}), "unknown sampling setting 'colour'"),
        (lambda: staff_api.start_generation(0), "n_prompts"),
        (lambda: staff_api.start_generation(1, version=999), "no model version with id 999"),
        (lambda: staff_api.start_training(params={"beta": -1}), "beta"),
        (lambda: staff_api.start_training(params=[1]), "params"),
        (lambda: staff_api.start_compare(tiny_version.pk, tiny_version.pk), "two different versions"),
        (lambda: staff_api.start_compare(tiny_version.pk, tiny_version.pk, prompt_ids=[]), "prompt_ids"),  # was a job of 0
        (lambda: staff_api.start_loop(1, 4, "no.such:judge"), "no.such"),
        (lambda: staff_api.start_loop(1, 4, "judges.rules:length_target", params={"bogus": 1}), "bogus"),
        # was accepted, and the loop failed in round 1 for the rule a generation job refused up front
        (lambda: staff_api.start_loop(1, 2, "judges.rules:length_target", params={"sampling": {"n": 1}}),
         "samples per prompt must be at least 2 to make a pair (got 1)"),
    ]
    for call, words in cases:
        with pytest.raises(APIError) as refused:
            call()
        assert refused.value.status == 400 and words in refused.value.detail, (words, refused.value.detail)
    assert not (GenerationJob.objects.exists() or TrainingRun.objects.exists() or CompareJob.objects.exists()
                or LoopRun.objects.exists())
    with pytest.raises(APIError) as missing:
        staff_api.job("training", 12345)
    assert missing.value.status == 404


def test_the_api_offers_exactly_the_training_data_choices_the_model_has():
    """The API's schema has to spell the choices out (a Literal); this keeps it from drifting from the model's."""
    import typing

    from api.jobs import TrainingStart

    offered = typing.get_args(TrainingStart.model_fields["data"].annotation)
    assert set(offered) == set(training_services.DATA_CHOICES) == {"all", "new", "replay", "spin"}



def test_job_details_name_each_version_by_id_too(staff_api, tiny_version):
    """The operations that take a version (compare, promote, gate) take its id, and the details named versions only:
    a script listed every version to find the candidate a round made (found by an outside review)."""
    from compare.models import CompareJob
    from generation.models import GenerationJob, ModelVersion
    from training.models import TrainingRun

    child = ModelVersion.objects.create(name="round-1", path="/x", parent=tiny_version)
    run = TrainingRun.objects.create(input_version=tiny_version, reference_version=tiny_version, output_version=child,
                                     status="succeeded")
    details = staff_api.job("training", run.pk)["details"]
    assert (details["input_version_id"], details["output_version_id"]) == (tiny_version.pk, child.pk)
    compare = CompareJob.objects.create(version_a=child, version_b=tiny_version, prompt_ids=[], status="succeeded")
    details = staff_api.job("compare", compare.pk)["details"]
    assert (details["version_a_id"], details["version_b_id"]) == (child.pk, tiny_version.pk)
    generation = GenerationJob.objects.create(version=child, status="succeeded")
    assert staff_api.job("generation", generation.pk)["details"]["version_id"] == child.pk
