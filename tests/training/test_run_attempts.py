"""A training run says only true things across its attempts: a run started again shows no figure of the attempt it
threw away, and names the stage it is in; a measurement that failed is said where the run's end is read; a worker
alive after its run was ended for seeming lost writes nothing over it; the API's progress is the page's."""
import html
import re
from datetime import timedelta

import pytest
from django.utils import timezone

import training.services as ts
from generation.models import Prompt
from jobs import lifecycle
from training.models import TrainingRun

P = {"epochs": 3, "batch_size": 2, "max_length": 64, "max_prompt_length": 32}


class WorkerLost(BaseException):
    """A killed worker: nothing after it runs."""


def _text(client, url):
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", client.get(url).content.decode())))


@pytest.fixture
def base(trainable_base, settings):
    settings.PREFLOOP_ROUND_EVAL_PROMPTS = 2
    for k in range(2):
        Prompt.objects.create(text=f"Eval question {k}: name a colour.", split="eval")
    return trainable_base


def _lose_at_step(monkeypatch, step):
    real, calls = ts.TrainingStep.objects.update_or_create, []

    def on_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            raise WorkerLost
        return real(*args, **kwargs)

    monkeypatch.setattr(ts.TrainingStep.objects, "update_or_create", on_step)
    return real


def test_a_run_started_again_shows_nothing_of_the_attempt_it_threw_away(base, monkeypatch, client, staff):
    run = ts.start_training_run(input_version=base, params=P, enqueue=False)
    real = _lose_at_step(monkeypatch, 4)
    with pytest.raises(WorkerLost):
        ts.run_training(run.pk)
    assert TrainingRun.objects.get(pk=run.pk).metrics  # the lost attempt's last step's figures
    monkeypatch.setattr(ts.TrainingStep.objects, "update_or_create", real)

    def unreadable(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ts, "data_for", unreadable)  # the new attempt fails reading its pairs
    run = ts.run_training(run.pk)
    assert run.status == "failed" and run.steps.count() == 0
    assert run.metrics == {} and run.pairs == 0
    # its stage is the new attempt's, not the lost one's ("failed in: training")
    assert run.stage == "failed in: reading the pairs it trains on"
    client.force_login(staff)
    assert "last optimiser step" not in _text(client, f"/training/runs/{run.pk}/")


def test_a_measurement_that_failed_is_said_where_the_run_ends(base, monkeypatch, client, staff):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(ts, "evaluate_round", out_of_memory)
    run = ts.run_training(ts.start_training_run(input_version=base, params=P, enqueue=False).pk)
    assert run.status == "succeeded" and run.output_version is not None
    assert run.stage == "trained; measuring 'round-1' failed: RuntimeError: CUDA out of memory"
    client.force_login(staff)
    assert "measuring 'round-1' failed" in _text(client, f"/training/runs/{run.pk}/")
    (api,) = client.get("/api/v1/jobs?kind=training").json()
    assert "measuring 'round-1' failed" in api["stage"]


