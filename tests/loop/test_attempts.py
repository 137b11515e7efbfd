"""A loop run's attempts say what happened: a run resumed after a lost worker measures the version its round had
registered instead of training another, its bar starts from the rounds it kept, its stage names the stage it is in
(not the lost attempt's), and a cancel says where it stopped. A lost worker is a BaseException raised at a chosen
point (nothing after it runs), then the service called again, as requeue_interrupted's task would."""
import pytest

import training.services as training_services
from generation.models import ModelVersion
from jobs import lifecycle
from loop import services as loop_services
from loop.models import LoopRun
from loop.services import run_loop, start_loop_run
from training.models import TrainingRun

from .test_run_loop import JUDGE, PARAMS


class WorkerLost(BaseException):
    """A killed worker: nothing after it runs."""


def lose_once(monkeypatch, module, name, before=None):
    real, calls = getattr(module, name), []

    def lost(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            if before:
                before()
            raise WorkerLost
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, lost)


def watch_loop(monkeypatch):
    """(attempt, progress, stage) of every report the loop run's tracker writes."""
    seen, real = [], lifecycle.Tracker.report

    def report(self, **kwargs):
        written = real(self, **kwargs)
        if isinstance(self.job, LoopRun):
            row = LoopRun.objects.values_list("attempts", "progress", "stage").get(pk=self.job.pk)
            seen.append(row)
        return written

    monkeypatch.setattr(lifecycle.Tracker, "report", report)
    return seen


def test_a_round_lost_after_registering_its_version_measures_it_and_trains_no_other(loop_run, monkeypatch):
    """Resumed, the round's training run was ended "failed" and a new one trained round-1-2, leaving round-1 a
    candidate no one measured, offered on the Train page to promote."""
    lose_once(monkeypatch, training_services, "_measure_and_finish")  # right after round-1 was registered
    with pytest.raises(WorkerLost):
        run_loop(loop_run.pk)
    seen = watch_loop(monkeypatch)
    run = run_loop(loop_run.pk)
    assert run.status == "succeeded", run.error
    assert list(ModelVersion.objects.exclude(name="base").values_list("name", flat=True)) == ["round-1"]
    (training,) = TrainingRun.objects.all()
    assert training.status == "succeeded" and "sampled/answers" in training.metrics  # measured on resume
    assert run.results[0]["version"] == "round-1"
    assert "resuming training run" in run.log
    # the resumed attempt's bar starts from the rounds kept (none) and never goes back
    bar = [progress for attempt, progress, _ in seen if attempt == 2]
    assert bar and bar == sorted(bar)


def test_a_resumed_runs_bar_starts_from_its_kept_rounds_and_never_goes_back(loop_run, monkeypatch):
    lose_once(monkeypatch, training_services, "store_reference_logps")  # at the end of training: the bar near 80%
    with pytest.raises(WorkerLost):
        run_loop(loop_run.pk)
    assert LoopRun.objects.get(pk=loop_run.pk).progress > 0.5
    seen = watch_loop(monkeypatch)
    run_loop(loop_run.pk)
    row = LoopRun.objects.get(pk=loop_run.pk)
    assert row.status == "succeeded" and row.attempts == 2
    bar = [progress for attempt, progress, _ in seen if attempt == 2]
    assert bar[0] < 0.5 and bar == sorted(bar)


def test_a_resumed_run_that_fails_at_once_is_not_blamed_on_the_lost_attempts_stage(loop_run, monkeypatch):
    lose_once(monkeypatch, training_services, "store_reference_logps")
    with pytest.raises(WorkerLost):
        run_loop(loop_run.pk)
    assert "train" in LoopRun.objects.get(pk=loop_run.pk).stage

    def no_judge(*args, **kwargs):
        raise loop_services.JudgeError("judge 'judges.rules:longer_text' cannot load")

    monkeypatch.setattr(loop_services, "load_judge", no_judge)
    run = run_loop(loop_run.pk)
    assert run.status == "failed" and run.stage == "failed in: resuming after a lost worker"


