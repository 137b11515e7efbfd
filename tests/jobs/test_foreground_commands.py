"""A job a command runs in its own process (generate_pairs, train_round, compare_versions without --queue) is that
process's: a worker starting meanwhile (`make run`'s, a restarted one) took it for a job a lost worker left running
and sent it to the queue again, so two processes sampled, trained or answered the same job side by side (two versions
registered from one run). run_loop's and evaluate's runs were already the command's own; these three were not.

Each test runs the command for real on the tiny model; while its job is running, a worker starts
(lifecycle.requeue_interrupted, as the worker's start signal calls it) with a queue that records what it is sent.
"""
from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from compare.models import CompareJob
from generation import services as gen
from generation.models import GenerationJob, ModelVersion, Prompt
from jobs import lifecycle
from training import services as train
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def worker_starts(monkeypatch):
    """wrap(module, name, progress_at): the module's run function, wrapped so that a worker starts at the first
    progress report of the real run (its job running by then). Returns what the worker sent to the queue, and what
    requeue_interrupted said."""
    sent, said = [], []

    class Queue:
        @staticmethod
        def apply_async(args):
            sent.append(args)

    monkeypatch.setattr(lifecycle, "task_named", lambda name: Queue())

    def wrap(module, name: str, progress_at: int = 1):
        real = getattr(module, name)

        def run(pk, *, progress=None, **kwargs):
            def report(*args):
                if not said:
                    said.append(lifecycle.requeue_interrupted())
                if progress is not None:
                    progress(*args)
            return real(pk, progress=report, **kwargs)

        monkeypatch.setattr(module, name, run)

    return wrap, sent, said


def test_generate_pairs_job_is_not_resumed_by_a_worker_starting_beside_it(tiny_model_dir, worker_starts):
    wrap, sent, said = worker_starts
    from generation.management.commands import generate_pairs

    for k in range(2):
        Prompt.objects.create(text=f"Question {k}: name a bird.", split="train")
    gen.register_version("base", tiny_model_dir)
    wrap(generate_pairs, "run_generation_job")
    call_command("generate_pairs", prompts=2, samples=2, max_new_tokens=4, stdout=io.StringIO(),
                 stderr=io.StringIO())
    job = GenerationJob.objects.get()
    assert said == [{}] and sent == []
    assert job.status == "succeeded" and job.attempts == 1 and job.part_of == "foreground"


def test_train_round_run_is_not_resumed_by_a_worker_starting_beside_it(trainable_base, worker_starts):
    wrap, sent, said = worker_starts
    from training.management.commands import train_round

    wrap(train_round, "run_training")
    params = {"epochs": 1, "batch_size": 2, "max_length": 64, "max_prompt_length": 32}
    call_command("train_round", params=json.dumps(params), stdout=io.StringIO(), stderr=io.StringIO())
    run = TrainingRun.objects.get()
    assert said == [{}] and sent == []
    assert run.status == "succeeded" and run.attempts == 1 and run.part_of == "foreground"
    assert ModelVersion.objects.filter(parent=trainable_base).count() == 1


def test_compare_versions_set_is_not_resumed_by_a_worker_starting_beside_it(tiny_model_dir, worker_starts):
    wrap, sent, said = worker_starts
    from compare import services as compare

    base = ModelVersion.objects.create(name="base", path=str(tiny_model_dir))
    ModelVersion.objects.create(name="round-1", path=str(tiny_model_dir), parent=base, round=1, is_current=True)
    for k in range(2):
        Prompt.objects.create(text=f"Question {k}: name a fish.", split="eval")
    wrap(compare, "run_compare_job")
    call_command("compare_versions", "round-1", "base", "--max-new-tokens", "4", stdout=io.StringIO(),
                 stderr=io.StringIO())
    job = CompareJob.objects.get()
    assert said == [{}] and sent == []
    assert job.status == "succeeded" and job.attempts == 1 and job.part_of == "foreground"


def test_a_queued_job_left_running_by_a_lost_worker_is_still_resumed(db):
    """The other side: what a worker ran (part_of "") is still sent again when the worker was lost."""
    base = ModelVersion.objects.create(name="base", path="/nowhere/base", is_current=True)
    run = TrainingRun.objects.create(input_version=base, reference_version=base, status="running")
    sent = []

    class Queue:
        @staticmethod
        def apply_async(args):
            sent.append(args)

    import unittest.mock

    with unittest.mock.patch.object(lifecycle, "task_named", lambda name: Queue()):
        assert lifecycle.requeue_interrupted() == {"TrainingRun": [run.pk]}
    assert sent == [(run.pk,)]
    assert train.TrainingRun.objects.get(pk=run.pk).part_of == ""


def test_a_job_inside_a_commands_run_left_stopping_is_left_to_that_command(db, worker_starts):
    """A round's job being stopped inside run_loop's run (Cancel on it in the admin) was ended "worker lost while
    it stopped" by any worker starting meanwhile, while the command still ran it. Inside a worker's run it still is
    (that worker is the one lost)."""
    from loop.models import LoopRun

    base = ModelVersion.objects.create(name="base", path="/nowhere/base", is_current=True)
    ends = {}
    for owner in ("foreground", ""):
        run = LoopRun.objects.create(rounds=1, pairs=1, judge="judges.rules:length_target", part_of=owner,
                                     status="running")
        ends[owner] = GenerationJob.objects.create(version=base, part_of=run.key, status="cancelling")
    _, sent, _ = worker_starts
    lifecycle.requeue_interrupted()
    assert sent == [(LoopRun.objects.get(part_of="").pk,)]  # the worker's run is resumed
    assert GenerationJob.objects.get(pk=ends["foreground"].pk).status == "cancelling"
    assert GenerationJob.objects.get(pk=ends[""].pk).status == "cancelled"
