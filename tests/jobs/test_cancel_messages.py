"""What a cancelled training run says: train_round's error named no reason ("run 1 cancelled: "), and a run cancelled
before its first step read "cancelled after 0 of 0 steps"."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from jobs import lifecycle
from training import services as train
from training.dpo import trainer
from training.models import TrainingRun, TrainingStep

pytestmark = pytest.mark.django_db
PARAMS = {"epochs": 1, "batch_size": 1, "max_length": 64, "max_prompt_length": 32}


def test_train_round_cancelled_from_its_page_says_where_it_stopped(trainable_base, monkeypatch):
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    from training.management.commands import train_round

    real = train_round.run_training

    def run(pk, *, progress=None, **kwargs):
        def report(step, total, metrics):
            if step == 1:  # a person presses Cancel on the run's page after its first step
                lifecycle.cancel(TrainingRun.objects.get(pk=pk))
        return real(pk, progress=report, **kwargs)

    monkeypatch.setattr(train_round, "run_training", run)
    with pytest.raises(CommandError) as stopped:
        call_command("train_round", params=json.dumps(PARAMS), stdout=io.StringIO(), stderr=io.StringIO())
    run_ = TrainingRun.objects.get()
    assert run_.status == "cancelled"
    assert str(stopped.value) == f"train_round: run {run_.pk} cancelled: cancelled after 1 of 4 steps: no checkpoint kept"


def test_a_run_cancelled_before_its_first_step_says_where_not_0_of_0(trainable_base, monkeypatch):
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    run = train.start_training_run(input_version=trainable_base, params=PARAMS, enqueue=False)
    real = trainer.train_dpo

    def cancel_then_train(*args, **kwargs):
        lifecycle.cancel(TrainingRun.objects.get(pk=run.pk))  # pressed while the model loads
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_dpo", cancel_then_train)
    run = train.run_training(run.pk)
    assert run.status == "cancelled"
    assert run.stage.startswith("cancelled before any of its steps (at: ") and "0 of 0" not in run.stage, run.stage
    assert run.stage.endswith(": no checkpoint kept")


def test_a_run_cancelled_between_steps_has_removed_its_checkpoint_when_it_says_none_was_kept(trainable_base,
                                                                                            monkeypatch):
    """The run said "cancelled ...: no checkpoint kept" and only then removed its unregistered checkpoint folder: a
    reader of the ended run (its page, a script freeing the disk, the fault test's check) found the folder there."""
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    run = train.start_training_run(input_version=trainable_base, params=PARAMS, enqueue=False)
    stopped, seen = lifecycle.stopped, []

    def saying_stopped(job, kept):  # the moment the run's row says "cancelled": what is on disk
        seen.append(sorted(p.name for p in Path(settings.MODELS_DIR).glob(f".tmp-run-{run.pk}-*")))
        return stopped(job, kept)

    def report(step, total, metrics):
        if step == 1:  # Cancel pressed on the run's page after its first step
            lifecycle.cancel(TrainingRun.objects.get(pk=run.pk))

    monkeypatch.setattr(lifecycle, "stopped", saying_stopped)
    run = train.run_training(run.pk, progress=report)
    assert run.status == "cancelled" and run.stage.endswith(": no checkpoint kept"), run.stage
    assert seen == [[]], f"the run said no checkpoint was kept while {seen} was on disk"


def test_a_run_cancelled_after_a_step_whose_report_was_held_back_counts_that_step(trainable_base, monkeypatch):
    """Progress is written at most once a second, so a step taken within a second of the last write was not written:
    a run stopped after its step 2 said "cancelled after 1 of 4 steps" (and its bar stood at a quarter) with two steps
    on its dashboard."""
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 3600.0)  # every step's report after the first is held back
    run = train.start_training_run(input_version=trainable_base, params=PARAMS, enqueue=False)

    def report(step, total, metrics):
        if step == 2:  # Cancel pressed on the run's page after its second step
            lifecycle.cancel(TrainingRun.objects.get(pk=run.pk))

    run = train.run_training(run.pk, progress=report)
    assert run.status == "cancelled" and TrainingStep.objects.filter(run=run).count() == 2
    assert run.stage == "cancelled after 2 of 4 steps: no checkpoint kept", run.stage
    assert (run.done, run.progress) == (2, 0.5)


def test_a_run_that_fails_after_a_step_whose_report_was_held_back_counts_that_step(trainable_base, monkeypatch):
    """The same for a run that fails (diverges, say) after its step 2: its count and bar stood at step 1."""
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 3600.0)
    run = train.start_training_run(input_version=trainable_base, params=PARAMS, enqueue=False)

    def report(step, total, metrics):
        if step == 2:
            raise RuntimeError("the loss is nan at step 3")

    run = train.run_training(run.pk, progress=report)
    assert run.status == "failed" and TrainingStep.objects.filter(run=run).count() == 2
    assert (run.done, run.progress) == (2, 0.5), run.error