def test_a_judge_that_fails_on_its_first_label_is_said_to_fail_labelling(loop_run, monkeypatch):
    import annotate.judging as judging
    from judges import JudgeError

    def down(*args, **kwargs):
        raise JudgeError("judge service unreachable")

    monkeypatch.setattr(judging, "verdict", down)
    monkeypatch.setattr(judging, "cut_rule", lambda a_cut, b_cut, judged: judged)
    run = run_loop(loop_run.pk)
    assert run.status == "failed" and run.stage == "failed in: round 1: label", run.stage


def test_a_run_whose_worker_was_lost_while_it_stopped_ends_saying_so(loop_run, monkeypatch):
    lose_once(monkeypatch, training_services, "store_reference_logps",
              before=lambda: lifecycle.cancel(LoopRun.objects.get(pk=loop_run.pk)))  # Cancel, then the worker dies
    with pytest.raises(WorkerLost):
        run_loop(loop_run.pk)
    assert run_loop(loop_run.pk).status == "cancelled"  # the next worker finds it stopping
    run = LoopRun.objects.get(pk=loop_run.pk)
    assert run.stage.startswith("cancelled: its worker was lost while it stopped (round 1: train")
    assert "its worker was lost while it stopped" in run.log


def test_a_cancel_after_a_round_ended_says_it_stopped_before_the_next(loop_base, settings, monkeypatch):
    """It said "1 round kept; stopped in round 1: evaluate · the promotion gate", of a round that had finished."""
    _, make = loop_base
    make(train=12, eval=3)
    settings.PREFLOOP_ROUND_EVAL_PROMPTS = 3
    run = start_loop_run(rounds=2, pairs=4, judge=JUDGE, tag="t", eval_limit=3, params=PARAMS, enqueue=False,
                         preset="all")
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    real = loop_services.check_gate

    def gate_then_cancel(*args, **kwargs):  # the person presses Cancel while round 1's gate decides
        decided = real(*args, **kwargs)
        lifecycle.cancel(LoopRun.objects.get(pk=run.pk))
        return decided

    monkeypatch.setattr(loop_services, "check_gate", gate_then_cancel)
    run = run_loop(run.pk)
    assert run.status == "cancelled" and len(run.results) == 1
    assert run.stage.startswith("cancelled after 1 of 2 rounds: 1 round kept; stopped before round 2"), run.stage


def _kept_run_then_no_judge(loop_run, monkeypatch) -> None:
    """The loop's worker is lost once round 1's training run has registered its version (the run is kept for the
    round to resume), and the resumed loop fails before it reaches that run: its judge cannot load."""
    lose_once(monkeypatch, training_services, "_measure_and_finish")
    with pytest.raises(WorkerLost):
        run_loop(loop_run.pk)

    def no_judge(*args, **kwargs):
        raise loop_services.JudgeError("judge cannot load")

    monkeypatch.setattr(loop_services, "load_judge", no_judge)


def test_a_registered_run_kept_to_resume_ends_with_a_loop_that_never_reached_it(loop_run, monkeypatch):
    """Kept for the round to resume, and the resumed loop failed before training: the run read "running" for ever,
    its version refused by the gate and by promotion by hand ("still running")."""
    _kept_run_then_no_judge(loop_run, monkeypatch)
    assert run_loop(loop_run.pk).status == "failed"
    (training,) = TrainingRun.objects.all()
    assert training.status == "failed" and f"left when loop run {loop_run.pk} ended failed" in training.error


@pytest.mark.parametrize("how", ["failed", "cancelled"])
def test_a_loop_that_never_reached_its_kept_run_has_ended_it_when_it_says_it_ended(how, loop_run, monkeypatch):
    """The loop run wrote its end ("failed", "cancelled ...") and only then ended the registered training run it had
    kept to resume: a reader of the ended loop (its page, run_loop's caller, the fault test's "nothing is left
    running") found its round's training run still "running"."""
    lose_once(monkeypatch, training_services, "_measure_and_finish")  # round-1 registered, then the worker dies
    with pytest.raises(WorkerLost):
        run_loop(loop_run.pk)

    def no_judge(*args, **kwargs):  # the resumed loop ends before its round reaches the training run
        if how == "cancelled":  # Cancel pressed on the loop's page as it loads its judge
            lifecycle.cancel(LoopRun.objects.get(pk=loop_run.pk))
            raise lifecycle.JobCancelled
        raise loop_services.JudgeError("judge cannot load")

    monkeypatch.setattr(loop_services, "load_judge", no_judge)
    seen = []

    def watching(name):
        real = getattr(lifecycle, name)

        def ending(job, *args, **kwargs):  # the moment the loop's row says it ended: its training run's status
            if isinstance(job, LoopRun):
                seen.append(list(TrainingRun.objects.values_list("status", flat=True)))
            return real(job, *args, **kwargs)

        monkeypatch.setattr(lifecycle, name, ending)

    for name in ("fail", "stopped", "finish"):
        watching(name)
    assert run_loop(loop_run.pk).status == how
    assert seen == [[how]], f"the loop said it ended while its training run was {seen}"
    (training,) = TrainingRun.objects.all()
    assert f"left when loop run {loop_run.pk} ended {how}" in training.error


