"""A loop run resumed after its worker was lost, and run by the run_loop command: the round it was in is trained once
and reported whole, a command's run is never a worker's to resume, and what a run is started with is not dropped or
left unreachable without a word."""
import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

import loop.services as loop_services
from annotate.models import Label
from generation.models import ModelVersion, Prompt, VersionChange
from jobs import lifecycle
from loop.models import LoopRun
from loop.services import LoopError, run_loop, start_loop_run
from training.models import TrainingRun

from .test_resume import WorkerLost, _lost_once
from .test_run_loop import JUDGE, PARAMS, _open_gate


def test_a_worker_lost_between_the_gate_and_the_rounds_result_trains_the_round_once(loop_run, monkeypatch, settings):
    """The gate had promoted round-1 and the result was not stored: the next attempt started from round-1, trained a
    second version from it, and round-1 was in no result."""
    _open_gate(settings)
    # started_from is called after check_gate decided, before the round's result is stored
    _lost_once(monkeypatch, loop_services, "started_from")
    with pytest.raises(WorkerLost):
        run_loop(loop_run.pk)
    # nothing of the decision stayed without the result: base is current, the version awaits the gate
    assert ModelVersion.objects.get(is_current=True).name == "base"
    assert TrainingRun.objects.get().decision == TrainingRun.Decision.CANDIDATE
    assert LoopRun.objects.get(pk=loop_run.pk).results == []

    run = run_loop(loop_run.pk)  # the next worker's attempt
    assert run.status == "succeeded", run.error
    training = TrainingRun.objects.get()  # one version trained for the round
    assert training.output_version.name == "round-1" and training.decision == TrainingRun.Decision.PROMOTED
    assert [r["version"] for r in run.results] == ["round-1"]
    assert run.results[0]["gate"]["decision"] == "promoted" and run.results[0]["current"] == "round-1"
    assert ModelVersion.objects.get(is_current=True).name == "round-1"
    assert VersionChange.objects.count() == 1  # decided once


def test_a_round_resumed_after_its_labelling_reports_its_labels_and_partial_seconds(loop_run, monkeypatch, client,
                                                                                     staff):
    """It reported 0 labels and ~0 seconds for the stages its lost attempt did."""
    # the worker dies once the round has labelled and trained, as it starts evaluating
    _lost_once(monkeypatch, loop_services, "evaluate")
    with pytest.raises(WorkerLost):
        run_loop(loop_run.pk)
    stored = Label.objects.count()
    assert stored >= 4
    run = run_loop(loop_run.pk)
    assert run.status == "succeeded", run.error
    result = run.results[0]
    assert result["labels"] == stored
    assert result["seconds_partial"] == ["generate", "label", "train"]
    assert set(result["seconds"]) == {"generate", "label", "train", "evaluate"}
    assert "the seconds of generate, label, train are this attempt's alone" in run.log
    from django.urls import reverse

    client.force_login(staff)  # the page says so beside the seconds
    page = client.get(reverse("loop:run", args=[run.pk])).content.decode()
    assert "resumed after a lost worker: generate, label, train this attempt's alone" in page


def test_a_round_run_in_one_attempt_has_whole_seconds(loop_run):
    run = run_loop(loop_run.pk)
    assert run.status == "succeeded", run.error
    assert "seconds_partial" not in run.results[0] and run.results[0]["labels"] == Label.objects.count() >= 4


