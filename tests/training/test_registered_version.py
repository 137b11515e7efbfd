"""A round's version and its run's claim on it are one write: a version registered alone (the worker lost, or a
write failing just after registering) belonged to no run, so no gate held it back and the Train page offered to
make it current with one click, with no reason asked."""
import pytest
from django.db import OperationalError

from generation.models import ModelVersion
from training import promotion
from training import services as train
from training.models import TrainingRun

FAST = {"epochs": 1, "batch_size": 2, "max_length": 64, "max_prompt_length": 32}


@pytest.mark.django_db
def test_a_version_whose_run_failed_just_after_registering_it_still_awaits_the_gate(
        trainable_base, monkeypatch, client, staff):
    base = trainable_base

    def database_hiccup(version):  # right after the version's row was written
        raise OperationalError("database is locked")

    monkeypatch.setattr(train, "update_mean_length", database_hiccup)
    run = train.run_training(train.start_training_run(input_version=base, params=FAST, enqueue=False).pk)
    assert run.status == "failed" and "database is locked" in run.error
    version = ModelVersion.objects.get(round=1)
    assert run.output_version == version and run.decision == TrainingRun.Decision.CANDIDATE
    with pytest.raises(promotion.PromotionError, match="awaiting the promotion gate"):
        promotion.rollback(version, user=staff)
    client.force_login(staff)
    client.post(f"/training/versions/{version.pk}/rollback/", {"reason": ""})
    assert ModelVersion.objects.get(is_current=True) == base


@pytest.mark.django_db
def test_ctrl_c_before_the_checkpoint_is_registered_leaves_no_temporary_folder(
        trainable_base, settings, monkeypatch):
    """The written checkpoint (models/.tmp-run-N-...) was removed only for an Exception: a Ctrl-C of train_round or
    run_loop (KeyboardInterrupt) left it on disk, a whole checkpoint when it landed while saving, until the next run."""
    base = trainable_base

    def ctrl_c(*args, **kwargs):  # as the checkpoint is written, before it becomes a version
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "store_reference_logps", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train.run_training(train.start_training_run(input_version=base, params=FAST, enqueue=False).pk)
    assert [p.name for p in settings.MODELS_DIR.iterdir()] == [] and ModelVersion.objects.count() == 1


@pytest.mark.django_db
def test_ctrl_c_while_the_version_is_measured_names_the_candidate_it_leaves(
        trainable_base, monkeypatch):
    """A cancel from the page while a run measured its version said which candidate stayed; a Ctrl-C of train_round
    at that point said only "stopped: Ctrl-C at the command line", with a registered version left behind unnamed."""
    import io
    import json

    from django.core.management import CommandError, call_command

    def ctrl_c(*args, **kwargs):  # while the registered version's answers are sampled and measured
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "evaluate_round", ctrl_c)
    with pytest.raises(CommandError, match=r"interrupted: training run \d+ is cancelled \(stopped: Ctrl-C while "
                                           r"measuring 'round-1', which stays a candidate, its figures partial\)"):
        call_command("train_round", params=json.dumps(FAST), stdout=io.StringIO(), stderr=io.StringIO())
    run = TrainingRun.objects.get()
    assert run.status == "cancelled" and "'round-1', which stays a candidate" in run.stage
    assert run.output_version.name == "round-1" and run.decision == TrainingRun.Decision.CANDIDATE
