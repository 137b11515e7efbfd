"""Every kind of job with a real Celery worker: its progress moves inside a single sampling call, Cancel stops it
within 5 s storing nothing of the unit in flight (and the job says what it kept), and a worker killed mid-job
leaves it resumed or failed, never "running".

The tests that watch a job while it samples use the slow tiny model (`slow_version`), greedily: it never meets its
end-of-text token, so every sample runs to max_new_tokens and a job lasts long enough to watch (several seconds on two
quiet cores) however fast the machine is. The tiny model samples all of it in under a second.
"""
from __future__ import annotations

import pytest

from tests.labelled import labelled_pairs

from .conftest import wait_for
from .test_worker_killed import TRAIN_PARAMS, _model_folders, _wait_out_redelivery

pytestmark = pytest.mark.slow

CANCEL_WITHIN_S = 5  # the promise made to the person who presses Cancel
LONG = {"n": 2, "temperature": 0, "max_new_tokens": 400, "batch_size": 32}
# A single sampling call long enough to watch on a fast machine too: 16 prompts (one chunk) x 8 samples x 400 tokens.
WIDE = dict(LONG, n=8)
LONG_ONE = {k: v for k, v in LONG.items() if k != "n"}  # a comparison samples one answer per prompt and version


def _prompts(count: int, split: str = "train", tag: str = "") -> list:
    from generation.models import Prompt

    return [Prompt.objects.create(text=f"Say something about the number {k} ({split}).", split=split, tag=tag)
            for k in range(count)]


def _watch_progress(job, worker, *, moves: int = 2) -> list[float]:
    """Wait until the job's bar has been written `moves` times with different values while none of its units is
    done (all its work is one sampling call), and return the values seen."""
    seen: list[float] = []

    def moved():
        job.refresh_from_db()
        assert job.status in ("queued", "running"), f"the job ended before it could be watched: {job.status} {job.error}"
        if job.status == "running" and job.done == 0 and job.progress > 0 and (not seen or job.progress != seen[-1]):
            seen.append(job.progress)
        return len(seen) >= moves
    wait_for(moved, 240, f"the bar of {job} to move {moves} times inside one sampling call", worker, interval=0.05)
    return seen


def _cancel_and_wait(job, cancel, worker) -> None:
    cancel(job)
    job.refresh_from_db()
    assert job.status == "cancelling", "a running job stops in its worker; until then the page says it is stopping"

    def stopped():
        job.refresh_from_db()
        return job.status == "cancelled"
    wait_for(stopped, CANCEL_WITHIN_S, f"{job} to stop after Cancel", worker, interval=0.05)


def test_a_single_chunk_generation_job_shows_progress_and_cancels_storing_nothing(worker, broker, slow_version):
    from annotate.models import Pair
    from generation import services
    from generation.backends.base import SamplingConfig
    from generation.models import Response
    from generation.tasks import run_generation_job

    _prompts(16)
    # greedy, so every answer runs to its token limit; samples only (greedy samples make no pair: refused otherwise)
    job = services.start_generation_job(slow_version, n_prompts=16, config=SamplingConfig(**WIDE), enqueue=False,
                                        pairing="none")
    assert len(services.job_chunks(job)) == 1
    worker.start()
    broker.send(run_generation_job, job.pk)
    seen = _watch_progress(job, worker)
    assert all(0 < value < 1 for value in seen) and job.stage.startswith("sampling prompts 1–16")
    _cancel_and_wait(job, services.cancel_generation_job, worker)
    assert Response.objects.filter(job=job).count() == 0 and Pair.objects.filter(job=job).count() == 0
    assert job.stage == "cancelled after 0 of 16 prompts: 0 pairs kept"
    assert "cancelled after 0 of 16 prompts" in job.log and job.finished is not None


def test_a_training_run_cancels_between_steps_keeping_no_checkpoint(worker, broker, tiny_version, annotator,
                                                                    worker_data_dir):
    from generation.models import ModelVersion
    from training import services
    from training.models import TrainingRun
    from training.tasks import run_training

    labelled_pairs(tiny_version, annotator, 8)
    run = services.start_training_run(input_version=tiny_version, params=TRAIN_PARAMS, enqueue=False)
    worker.start()
    broker.send(run_training, run.pk)

    def stepping():
        run.refresh_from_db()
        assert run.is_active, f"the run ended before the cancel: {run.status} {run.error}"
        return run.done >= 2 and run.total > run.done and 0 < run.progress < 1
    wait_for(stepping, 240, "the run to take a few steps", worker)
    _cancel_and_wait(run, services.cancel_training_run, worker)
    assert run.stage.startswith("cancelled after ") and run.stage.endswith(f" of {run.total} steps: no checkpoint kept")
    assert list(ModelVersion.objects.values_list("name", flat=True)) == ["tiny-base"]
    assert _model_folders(worker_data_dir / "models") == ([], [])
    assert TrainingRun.objects.get(pk=run.pk).output_version is None


def _two_versions(tiny_version):
    from generation.models import ModelVersion

    child = ModelVersion.objects.create(name="tiny-child", path=tiny_version.path, parent=tiny_version, round=1)
    return child, tiny_version


