"""Cancelling a loop run late in a round: while its training measures the new version, and while the loop evaluates
it. An outside probe saw both take about a minute (the measurement could not be stopped), end with the error
"GenerationCancelled" and say nothing of the version the round's training had registered."""
import pytest

import loop.services as loop_services
import training.services as training_services
from compare.models import Vote
from generation.models import ModelVersion
from jobs import lifecycle
from loop.models import LoopRun
from loop.services import run_loop
from training.models import TrainingRun


def _cancel_first(monkeypatch, module, name, run):
    """A person presses Cancel on the loop run just as the round reaches `module.name`."""
    real = getattr(module, name)
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)  # the tiny model answers faster than the usual check interval

    def pressed(*args, **kwargs):
        lifecycle.cancel(LoopRun.objects.get(pk=run.pk))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, pressed)


def test_a_cancel_while_the_training_measures_the_new_version_stops_it(loop_run, monkeypatch):
    _cancel_first(monkeypatch, training_services, "evaluate_round", loop_run)
    run = run_loop(loop_run.pk)
    assert run.status == "cancelled" and run.error == "" and run.results == []
    assert "stopped in round 1: train · measuring 'round-1'" in run.stage
    assert "it stays a candidate, not promoted" in run.stage and "'round-1'" in run.stage
    training = TrainingRun.objects.get(part_of=run.key)
    assert "measuring 'round-1' stopped on request: the version stays, without these figures" in training.log
    assert "sampled/answers" not in training.metrics  # the measurement stopped before it was stored
    assert ModelVersion.objects.get(name="round-1").is_current is False
    assert not Vote.objects.exists()  # the loop's evaluation never started


def test_a_cancel_while_the_loop_evaluates_ends_cancelled_not_with_an_error(loop_run, monkeypatch):
    _cancel_first(monkeypatch, loop_services, "evaluate", loop_run)
    run = run_loop(loop_run.pk)
    assert run.status == "cancelled" and run.error == "", run.error  # was "GenerationCancelled: ..."
    assert "stopped in round 1: evaluate" in run.stage and "'round-1'" in run.stage
    assert not Vote.objects.exists() and ModelVersion.objects.get(is_current=True).name == "base"


def test_a_cancel_just_after_the_training_registered_its_version_says_the_version_stays(loop_run, monkeypatch):
    """Cancelled between registering the version and measuring it: the training run said "no checkpoint kept" of
    a version it had registered, and the loop's message left the version out."""
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    real = training_services._register

    def register_then_cancel(*args, **kwargs):
        version = real(*args, **kwargs)
        lifecycle.cancel(LoopRun.objects.get(pk=loop_run.pk))  # a person presses Cancel just then
        return version

    monkeypatch.setattr(training_services, "_register", register_then_cancel)
    run = run_loop(loop_run.pk)
    assert run.status == "cancelled"
    training = TrainingRun.objects.get(part_of=run.key)
    assert training.status == "cancelled" and "no checkpoint kept" not in training.stage
    assert "stopped while measuring 'round-1', which stays a candidate" in training.stage
    assert training.output_version.name == "round-1" and not training.output_version.is_current
    assert training.decision == "candidate"  # awaiting the gate: no rollback makes it current without a reason
    assert "it stays a candidate, not promoted" in run.stage and "'round-1'" in run.stage
    from training import promotion

    with pytest.raises(promotion.PromotionError, match="awaiting the promotion gate"):
        promotion.rollback(training.output_version, user=None)



def test_a_cancel_while_the_training_measures_kl_stops_within_its_batches(loop_run, monkeypatch):
    """Held-out scoring and KL took no stop: a cancel there waited for the whole measurement."""
    from training.dpo import trainer

    _cancel_first(monkeypatch, trainer.Scorer, "kl", loop_run)
    run = run_loop(loop_run.pk)
    assert run.status == "cancelled" and run.results == []
    training = TrainingRun.objects.get(part_of=run.key)
    assert "kl_to_reference" not in training.metrics and "sampled/answers" not in training.metrics
    assert "measuring 'round-1' stopped on request" in training.log


def test_a_cancel_while_the_loop_measures_kl_to_base_stops_the_round(loop_run, monkeypatch):
    _cancel_first(monkeypatch, loop_services, "mean_kl", loop_run)
    run = run_loop(loop_run.pk)
    assert run.status == "cancelled" and run.results == [], run.stage
    assert ModelVersion.objects.get(is_current=True).name == "base"