def test_a_worker_alive_after_its_run_was_ended_for_silence_writes_nothing_over_it(base, monkeypatch):
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 0.0)
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    run = ts.start_training_run(input_version=base, params=P, enqueue=False)
    real, calls = ts.TrainingStep.objects.update_or_create, []

    def stuck_then_cancelled(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the worker seemed stuck for 10 minutes: a person presses Cancel (it ends at once)
            old = timezone.now() - timedelta(minutes=10)
            TrainingRun.objects.filter(pk=run.pk).update(updated=old, claimed=old, alive_at=old)
            lifecycle.cancel(TrainingRun.objects.get(pk=run.pk))
        return real(*args, **kwargs)

    monkeypatch.setattr(ts.TrainingStep.objects, "update_or_create", stuck_then_cancelled)
    run = ts.run_training(run.pk)
    assert run.status == "cancelled"
    assert "without a word from its worker" in run.stage, run.stage  # not its next step's "training"


def test_the_apis_progress_is_the_pages_while_the_run_measures(base, monkeypatch, client, staff):
    seen = {}
    real = ts.evaluate_round

    def look(*args, **kwargs):
        client.force_login(staff)
        (job,) = client.get("/api/v1/jobs?kind=training").json()
        seen.update(api=job["progress"], active=job["active"], page=TrainingRun.objects.get().percent)
        return real(*args, **kwargs)

    monkeypatch.setattr(ts, "evaluate_round", look)
    ts.run_training(ts.start_training_run(input_version=base, params=P, enqueue=False).pk)
    # was 1.0 with "active": true; the measuring now has the bar's last tenth
    assert seen["active"] and seen["page"] == 90 and seen["api"] == 0.9


def test_a_cancelled_runs_own_page_says_what_it_kept(base, monkeypatch, client, staff):
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    run = ts.start_training_run(input_version=base, params=P, enqueue=False)
    real = ts.evaluate_round

    def cancel_then_measure(*args, **kwargs):
        lifecycle.cancel(TrainingRun.objects.get(pk=run.pk))
        return real(*args, **kwargs)

    monkeypatch.setattr(ts, "evaluate_round", cancel_then_measure)
    run = ts.run_training(run.pk)
    assert run.status == "cancelled" and "figures partial" in run.stage
    client.force_login(staff)
    assert run.stage in _text(client, f"/training/runs/{run.pk}/")  # the runs list said it; the run's page did not


def test_measuring_a_trained_version_says_which_part_it_is_in(base, monkeypatch):
    """Measuring sat at 99% under "measuring 'round-1'" for as long as it sampled and scored (a minute or more with
    the real model), saying nothing of how far it was."""
    seen, bar, report = [], {}, lifecycle.Tracker.report

    def watched(self, **kwargs):
        if kwargs.get("stage"):
            seen.append(kwargs["stage"])
            bar[kwargs["stage"]] = kwargs.get("progress")
        return report(self, **kwargs)

    monkeypatch.setattr(lifecycle.Tracker, "report", watched)
    run = ts.run_training(ts.start_training_run(input_version=base, params=P, enqueue=False).pk)
    assert run.status == "succeeded" and run.progress == 1.0
    measuring = [s for s in seen if s.startswith("measuring 'round-1'")]
    assert measuring == ["measuring 'round-1'", "measuring 'round-1': answering eval prompts: 0 of 2",
                         "measuring 'round-1': answering eval prompts: 2 of 2",
                         "measuring 'round-1': KL to 'tiny-base' on 2 answers"], measuring
    # the bar moves through the measuring too: the last training step leaves room for it, each part moves it on
    trained = bar["saving the trained checkpoint"]  # the last step's
    moved = [bar[s] for s in measuring]
    assert trained == moved[0] == moved[1] < moved[2] <= moved[3] < 1, (trained, moved)


def test_an_eval_prompt_added_while_a_run_trains_does_not_move_its_bar_back(base, monkeypatch):
    """The bar's split between training and measuring was read twice: a run with nothing to measure trained to 100%,
    and an eval prompt imported meanwhile put it back to 90% as it measured."""
    Prompt.objects.filter(split="eval").delete()  # nothing to measure: the training has the whole bar
    bar, report = [], lifecycle.Tracker.report

    def watched(self, **kwargs):
        if kwargs.get("progress") is not None:
            bar.append(kwargs["progress"])
            if len(bar) == 2:  # while it trains, someone imports an eval prompt
                Prompt.objects.create(text="Eval question: name a fruit.", split="eval")
        return report(self, **kwargs)

    monkeypatch.setattr(lifecycle.Tracker, "report", watched)
    run = ts.run_training(ts.start_training_run(input_version=base, params=P, enqueue=False).pk)
    assert run.status == "succeeded" and run.progress == 1.0
    assert bar == sorted(bar), bar  # never back


def test_a_loss_without_a_label_probability_trains_slight_labels_as_sure_and_says_so(base):
    """ipo, hinge, kto and rrhf read no label probability: a round with a 'slight' label (0.75) trains it as sure,
    and the run's log says how many; the trainer refuses soft labels for them, so the run failed before."""
    from annotate.models import Label

    Label.objects.filter(pk=Label.objects.order_by("pk").first().pk).update(strength="slight", preference_prob=0.75)
    run = ts.run_training(ts.start_training_run(input_version=base, params=dict(P, loss_type="ipo"),
                                                enqueue=False).pk)
    assert run.status == "succeeded", run.error
    assert "1 soft or 'slight' labels train as sure ones, 0 coin-flip pairs (probability 0.5) are left out" in run.log


def test_coin_flips_are_left_out_for_a_loss_without_a_label_probability():
    from training.dpo.config import DPOConfig
    from training.dpo.data import PreferencePair

    pairs = [PreferencePair("q", "a", "b", preference_prob=p) for p in (None, 1.0, 0.75, 0.5)]
    kept, rows, as_sure, flips = ts._labels_for_loss(pairs, ["r0", "r1", "r2", "r3"], DPOConfig(loss_type="hinge"))
    assert [p.preference_prob for p in kept] == [None, None, None] and rows == ["r0", "r1", "r2"]
    assert (as_sure, flips) == (1, 1)
    same = ts._labels_for_loss(pairs, ["r0", "r1", "r2", "r3"], DPOConfig())  # sigmoid reads them all
    assert same == (pairs, ["r0", "r1", "r2", "r3"], 0, 0)