def test_a_registered_run_is_not_kept_when_the_current_version_changed_meanwhile(loop_run, loop_base, tiny_model_dir,
                                                                                  monkeypatch):
    """Staff made another version current while the loop's worker was down: the round starts from it, so the run
    of the lost attempt is not the round's to resume, and is ended (it read "running" after the loop succeeded)."""
    from generation import services as gen

    lose_once(monkeypatch, training_services, "_measure_and_finish")
    with pytest.raises(WorkerLost):
        run_loop(loop_run.pk)
    base, _ = loop_base
    gen.set_current(gen.register_version("other", tiny_model_dir, parent=base, make_current=False))
    assert run_loop(loop_run.pk).status == "succeeded"
    first, second = TrainingRun.objects.order_by("pk")
    assert first.status == "failed" and "interrupted" in first.error
    assert second.status == "succeeded" and second.input_version.name == "other"


def test_a_round_that_finishes_after_its_run_was_ended_for_silence_keeps_its_figures(loop_run, monkeypatch):
    """A person's cancel ended a silent-looking run while its round finished (its gate decided, perhaps promoted):
    the round's results, written through the tracker, were dropped, and the run showed 0 rounds kept."""
    from datetime import timedelta

    from django.utils import timezone

    real = loop_services.check_gate

    def gate_then_ended(*args, **kwargs):
        decided = real(*args, **kwargs)
        old = timezone.now() - timedelta(minutes=10)
        LoopRun.objects.filter(pk=loop_run.pk).update(updated=old, claimed=old, alive_at=old)
        lifecycle.cancel(LoopRun.objects.get(pk=loop_run.pk))  # ended at once: its worker seemed lost
        return decided

    monkeypatch.setattr(loop_services, "check_gate", gate_then_ended)
    run = run_loop(loop_run.pk)
    assert run.status == "cancelled" and [r["version"] for r in run.results] == ["round-1"]


@pytest.mark.django_db(transaction=True)
def test_a_cancel_landing_as_a_loop_fails_cannot_end_its_kept_run_failed_under_a_cancelled_loop(loop_run,
                                                                                               monkeypatch):
    """The failing loop read "not stopping", ended its kept training run "failed", then failed itself: a Cancel
    pressed between the read and the end made the loop "cancelled; failed while stopping" over a round that said
    "left when loop run N ended failed". Its row is held from the read to its end, so the Cancel comes after."""
    import threading

    from django.db import connection

    _kept_run_then_no_judge(loop_run, monkeypatch)
    real, pressed = lifecycle.end_parts, []

    def pressing_cancel(job, reason, *args, **kwargs):  # as the loop ends the part it kept: Cancel is pressed
        if isinstance(job, LoopRun) and reason.startswith("left when") and not pressed:
            def press():
                try:
                    lifecycle.cancel(LoopRun.objects.get(pk=job.pk))
                finally:
                    connection.close()
            pressed.append(threading.Thread(target=press))
            pressed[0].start()
            pressed[0].join(5.0)  # it lands at once unless the loop's row is held (then this waits 5 s)
        return real(job, reason, *args, **kwargs)

    monkeypatch.setattr(lifecycle, "end_parts", pressing_cancel)
    loop = run_loop(loop_run.pk)
    pressed[0].join(60)
    loop.refresh_from_db()
    (training,) = TrainingRun.objects.all()
    assert f"ended {loop.status}" in training.error and training.status == loop.status, \
        f"the loop ended {loop.status} ({loop.stage}) and its kept run {training.status}: {training.error}"
