"""SIGKILL a real Celery worker in the middle of a training run and of a generation job, start another, and check
what survives: a training run ends (failed, or succeeded after one re-queue) with no half-written model, and the
next run succeeds; a generation job resumes where it stopped, without duplicate responses."""
from __future__ import annotations

import time

import pytest

from tests.labelled import labelled_pairs

from .conftest import VISIBILITY_TIMEOUT, wait_for

pytestmark = pytest.mark.slow


def _model_folders(models_dir) -> tuple[list[str], list[str]]:
    """(visible folders, hidden temporary folders) under the worker's models folder."""
    names = sorted(p.name for p in models_dir.iterdir() if p.is_dir())
    return [n for n in names if not n.startswith(".")], [n for n in names if n.startswith(".")]


def _wait_out_redelivery(broker, sent_at: float) -> None:
    """With Redis, a killed worker's unacked task is restored once the visibility timeout has passed; a worker
    restores such tasks when it starts, so start the next one after that."""
    if broker.is_redis:
        time.sleep(max(0.0, sent_at + VISIBILITY_TIMEOUT + 1 - time.time()))


# Long enough to be killed mid-way (many tiny steps), short enough to run again within the task time limit.
TRAIN_PARAMS = {"epochs": 60, "batch_size": 2, "max_length": 64, "max_prompt_length": 32, "learning_rate": 1e-4,
                "warmup_ratio": 0.0}


def test_worker_killed_mid_training(worker, broker, tiny_version, annotator, worker_data_dir):
    from generation.models import ModelVersion
    from training import services
    from training.models import TrainingRun
    from training.tasks import run_training

    labelled_pairs(tiny_version, annotator, 8)
    models_dir = worker_data_dir / "models"
    run = services.start_training_run(input_version=tiny_version, params=TRAIN_PARAMS, enqueue=False)
    worker.start()
    sent_at = broker.send(run_training, run.pk)

    def training_steps():
        run.refresh_from_db()
        assert run.status in (TrainingRun.QUEUED, TrainingRun.RUNNING), f"run ended before the kill: {run.status} {run.error}"
        return run.status == TrainingRun.RUNNING and run.step >= 3
    wait_for(training_steps, 120, "the run to take a few training steps", worker)
    worker.kill()

    # Right after the kill: no new version, nothing but a temporary folder on disk.
    assert list(ModelVersion.objects.values_list("name", flat=True)) == ["tiny-base"]
    assert _model_folders(models_dir)[0] == []

    _wait_out_redelivery(broker, sent_at)
    worker.start()

    def run_ended():
        run.refresh_from_db()
        return run.status in (TrainingRun.SUCCEEDED, TrainingRun.FAILED)
    wait_for(run_ended, 300, "the killed run to end (failed, or succeeded after one re-queue)", worker)
    if run.status == TrainingRun.SUCCEEDED:
        assert run.attempts == 2, "a succeeded run after a kill must have been started again exactly once"
        assert run.output_version is not None
    else:
        assert run.error, "a failed run says why"
        assert ModelVersion.objects.count() == 1
    # Every version has its whole checkpoint; no temporary folder is left behind.
    for version in ModelVersion.objects.exclude(pk=tiny_version.pk):
        assert {"config.json", "model.safetensors"} <= {p.name for p in models_dir.joinpath(version.name).iterdir()}
    visible, hidden = _model_folders(models_dir)
    assert visible == sorted(v.name for v in ModelVersion.objects.exclude(pk=tiny_version.pk))
    assert hidden == [], f"half-written folders left under models/: {hidden}"

    # The next run on the same worker succeeds.
    second = services.start_training_run(input_version=tiny_version, params=dict(TRAIN_PARAMS, epochs=2),
                                         enqueue=False)
    broker.send(run_training, second.pk)

    def second_done():
        second.refresh_from_db()
        return second.status not in (TrainingRun.QUEUED, TrainingRun.RUNNING)
    wait_for(second_done, 300, "the next run to finish", worker)
    assert second.status == TrainingRun.SUCCEEDED, second.error
    version = second.output_version
    assert (models_dir / version.name / "model.safetensors").exists()
    assert _model_folders(models_dir)[1] == []


def test_worker_killed_mid_generation(worker, broker, tiny_version, monkeypatch):
    from generation import services
    from generation.backends.base import SamplingConfig
    from generation.models import GenerationJob, Prompt, Response
    from generation.tasks import run_generation_job

    config = SamplingConfig(n=2, max_new_tokens=12, temperature=1.0, batch_size=8)
    monkeypatch.setattr(services, "CHUNK_ROWS", 32)  # recorded on the job: the worker samples 16 prompts a chunk
    n_prompts = 4 * services.chunk_prompts(config)  # progress is committed chunk by chunk: kill after the first
    for i in range(n_prompts):
        Prompt.objects.create(text=f"Say something about the number {i}.")
    job = services.start_generation_job(tiny_version, n_prompts=n_prompts, config=config, enqueue=False)
    worker.start()
    sent_at = broker.send(run_generation_job, job.pk)

    def some_done():
        job.refresh_from_db()
        assert job.status != GenerationJob.SUCCEEDED, "the job finished before the kill: give it more prompts"
        return job.done > 0
    wait_for(some_done, 120, "the job to sample its first prompts", worker, interval=0.05)
    worker.kill()
    job.refresh_from_db()
    done_at_kill = job.done
    assert 0 < done_at_kill < job.total

    _wait_out_redelivery(broker, sent_at)
    worker.start()

    def job_ended():
        job.refresh_from_db()
        return job.status not in (GenerationJob.QUEUED, GenerationJob.RUNNING)
    wait_for(job_ended, 300, "the killed job to resume and finish", worker)
    assert job.status == GenerationJob.SUCCEEDED, job.error
    assert job.done == job.total == n_prompts
    # Every prompt answered exactly n times, none twice (the unique (job, prompt, sample_index) holds).
    responses = Response.objects.filter(job=job)
    assert responses.count() == n_prompts * config.n
    assert sorted(set(responses.values_list("sample_index", flat=True))) == list(range(config.n))
    assert responses.values("prompt_id").distinct().count() == n_prompts
    # The pairs made for labelling are not duplicated either.
    from annotate.models import Pair

    pairs = Pair.objects.filter(job=job)
    assert pairs.count() == job.pairs_made
    assert pairs.values("response_a", "response_b").distinct().count() == pairs.count()