def test_a_cancel_while_the_judge_votes_leaves_the_evaluation_saying_its_votes_are_partial(loop_run, monkeypatch):
    """The evaluation's comparison set read "succeeded" with half its votes, and nothing said so."""
    import compare.evaluation as evaluation
    from compare.models import CompareJob

    _cancel_first(monkeypatch, evaluation, "judge_comparisons", loop_run)
    run = run_loop(loop_run.pk)
    assert run.status == "cancelled"
    job = CompareJob.objects.get()
    assert "the judge stopped after 0 of 3 comparisons: its votes are partial" in job.stage
    assert job.status == "cancelled" and job.part_of == run.key  # ended with the loop, not "succeeded"
    from django.test import Client
    from django.urls import reverse

    from tests.annotate.factories import make_user

    staff = Client()
    staff.force_login(make_user("staff-member", is_staff=True))
    page = staff.get(reverse("compare:job", args=[job.pk])).content.decode()
    assert "its votes are partial" in page  # on the set's own page, not only in the API's stage


def test_a_person_cancelling_the_loops_training_run_while_it_measures_stops_the_round(loop_run, monkeypatch):
    """The training run caught the stopped measurement and ended "succeeded"; the loop then read its round as
    trained, evaluated it and could promote the version the person had cancelled."""
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    real = training_services.evaluate_round

    def cancelled_then_measured(*args, **kwargs):
        lifecycle.cancel(TrainingRun.objects.get(part_of=loop_run.key))  # Cancel on the Train page's row
        return real(*args, **kwargs)

    monkeypatch.setattr(training_services, "evaluate_round", cancelled_then_measured)
    run = run_loop(loop_run.pk)
    training = TrainingRun.objects.get(part_of=run.key)
    assert training.status == "cancelled"
    assert "stopped while measuring 'round-1', which stays a candidate" in training.stage
    assert training.decision == "candidate" and not training.output_version.is_current
    assert run.status == "cancelled" and run.results == []
    assert not Vote.objects.exists() and ModelVersion.objects.get(is_current=True).name == "base"


def test_a_cancel_pressed_just_before_the_gate_decides_promotes_nothing(loop_run, monkeypatch, settings):
    """The last look before the gate went through the half-second throttle: a Cancel pressed as the KL's last batch
    ended let the gate decide after it, promote the round's version and end the run "succeeded"."""
    for name, value in (("MIN_VOTES", 1), ("MIN_WIN_RATE", 0.0), ("MIN_LOWER_BOUND", 0.0), ("MAX_LENGTH_GROWTH", 1e9),
                        ("MAX_CUT_SHARE_GROWTH", 1e9), ("MAX_KL_PER_TOKEN", 1e9), ("MAX_KL_TO_BASE_PER_TOKEN", 1e9)):
        setattr(settings, f"PREFLOOP_GATE_{name}", value)  # a gate the tiny model's round passes
    real = loop_services.mean_kl

    def kl_then_cancel(*args, **kwargs):
        value = real(*args, **kwargs)
        lifecycle.cancel(LoopRun.objects.get(pk=loop_run.pk))  # pressed as the KL's last batch ends
        return value

    monkeypatch.setattr(loop_services, "mean_kl", kl_then_cancel)
    run = run_loop(loop_run.pk)
    assert run.status == "cancelled" and run.results == [], run.stage
    assert "stopped in round 1: evaluate" in run.stage and "it stays a candidate, not promoted" in run.stage
    assert ModelVersion.objects.get(is_current=True).name == "base"
    assert ModelVersion.objects.get(name="round-1").made_by_run.decision == "candidate"



def _cancel_loop_when_its_training_reports(monkeypatch, run, pressed):
    """A person presses Cancel on the loop run when its training run reports (fraction, stage) with `pressed` true:
    on the run's own bar (on_report), after the run wrote its row and before the report is passed up to the loop."""
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    real = loop_services.run_training

    def run_training(pk, **kwargs):
        def on_report(fraction, stage):
            if pressed(fraction, stage):
                lifecycle.cancel(LoopRun.objects.get(pk=run.pk))
        return real(pk, on_report=on_report, **kwargs)

    monkeypatch.setattr(loop_services, "run_training", run_training)


def test_a_loop_cancelled_as_its_training_run_names_a_new_stage_ends_at_that_stage(loop_run, monkeypatch):
    """The loop looked for a cancel before it wrote the stage its training run passed up: a Cancel pressed as the run
    saved its checkpoint (its step taken) ended the loop "stopped in round 1: train · loading the model", a stage the
    run had left, its bar at the train stage's start (35%) under a run at 90%."""
    _cancel_loop_when_its_training_reports(monkeypatch, loop_run,
                                           lambda fraction, stage: stage == "saving the trained checkpoint")
    run = run_loop(loop_run.pk)
    training = TrainingRun.objects.get(part_of=run.key)
    assert training.status == "cancelled" and training.stage == "cancelled after 1 of 1 steps: no checkpoint kept"
    assert run.status == "cancelled" and run.results == []
    assert "; stopped in round 1: train · saving the trained checkpoint;" in run.stage, run.stage
    assert run.progress == pytest.approx(loop_services.run_fraction(0, 1, "train", training.progress, 1))


