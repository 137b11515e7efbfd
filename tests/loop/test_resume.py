"""A loop run whose worker was lost starts the round again on its next attempt. The round's generation job is
resumed, not replaced: a new job took fresh prompts, so the round trained on the lost attempt's pairs and the new
ones, and its result counted only the new job's."""
import pytest

import loop.services as loop_services
from generation import services as generation_services
from generation.models import GenerationJob, Response
from loop.models import LoopRun
from loop.services import run_loop


class WorkerLost(BaseException):
    """What the worker's process does to the code running in it when it is killed: nothing after it runs."""


def _lost_once(monkeypatch, module, name):
    real, calls = getattr(module, name), []

    def lost_the_first_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise WorkerLost
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, lost_the_first_time)


def test_a_worker_lost_while_labelling_resumes_the_rounds_finished_generation_job(loop_run, monkeypatch):
    _lost_once(monkeypatch, loop_services, "label_pairs")
    with pytest.raises(WorkerLost):
        run_loop(loop_run.pk)
    assert LoopRun.objects.get(pk=loop_run.pk).status == "running"  # as a killed worker leaves it
    run = run_loop(loop_run.pk)  # the next worker's attempt
    assert run.status == "succeeded", run.error
    job = GenerationJob.objects.get()  # one job: no second one sampled fresh prompts
    assert Response.objects.values("prompt").distinct().filter(job__isnull=False).count() == 4
    assert run.results[0]["pairs"] == job.pairs_made > 0
    assert f"resuming generation job {job.pk}" in run.log


def test_a_worker_lost_while_sampling_resumes_the_same_job_and_prompts(loop_run, monkeypatch):
    _lost_once(monkeypatch, generation_services, "_sample_job")
    with pytest.raises(WorkerLost):
        run_loop(loop_run.pk)
    first = GenerationJob.objects.get()
    prompts = list(first.params["prompt_ids"])
    run = run_loop(loop_run.pk)
    assert run.status == "succeeded", run.error
    job = GenerationJob.objects.get()  # the interrupted job, ended by the loop's next attempt, then resumed
    assert job.pk == first.pk and job.status == "succeeded" and job.params["prompt_ids"] == prompts
    assert "interrupted: the worker of loop run" in job.log and "trying again" in job.log
    assert set(Response.objects.filter(job=job).values_list("prompt_id", flat=True)) == set(prompts)
    assert run.results[0]["pairs"] == job.pairs_made