def test_a_worker_starting_while_the_run_loop_command_runs_leaves_its_run_alone(loop_base, monkeypatch, settings):
    """The command's run was part of nothing, so a worker starting meanwhile took it for a lost worker's and resumed
    it beside the command. A gate no round can pass is said at the start, on stderr and in the run's log."""
    _, make = loop_base
    make(train=12, eval=3)
    settings.PREFLOOP_ROUND_EVAL_PROMPTS, settings.PREFLOOP_GATE_MIN_VOTES = 3, 16
    sent = []

    class Queue:  # what the starting worker's queue would be sent
        def apply_async(self, args):
            sent.append(args)

    monkeypatch.setattr(lifecycle, "task_named", lambda name: Queue())
    real, requeued = loop_services.label_pairs, []

    def a_worker_starts(*args, **kwargs):
        requeued.append(lifecycle.requeue_interrupted())  # e.g. `make run`'s worker (re)starts now
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_services, "label_pairs", a_worker_starts)
    err = io.StringIO()
    call_command("run_loop", rounds=1, pairs=4, judge=JUDGE, tag="t", eval_limit=3, preset="all",
                 params=json.dumps(PARAMS), stdout=io.StringIO(), stderr=err)
    assert requeued == [{}] and sent == []
    run = LoopRun.objects.get()
    assert run.status == "succeeded" and run.part_of == "foreground" and run.attempts == 1
    said = "no round can be promoted: the gate needs 16 blind votes"
    assert said in err.getvalue() and "--eval-limit 3" in err.getvalue() and said in run.log


def test_a_command_run_left_stopping_is_not_ended_by_a_worker_but_by_cancel_once_silent(db):
    """A worker starting while the command stopped its run ended it, saying its worker was lost; a command that died
    while stopping leaves it to Cancel, which ends a run silent for minutes."""
    long_ago = timezone.now() - timedelta(hours=1)
    run = LoopRun.objects.create(rounds=1, pairs=1, judge=JUDGE, part_of="foreground", status="cancelling",
                                 started=long_ago, claimed=long_ago, updated=long_ago)
    assert lifecycle.requeue_interrupted() == {}
    assert LoopRun.objects.get(pk=run.pk).status == "cancelling"
    lifecycle.cancel(run)
    assert run.status == "cancelled"


@pytest.fixture
def ready(db):
    ModelVersion.objects.create(name="base", path="/nowhere/base", is_current=True)
    Prompt.objects.create(text="train me", split="train")
    Prompt.objects.create(text="eval me", split="eval")


def test_two_different_eval_judges_are_refused(ready):
    """--eval-judge won, and the settings' eval_judge was dropped without a word."""
    with pytest.raises(LoopError, match="eval judge 'judges.rules:prefer_list' and the settings' own eval_judge "
                                        "'judges.rules:prefer_shorter': give one of them"):
        start_loop_run(rounds=1, pairs=1, judge="judges.rules:length_target", enqueue=False,
                       eval_judge="judges.rules:prefer_list", params={"eval_judge": "judges.rules:prefer_shorter"})
    # the same judge spelt two ways is one
    run = start_loop_run(rounds=1, pairs=1, judge="judges.rules:length_target", enqueue=False,
                         eval_judge=" judges.rules.prefer_list", params={"eval_judge": "judges.rules:prefer_list"})
    assert run.params["eval_judge"] == "judges.rules:prefer_list"


def test_an_evaluation_too_small_for_the_gate_is_said_at_the_start(ready, settings):
    """Each round was kept with "needs 16 blind votes", and nothing said that no round ever could pass."""
    settings.PREFLOOP_GATE_MIN_VOTES = 16
    run = start_loop_run(rounds=5, pairs=1, judge="judges.rules:length_target", enqueue=False, eval_limit=8)
    assert "warning: no round can be promoted: the gate needs 16 blind votes against the current version, and " \
           "each round's evaluation gives at most 1 (the eval split has 1 prompt for it)" in run.log
    assert "PREFLOOP_GATE_MIN_VOTES" in run.log
    for k in range(20):
        Prompt.objects.create(text=f"eval {k}", split="eval")
    run = start_loop_run(rounds=5, pairs=1, judge="judges.rules:length_target", enqueue=False, eval_limit=9)
    assert "(--eval-limit 9)" in run.log
    run = start_loop_run(rounds=5, pairs=1, judge="judges.rules:length_target", enqueue=False, eval_limit=16)
    assert run.log == ""