def test_a_loop_cancelled_after_a_training_step_whose_report_it_held_back_ends_its_bar_at_that_step(
        loop_base, monkeypatch, settings):
    """The loop writes its progress at most once a second, and a step of its training run reported within a second
    of the last one (the same stage, "training") was held back: cancelled then, the loop wrote nothing it held, and
    its bar ended a step behind the run's, which counts the steps it took."""
    from .test_run_loop import JUDGE, PARAMS

    _, make = loop_base
    make(train=8, eval=3)
    settings.PREFLOOP_ROUND_EVAL_PROMPTS = 3
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 3600.0)  # a report of the stage already written is held back
    params = dict(PARAMS, training=dict(PARAMS["training"], batch_size=1))  # a step a pair
    loop_run = loop_services.start_loop_run(rounds=1, pairs=4, judge=JUDGE, tag="t", eval_limit=3, params=params,
                                            enqueue=False, preset="all")
    steps = []

    def pressed(fraction, stage):
        if stage == "training":
            steps.append(fraction)
        return len(steps) == 2  # Cancel pressed as the run reports its second step

    _cancel_loop_when_its_training_reports(monkeypatch, loop_run, pressed)
    run = run_loop(loop_run.pk)
    training = TrainingRun.objects.get(part_of=run.key)
    assert training.status == "cancelled" and training.done == 2, training.stage
    assert run.status == "cancelled" and "; stopped in round 1: train · training;" in run.stage, run.stage
    assert run.progress == pytest.approx(loop_services.run_fraction(0, 1, "train", training.progress, 1))
    assert run.progress == pytest.approx(loop_services.run_fraction(0, 1, "train", steps[-1], 1))


def test_a_loop_cancelled_while_its_generation_job_samples_ends_its_bar_at_what_the_job_kept(loop_run, monkeypatch):
    """A generation job's bar counts the tokens of the chunk it samples, and the job, cancelled, stores nothing of that
    chunk and ends its bar at the prompts it kept: the loop's bar stayed where the chunk's tokens had taken it."""
    from generation.models import GenerationJob, Response

    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 0.0)  # every report written, the chunk's tokens on the bars
    real, told = loop_services.run_generation_job, []

    def run_generation_job(pk, **kwargs):
        def on_report(fraction, stage):
            told.append((fraction, stage))
            if fraction > 0.3 and stage.startswith("sampling"):  # Cancel pressed on the loop's page partway in
                lifecycle.cancel(LoopRun.objects.get(pk=loop_run.pk))
        return real(pk, on_report=on_report, **kwargs)

    monkeypatch.setattr(loop_services, "run_generation_job", run_generation_job)
    run = run_loop(loop_run.pk)
    job = GenerationJob.objects.get(part_of=run.key)
    assert told[-1][0] > 0.3 and not Response.objects.filter(prompt__split="train").exists()
    assert job.status == "cancelled" and job.stage == "cancelled after 0 of 4 prompts: 0 pairs kept", job.stage
    assert run.status == "cancelled" and f"; stopped in round 1: generate · {told[-1][1]};" in run.stage, run.stage
    assert (run.progress, job.progress) == (0.0, 0.0)


def test_a_loop_cancelled_at_a_stage_that_just_fills_the_room_keeps_the_candidate_whole(loop_run, monkeypatch):
    """Where a run stopped is shortened to the room the stage leaves before the candidate its round registered, but
    that room counted none of the tail after it ("; the samples, pairs and labels it stored stay"), which
    lifecycle.fit cuts at a word within the field: a stage that filled the room, or came within 2 characters of it,
    cut the candidate's last word with the tail ("it stays a candidate, not…")."""
    from generation.models import ModelVersion

    # "in round 1: train · measuring 'round-1': KL to 'base-v2' on 3 answers", 69 characters: the room was 70
    ModelVersion.objects.filter(name="base").update(name="base-v2")
    _cancel_loop_when_its_training_reports(monkeypatch, loop_run,
                                           lambda fraction, stage: stage.startswith("measuring 'round-1': KL to"))
    run = run_loop(loop_run.pk)
    assert run.status == "cancelled"
    assert "stopped in round 1: train · measuring 'round-1'" in run.stage, run.stage
    assert "(its training had registered 'round-1': it stays a candidate, not promoted)" in run.stage, run.stage
