"""A training run whose worker was lost after it registered its version is resumed to measure that version, not to
train again. Its bar, left where the lost attempt was (partway through measuring), went back to the measuring's start
at the new attempt's first report, whose stage named the measuring, with no word of why."""
import pytest

from generation.models import ModelVersion, Prompt
from jobs import lifecycle
from tests.labelled import rows_at_reports, went_back
from training import services as train
from training.models import TrainingRun

PARAMS = {"epochs": 1, "batch_size": 2, "max_length": 64, "max_prompt_length": 32}


@pytest.mark.django_db
def test_a_run_resumed_to_measure_its_version_says_why_its_bar_went_back(trainable_base, settings, monkeypatch):
    base = trainable_base
    for k in range(2):
        Prompt.objects.create(text=f"eval question {k}", split="eval")
    settings.PREFLOOP_ROUND_EVAL_PROMPTS = 2
    run = train.run_training(train.start_training_run(input_version=base, params=PARAMS, enqueue=False).pk)
    assert run.status == "succeeded", run.error
    # lost while measuring, most of the way through
    TrainingRun.objects.filter(pk=run.pk).update(status="running", finished=None, progress=0.97,
                                                 stage="measuring 'round-1': KL to 'tiny-base' on 2 answers")
    rows = rows_at_reports(monkeypatch, TrainingRun)
    again = train.run_training(run.pk)
    assert again.status == "succeeded", again.error
    assert rows[0] == (train.TRAINING_SHARE, "resuming after a lost worker"), rows[0]
    assert not went_back(rows), went_back(rows)


@pytest.mark.django_db
def test_the_stage_says_the_checkpoint_is_saved_and_registered_after_the_last_step(trainable_base, monkeypatch):
    """After its last step a run saves the checkpoint (a model's weights), stores the reference log-probs of every
    pair and registers the version: its stage read "training" through all of it."""
    from training.dpo import trainer

    base = trainable_base
    seen = {}
    real_save, real_store = trainer.save_whole, train.store_reference_logps

    def saving(*args, **kwargs):
        seen["saving"] = TrainingRun.objects.values_list("stage", flat=True).get()
        return real_save(*args, **kwargs)

    def storing(*args, **kwargs):
        seen["storing"] = TrainingRun.objects.values_list("stage", flat=True).get()
        return real_store(*args, **kwargs)

    monkeypatch.setattr(trainer, "save_whole", saving)
    monkeypatch.setattr(train, "store_reference_logps", storing)
    run = train.run_training(train.start_training_run(input_version=base, params=PARAMS, enqueue=False).pk)
    assert run.status == "succeeded", run.error
    assert seen == {"saving": "saving the trained checkpoint", "storing": "registering the new version"}, seen


@pytest.mark.django_db
def test_a_cancel_while_the_run_reads_its_pairs_stops_it_before_a_model_is_loaded(trainable_base, monkeypatch):
    """A run first reads the labelled pairs it trains on (every decided pair so far, for the `all` data: long, in a
    large instance), with no stage: the page showed it running with nothing said, and a Cancel pressed then was heard
    only once the model was loaded and the reference log-probs begun."""
    from training.dpo import trainer

    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    base = trainable_base
    seen, real = [], train.data_for

    def reading(*args, **kwargs):  # a person presses Cancel as the run reads its pairs
        run = TrainingRun.objects.get()
        seen.append(run.stage)
        lifecycle.cancel(run)
        return real(*args, **kwargs)

    def loading(*args, **kwargs):
        seen.append("a model loaded")
        raise AssertionError("a model was loaded after the cancel")

    monkeypatch.setattr(train, "data_for", reading)
    monkeypatch.setattr(trainer, "load_model", loading)
    run = train.run_training(train.start_training_run(input_version=base, params=PARAMS, enqueue=False).pk)
    assert seen == ["reading the pairs it trains on"], seen
    assert run.status == "cancelled", (run.status, run.error)
    assert run.stage.startswith("cancelled before any of its steps (at: reading the pairs it trains on")
    assert ModelVersion.objects.count() == 1