def test_a_comparison_set_cancels_inside_sampling_and_makes_no_comparisons(worker, broker, slow_version):
    from compare import services
    from compare.models import Comparison
    from compare.tasks import answer_compare_job
    from generation.models import Response

    a, b = _two_versions(slow_version)
    _prompts(16, "eval")
    # One answer per prompt and version: 1500 tokens each makes one sampling call of several seconds.
    job = services.start_compare_job(a, b, limit=16, sampling=dict(LONG_ONE, max_new_tokens=1500), enqueue=False)
    worker.start()
    broker.send(answer_compare_job, job.pk)
    _watch_progress(job, worker)
    _cancel_and_wait(job, services.cancel_compare_job, worker)
    assert Comparison.objects.filter(job=job).count() == 0
    assert Response.objects.count() == 0, "the answers of the batch in flight are not stored"
    assert job.stage == "cancelled after 0 of 32 answers: 0 answers kept for reuse, no comparisons made"


def _loop_run(version, *, max_new_tokens: int, epochs: int = 1):
    from loop import services

    _prompts(8, "train", "t")
    _prompts(2, "eval", "t")
    # nearly greedy (greedy samples make no pair, and a loop with a pairing refuses temperature 0)
    params = {"pairing": "random", "sampling": {"n": 8, "temperature": 0.01, "max_new_tokens": max_new_tokens},
              "training": dict(TRAIN_PARAMS, epochs=epochs)}
    return services.start_loop_run(rounds=1, pairs=8, judge="judges.rules:length_target", tag="t", eval_limit=2,
                                   params=params, enqueue=False)


def test_a_loop_run_cancels_inside_its_generation_step(worker, broker, slow_version):
    from annotate.models import Pair
    from generation.models import GenerationJob, Response
    from loop import services
    from loop.tasks import run_loop_task

    run = _loop_run(slow_version, max_new_tokens=400)
    worker.start()
    broker.send(run_loop_task, run.pk)

    def generating():
        run.refresh_from_db()
        assert run.is_active, f"the run ended before the cancel: {run.status} {run.error}"
        return run.stage.startswith("round 1: generate · sampling") and run.progress > 0
    wait_for(generating, 240, "the loop run to sample its first round", worker, interval=0.05)
    _cancel_and_wait(run, services.cancel_loop_run, worker)
    job = GenerationJob.objects.get()
    assert job.status == "cancelled" and job.part_of == run.key
    assert Response.objects.count() == 0 and Pair.objects.count() == 0
    assert run.stage.startswith("cancelled after 0 of 1 rounds: 0 rounds kept; stopped in round 1: generate")
    assert run.results == []


def _kill_and_wait_for_the_end(job, worker, broker, sent_at: float, timeout: float) -> None:
    """SIGKILL the worker mid-job, start another (after Redis's redelivery delay) and wait until the job ends."""
    worker.kill()
    _wait_out_redelivery(broker, sent_at)
    worker.start()

    def ended():
        job.refresh_from_db()
        return not job.is_active
    wait_for(ended, timeout, f"the killed worker's {job} to be resumed or failed", worker)


def test_a_comparison_set_whose_worker_is_killed_is_resumed_without_duplicates(worker, broker, tiny_version):
    from compare.models import CompareJob, Comparison
    from compare.services import start_compare_job
    from compare.tasks import answer_compare_job
    from generation.models import Response

    a, b = _two_versions(tiny_version)
    _prompts(4, "eval")
    job = start_compare_job(a, b, limit=4, sampling={"temperature": 0, "max_new_tokens": 150, "batch_size": 2},
                            enqueue=False)
    worker.start()
    sent_at = broker.send(answer_compare_job, job.pk)

    def some_answers():
        job.refresh_from_db()
        assert job.status != CompareJob.SUCCEEDED, "the set was answered before the kill: give it more work"
        return job.done >= 2
    wait_for(some_answers, 240, "the first answers of the set", worker, interval=0.05)
    _kill_and_wait_for_the_end(job, worker, broker, sent_at, 300)
    assert job.status == CompareJob.SUCCEEDED, job.error
    assert job.attempts == 2 and "the worker was lost; resuming" in job.log
    assert Comparison.objects.filter(job=job).count() == 4
    assert Response.objects.count() == 8, "answers stored before the kill are reused, none sampled twice"


def test_a_loop_run_whose_worker_is_killed_is_resumed_or_failed_never_left_running(worker, broker, slow_version):
    from generation.models import GenerationJob
    from loop.models import LoopRun
    from loop.tasks import run_loop_task
    from training.models import TrainingRun

    run = _loop_run(slow_version, max_new_tokens=400)
    worker.start()
    sent_at = broker.send(run_loop_task, run.pk)

    def generating():
        run.refresh_from_db()
        assert run.is_active, f"the run ended before the kill: {run.status} {run.error}"
        return run.stage.startswith("round 1: generate · sampling") and run.progress > 0
    wait_for(generating, 240, "the loop run to sample its first round", worker, interval=0.05)
    _kill_and_wait_for_the_end(run, worker, broker, sent_at, 400)
    assert run.status in (LoopRun.SUCCEEDED, LoopRun.FAILED)
    if run.status == LoopRun.SUCCEEDED:
        assert run.attempts == 2 and len(run.results) == 1 and run.done == run.total == 1
    else:
        assert run.error
    # The generation job the lost worker was in was ended, saying why, and the loop's next attempt resumed it (its
    # prompts, not fresh ones); nothing is left running.
    jobs = list(GenerationJob.objects.order_by("pk"))
    assert len(jobs) == 1 and "was lost" in jobs[0].log
    if run.status == LoopRun.SUCCEEDED:
        assert jobs[0].status == "succeeded" and "trying again" in jobs[0].log
    for model in (GenerationJob, TrainingRun, LoopRun):
        assert not model.objects.filter(status__in=["queued", "running", "cancelling"]).exists()
