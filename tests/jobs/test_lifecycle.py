"""The lifecycle every job kind shares (jobs.lifecycle) and the one progress partial that shows every kind."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.template.loader import render_to_string
from django.utils import timezone

from annotate.models import ExportJob, ImportJob
from compare.models import CompareJob
from generation.models import GenerationJob, ModelVersion
from jobs import lifecycle
from jobs.lifecycle import JobCancelled, Tracker
from loop.models import LoopRun
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(db):
    return ModelVersion.objects.create(name="v0", path="/nowhere", is_current=True)


@pytest.fixture
def jobs(version):
    """One job of every kind, queued."""
    other = ModelVersion.objects.create(name="v1", path="/nowhere", parent=version, round=1)
    return [
        GenerationJob.objects.create(version=version, total=8, params={"prompt_ids": list(range(8))}),
        TrainingRun.objects.create(input_version=version, total=60),
        CompareJob.objects.create(version_a=other, version_b=version, prompt_ids=[1, 2], total=4),
        LoopRun.objects.create(judge="judges.rules:length_target", rounds=3, total=3),
    ]


def test_every_job_kind_is_a_job_with_its_task_routed_in_one_place(settings):
    from prefloop.celery import app

    kinds = lifecycle.job_kinds()
    assert set(kinds) == {GenerationJob, TrainingRun, CompareJob, LoopRun, ImportJob, ExportJob}
    for kind in kinds:
        assert lifecycle.task_named(kind.task_name).name == kind.task_name
        route = app.amqp.router.route({}, kind.task_name)
        # imports and exports load no model: the default queue's worker runs them while the GPU worker trains
        want = settings.CELERY_TASK_DEFAULT_QUEUE if kind in (ImportJob, ExportJob) else settings.PREFLOOP_GPU_QUEUE
        assert route["queue"].name == want == lifecycle.queue_of(kind.task_name)


def test_cancel_stops_a_queued_job_at_once_and_asks_a_running_one_to_stop(jobs):
    for job in jobs:
        lifecycle.cancel(job)
        assert job.status == "cancelled" and job.stage == "cancelled before it started" and not job.is_active
        assert lifecycle.claim(type(job), job.pk) is None, "a cancelled job is not started by a late task"
    for job in jobs:
        type(job).objects.filter(pk=job.pk).update(status="queued", finished=None)
        running = lifecycle.claim(type(job), job.pk)
        tracker = Tracker(running)
        assert not tracker.should_stop()
        lifecycle.cancel(running)
        assert running.status == "cancelling" and running.is_active
        tracker._checked = 0  # the next question goes to the database (it asks at most twice a second)
        with pytest.raises(JobCancelled):
            tracker.check()
        lifecycle.stopped(running, "nothing kept")
        assert running.status == "cancelled" and running.stage.startswith("cancelled after 0 of ")


def test_a_fresh_check_sees_a_cancel_the_throttled_one_has_not_yet(jobs):
    """Between steps a worker asks at most twice a second; before what cannot be taken back (a round registering its
    version) it asks afresh, so a Cancel pressed a moment earlier still counts."""
    running = lifecycle.claim(TrainingRun, jobs[1].pk)
    tracker = Tracker(running)
    tracker.check()  # asks the database: not stopping
    lifecycle.cancel(running)
    assert running.status == "cancelling"
    tracker._checked = float("inf")  # as if it had just asked (it asks at most twice a second)
    tracker.check()  # not asked again: the cancel is not seen
    with pytest.raises(JobCancelled):
        tracker.check(fresh=True)


def test_a_fresh_check_sees_a_cancel_of_the_loop_run_the_job_works_inside(jobs):
    """A round's training run registers its version only if neither it nor its loop run was asked to stop: the fresh
    check asks the loop run's row too, though the loop run's own tracker asked a moment ago."""
    loop_run = lifecycle.claim(LoopRun, jobs[3].pk)
    running = lifecycle.claim(TrainingRun, jobs[1].pk)
    parent = Tracker(loop_run)
    tracker = Tracker(running, parents=[parent])
    tracker.check()  # asks both rows: not stopping
    lifecycle.cancel(loop_run)
    assert loop_run.status == "cancelling"
    tracker._checked = parent._checked = float("inf")  # as if both had just asked
    tracker.check()  # not asked again: the cancel is not seen
    with pytest.raises(JobCancelled):
        tracker.check(fresh=True)


def test_a_child_stops_when_the_job_it_runs_inside_is_cancelled(jobs, version):
    loop_run = lifecycle.claim(LoopRun, jobs[3].pk)
    job = lifecycle.claim(GenerationJob, jobs[0].pk)
    parent = Tracker(loop_run)
    seen = []
    parent.on_child = lambda fraction, stage: seen.append((fraction, stage))
    child = Tracker(job, parents=[parent])
    child.report(progress=0.25, stage="sampling prompts 1–8", force=True)
    assert seen == [(0.25, "sampling prompts 1–8")]
    lifecycle.cancel(loop_run)
    parent._checked = 0
    assert child.should_stop()


def test_a_job_whose_worker_was_lost_resumes_until_out_of_attempts_then_fails_saying_why(jobs):
    for job in jobs:
        kind = type(job)
        for attempt in range(1, kind.max_attempts + 1):
            claimed = lifecycle.claim(kind, job.pk)
            assert claimed.status == "running" and claimed.attempts == attempt
        assert "the worker was lost" in claimed.log
        assert lifecycle.claim(kind, job.pk) is None
        job.refresh_from_db()
        assert job.status == "failed" and f"stopped during this job {kind.max_attempts} times" in job.error


def test_a_job_lost_while_stopping_ends_cancelled_and_parts_of_a_lost_job_end_failed(jobs, version):
    job = lifecycle.claim(GenerationJob, jobs[0].pk)
    lifecycle.cancel(job)
    assert lifecycle.claim(GenerationJob, job.pk) is None
    job.refresh_from_db()
    assert job.status == "cancelled"
    loop_run = jobs[3]
    part = TrainingRun.objects.create(input_version=ModelVersion.objects.get(name="v1"), status="running",
                                      part_of=loop_run.key)
    TrainingRun.objects.filter(pk=part.pk).update(stage="training")
    assert lifecycle.end_parts(loop_run, "the loop's worker was lost") == 1
    part.refresh_from_db()
    assert part.status == "failed" and part.error == "the loop's worker was lost"
    assert part.stage == "failed in: training"  # not "training", as if still at work


@pytest.mark.parametrize("how", ["cancelled", "lost too often"])
def test_a_loop_run_ended_when_claimed_ends_the_jobs_inside_it(jobs, version, how):
    """A loop run whose worker was lost while it stopped, or lost once too often, is ended by the next claim; the
    training run inside it was left running for good (a worker start leaves jobs inside a loop run to the loop),
    and its version refused every later run as already running."""
    loop_run = lifecycle.claim(LoopRun, jobs[3].pk)
    part = TrainingRun.objects.create(input_version=ModelVersion.objects.get(name="v1"), status="running",
                                      part_of=loop_run.key)
    if how == "cancelled":
        lifecycle.cancel(loop_run)
    else:
        LoopRun.objects.filter(pk=loop_run.pk).update(attempts=LoopRun.max_attempts)
    assert lifecycle.claim(LoopRun, loop_run.pk) is None
    part.refresh_from_db()
    assert part.status == ("cancelled" if how == "cancelled" else "failed")
    assert f"loop run {loop_run.pk}" in part.error and part.finished is not None


@pytest.mark.parametrize("how", ["stopping", "out of attempts"])
def test_a_lost_workers_job_ended_when_claimed_has_its_runs_checkpoint_folders_removed(jobs, version, settings,
                                                                                       tmp_path, how):
    """A training run (or a loop's round) whose worker was lost while it stopped, or lost once too often, was ended
    by the next claim (requeue_interrupted at a worker's start, a loop's own task) with its unregistered checkpoint
    folder (hundreds of MB to GB) left on disk until some later training run happened to be claimed. Those of a run
    still at work beside it (a worker sharing the disk), and of one ended otherwise, stay."""
    import tempfile

    settings.MODELS_DIR = tmp_path / "models"
    settings.MODELS_DIR.mkdir()
    versions = [ModelVersion.objects.create(name=f"v{k}", path="/nowhere", round=k) for k in range(2, 5)]
    loop_run = lifecycle.claim(LoopRun, jobs[3].pk)
    round_run = TrainingRun.objects.create(input_version=versions[0], status="running", attempts=1,
                                           part_of=loop_run.key)
    alone = lifecycle.claim(TrainingRun, jobs[1].pk)
    beside = TrainingRun.objects.create(input_version=versions[1], status="running", part_of="foreground")
    ended = TrainingRun.objects.create(input_version=versions[2], status="cancelled")
    # named as run_training names them
    folders = {run.pk: Path(tempfile.mkdtemp(prefix=f".tmp-run-{run.pk}-", dir=settings.MODELS_DIR))
               for run in (round_run, alone, beside, ended)}
    if how == "stopping":
        lifecycle.cancel(loop_run)
        lifecycle.cancel(alone)
        assert lifecycle.requeue_interrupted() == {}  # a worker starts: it ends both
    else:
        for job in (loop_run, alone):
            type(job).objects.filter(pk=job.pk).update(attempts=job.max_attempts)
            assert lifecycle.claim(type(job), job.pk) is None  # as the loop's task claims it again
    for run in (loop_run, round_run, alone):
        run.refresh_from_db()
        assert not run.is_active
    assert not folders[round_run.pk].exists(), "the lost loop's round kept its checkpoint folder"
    assert not folders[alone.pk].exists(), "the lost training run kept its checkpoint folder"
    assert folders[beside.pk].exists() and folders[ended.pk].exists(), "another run's checkpoint folder was removed"


def test_progress_writes_are_throttled_and_forced_ones_always_land(jobs):
    job = lifecycle.claim(GenerationJob, jobs[0].pk)
    tracker = Tracker(job)
    assert tracker.report(progress=0.1, stage="sampling")
    assert not tracker.report(progress=0.2)  # within a second of the last write
    assert GenerationJob.objects.get(pk=job.pk).progress == 0.1
    assert tracker.report(done=1, progress=0.2, force=True)
    row = GenerationJob.objects.get(pk=job.pk)
    assert (row.done, row.progress, row.stage) == (1, 0.2, "sampling") and row.updated is not None


def test_failed_and_finished_jobs_say_so_and_a_failure_while_stopping_ends_cancelled(jobs):
    generation, training, compare, loop = (lifecycle.claim(type(j), j.pk) for j in jobs)
    Tracker(generation).report(stage="round 1: label " + "x" * 200, force=True)
    lifecycle.fail(generation, "ValueError: bad prompt")
    assert generation.status == "failed" and generation.error == "ValueError: bad prompt"
    # where it failed, not a stage that reads as still at work (cut to the column's length, on every database)
    assert generation.stage == ("failed in: round 1: label " + "x" * 200)[:200]
    lifecycle.fail(training, "no pairs")
    assert training.stage == ""  # nothing said where: nothing added
    lifecycle.finish(compare, done=4)
    assert compare.status == "succeeded" and compare.progress == 1.0 and compare.done == 4
    lifecycle.cancel(loop)
    lifecycle.fail(loop, "JudgeError: unreachable")
    assert loop.status == "cancelled" and loop.error == "JudgeError: unreachable"
    lifecycle.append_log(training, "one")
    lifecycle.append_log(training, "two")
    training.refresh_from_db()
    assert training.log.splitlines()[-2].endswith("one") and training.log.splitlines()[-1].endswith("two")


def test_the_time_left_is_shown_once_a_rate_is_measured(jobs):
    job = lifecycle.claim(GenerationJob, jobs[0].pk)
    assert job.eta_seconds is None
    now = timezone.now()
    GenerationJob.objects.filter(pk=job.pk).update(claimed=now - timedelta(seconds=30), updated=now, progress=0.25,
                                                   claimed_progress=0.0)
    job.refresh_from_db()
    assert 85 <= job.eta_seconds <= 90  # a quarter in 30 s: three quarters take 90 s more
    html = render_to_string("jobs/_progress.html", {"job": job})
    assert "about 2 min left" in html or "about 1 min left" in html


def test_the_rate_is_measured_from_the_first_progress_not_from_the_claim(jobs):
    """Minutes of loading and reference log-probs before the first step moved no bar, and the estimate counted them
    as slow steps."""
    job = lifecycle.claim(GenerationJob, jobs[0].pk)
    GenerationJob.objects.filter(pk=job.pk).update(claimed=timezone.now() - timedelta(minutes=10))
    job.refresh_from_db()
    tracker = Tracker(job)
    tracker.report(progress=0.1, force=True)
    job.refresh_from_db()
    assert job.claimed_progress == 0.1 and (timezone.now() - job.claimed).total_seconds() < 5
    GenerationJob.objects.filter(pk=job.pk).update(claimed=job.claimed - timedelta(seconds=10))
    tracker.report(progress=0.2, force=True)  # a tenth in 10 s from the first progress: about 80 s more
    job.refresh_from_db()
    assert job.claimed_progress == 0.1 and 70 <= job.eta_seconds <= 85


def test_one_partial_renders_every_kind_with_its_bar_counts_and_cancel(jobs, staff, client):
    for job in jobs:
        type(job).objects.filter(pk=job.pk).update(status="running", done=1, progress=0.5, stage="working")
    client.force_login(staff)
    pages = {
        GenerationJob: ("/generation/jobs/{}/progress/", "prompts", "/generation/jobs/{}/cancel/"),
        TrainingRun: ("/training/runs/{}/progress/", "steps", "/training/runs/{}/cancel/"),
        CompareJob: ("/compare/sets/{}/", "answers", "/compare/sets/{}/cancel/"),
        LoopRun: ("/loop/runs/{}/", "rounds", "/loop/runs/{}/cancel/"),
    }
    for job in jobs:
        url, unit, cancel = pages[type(job)]
        html = client.get(url.format(job.pk), HTTP_HX_REQUEST="true").content.decode()
        assert 'class="job-progress" data-status="running"' in html, type(job).__name__
        assert '<progress class="bar" value="50" max="100">' in html and f"1 / {job.total} {unit}" in html
        assert "working" in html and f'hx-post="{cancel.format(job.pk)}"' in html
        answer = client.post(cancel.format(job.pk), HTTP_HX_REQUEST="true")
        assert answer.status_code == 200 and 'data-status="cancelling"' in answer.content.decode()
        assert type(job).objects.get(pk=job.pk).status == "cancelling"


def test_only_staff_cancel_a_comparison_set(jobs, annotator, client):
    compare = jobs[2]
    client.force_login(annotator)
    html = client.get(f"/compare/sets/{compare.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert "Cancel</button>" not in html
    response = client.post(f"/compare/sets/{compare.pk}/cancel/")
    assert response.status_code == 403  # the refusal page for a signed-in person without the right
    assert CompareJob.objects.get(pk=compare.pk).status == "queued"


TORCH_MODULES = {"training": ("dpo.trainer", "dpo.terms")}


def test_services_never_import_tasks_and_import_at_the_top():
    """Tasks import services; a service that imported its tasks back would be the cycle the jobs module removes."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent.parent
    for app in ("generation", "training", "compare", "loop", "jobs"):
        for path in (root / app).glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and path.name != "tasks.py":
                    assert not (node.module or "").endswith("tasks"), f"{path}:{node.lineno} imports tasks"
        services = ast.parse((root / app / ("lifecycle.py" if app == "jobs" else "services.py")).read_text())
        # but the modules that import torch, imported where a worker runs them: a web process never needs torch
        # (tests/test_core_imports.py), and they import no service back
        inner = [node.lineno for fn in ast.walk(services) if isinstance(fn, ast.FunctionDef)
                 for node in ast.walk(fn) if isinstance(node, ast.Import | ast.ImportFrom)
                 and not (isinstance(node, ast.ImportFrom) and node.module in TORCH_MODULES.get(app, ()))]
        assert inner == [], f"{app}: imports inside functions at lines {inner}"


def test_a_new_stage_is_written_at_once_not_dropped_by_the_throttle(jobs):
    """The page named the stage before for as long as a new one ran without another report (a loop showed
    "generate · sampling" for 20 s while it labelled and loaded the model)."""
    job = jobs[1]
    tracker = Tracker(job)
    assert tracker.report(progress=0.1, stage="loading the model", force=True)
    assert not tracker.report(progress=0.2, stage="loading the model")  # the same stage, within the second: throttled
    assert tracker.report(progress=0.3, stage="training")  # a new stage: written now
    job.refresh_from_db()
    assert job.stage == "training" and job.progress == 0.3


def test_a_stage_whose_count_alone_changed_is_written_as_progress_is_and_held_until_flushed(jobs, monkeypatch):
    """An import's reading and an export's table building name a count in their stage, told many times a second:
    each count a new stage written at once, they gave the count themselves at most every WRITE_EVERY_S. Its name is
    written at once; a count alone is held with the progress, and written by the next write or flush."""
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 3600.0)  # every report after a write held back, unless new
    job = lifecycle.claim(GenerationJob, jobs[0].pk)
    tracker = Tracker(job)
    told = []
    tracker.on_report = lambda fraction, stage: told.append(stage)
    reading = "reading and checking p.jsonl"

    def row():
        return GenerationJob.objects.values_list("progress", "stage").get(pk=job.pk)

    assert tracker.report(progress=0.0, stage="loading", force=True)
    assert tracker.report(progress=0.1, stage=f"{reading}: 10 of 90 lines read", stage_name=reading)  # a new name
    assert not tracker.report(progress=0.2, stage=f"{reading}: 20 of 90 lines read", stage_name=reading)
    assert not tracker.report(progress=0.3, stage=f"{reading}: 30 of 90 rows checked", stage_name=reading)
    assert row() == (0.1, f"{reading}: 10 of 90 lines read") and told[-1] == f"{reading}: 10 of 90 lines read"
    tracker.flush()  # as the job ends: the count it held, with its bar
    assert row() == (0.3, f"{reading}: 30 of 90 rows checked") == (job.progress, job.stage)
    assert not tracker.report(progress=0.4, stage=f"{reading}: 40 of 90 rows checked", stage_name=reading)
    assert tracker.report(done=1, force=True)  # the next write takes the count held
    assert row() == (0.4, f"{reading}: 40 of 90 rows checked") and told[-1] == f"{reading}: 40 of 90 rows checked"
    assert tracker.report(progress=0.5, stage="writing 90 checked rows")  # another stage: at once, as before
    assert row() == (0.5, "writing 90 checked rows")


def test_cancel_ends_a_job_whose_worker_seems_lost_at_once_with_the_jobs_inside_it(jobs, staff, client):
    """A job whose worker died stayed "cancelling" after Cancel, with no button left to press, until some worker of
    its queue started again (with Redis and no restart: the broker's visibility timeout, about a day)."""
    long_ago = timezone.now() - timedelta(minutes=12)
    loop_run = jobs[3]
    part = TrainingRun.objects.create(input_version=ModelVersion.objects.get(name="v1"), status="running",
                                      part_of=loop_run.key)
    pages = {GenerationJob: "/generation/jobs/{}/progress/", TrainingRun: "/training/runs/{}/progress/",
             CompareJob: "/compare/sets/{}/", LoopRun: "/loop/runs/{}/"}
    client.force_login(staff)
    for job in jobs:
        running = lifecycle.claim(type(job), job.pk)
        type(job).objects.filter(pk=job.pk).update(status="cancelling", claimed=long_ago, updated=long_ago)
        # a Cancel pressed before the silence began left it stopping: the page offers Cancel again
        html = client.get(pages[type(job)].format(job.pk), HTTP_HX_REQUEST="true").content.decode()
        assert 'data-status="cancelling"' in html and "is its worker running?" in html and "hx-post=" in html
        lifecycle.cancel(running)
        assert running.status == "cancelled" and not running.is_active, type(job).__name__
        assert running.stage.startswith("cancelled after 12 min without a word from its worker (it seems lost)")
        assert "it seems lost" in running.log and running.finished is not None
    part.refresh_from_db()
    assert part.status == "cancelled" and "it seems lost" in part.error


@pytest.mark.django_db(transaction=True)
def test_a_job_ended_for_its_silence_reads_cancelled_only_once_the_jobs_inside_it_are_ended(monkeypatch):
    """Cancel committed a silent loop run "cancelled", and only then ended the training run inside it: a reader of
    the ended loop (its page, the API, a test) found its round still "running"."""
    from tests.threads import run_at_once

    long_ago = timezone.now() - timedelta(minutes=12)
    base = ModelVersion.objects.create(name="base", path="/nowhere/base", is_current=True)
    loop_run = LoopRun.objects.create(rounds=1, pairs=1, judge="judges.rules:length_target", status="cancelling",
                                      claimed=long_ago, updated=long_ago)
    part = TrainingRun.objects.create(input_version=base, reference_version=base, status="running",
                                      part_of=loop_run.key)
    seen, end_parts = [], lifecycle.end_parts

    def ending_parts(job, *args, **kwargs):  # as the parts are ended: what another process reads of the loop
        def read():
            seen.append(LoopRun.objects.get(pk=loop_run.pk).status)
        assert run_at_once({"reader": read}) == []
        return end_parts(job, *args, **kwargs)

    monkeypatch.setattr(lifecycle, "end_parts", ending_parts)
    lifecycle.cancel(loop_run)
    part.refresh_from_db()
    assert loop_run.status == "cancelled" and part.status == "cancelled"
    assert seen == ["cancelling"], "the loop read cancelled while the training run inside it was still running"


def test_cancel_asks_a_job_that_is_writing_progress_to_stop_and_does_not_end_it(jobs):
    job = lifecycle.claim(GenerationJob, jobs[0].pk)
    Tracker(job).report(progress=0.5, force=True)
    GenerationJob.objects.filter(pk=job.pk).update(claimed=timezone.now() - timedelta(minutes=30))  # a long job
    lifecycle.cancel(job)
    assert job.status == "cancelling" and job.finished is None  # its worker is alive: it stops and says what it kept


def test_a_worker_in_a_step_that_writes_no_progress_still_shows_it_is_alive(jobs):
    """Reference log-probs, an SFT warm start, a judge loading write no progress for minutes; the worker asks whether
    to stop all along, and that now says it is alive: no "is its worker running?", and Cancel does not end it."""
    job = lifecycle.claim(TrainingRun, jobs[1].pk)
    long_ago = timezone.now() - timedelta(minutes=20)
    TrainingRun.objects.filter(pk=job.pk).update(claimed=long_ago, updated=long_ago)
    job.refresh_from_db()
    assert job.silent_seconds is not None  # before the worker asks again
    assert not Tracker(job).should_stop()  # asked from inside the silent step
    job.refresh_from_db()
    assert job.silent_seconds is None and job.alive_at is not None
    lifecycle.cancel(job)
    assert job.status == "cancelling" and job.finished is None


def test_a_long_stage_is_shortened_at_a_word_and_kept_whole_in_the_log():
    """A cancelled loop run's stage was cut at 200 characters mid-word ("...; the samples, pairs and labe"): found by
    an outside review."""
    from jobs.lifecycle import STAGE_LENGTH, fit

    line = "cancelled after 1 of 2 rounds: " + "a round kept with its labels; " * 10
    shown = fit(line)
    assert len(shown) <= STAGE_LENGTH and shown.endswith("…") and line.startswith(shown[:-1])
    assert line[len(shown) - 1] in " ;"  # at a word's end
    assert fit("short") == "short" and fit("x" * 300) == "x" * (STAGE_LENGTH - 1) + "…"


def test_a_report_writes_the_jobs_own_row_before_a_cancelled_parent_stops_it(jobs, version):
    """The parent, told first, raised JobCancelled before the child's row was written: a training run cancelled by
    its loop during step 1 had the step stored and read "cancelled before any of its steps" (an outside review)."""
    loop_run = lifecycle.claim(LoopRun, jobs[3].pk)
    job = lifecycle.claim(GenerationJob, jobs[0].pk)
    parent = Tracker(loop_run)

    def on_child(fraction, stage):
        raise JobCancelled  # the loop's reporter: its run was cancelled

    parent.on_child = on_child
    child = Tracker(job, parents=[parent])
    with pytest.raises(JobCancelled):
        child.report(done=1, total=8, progress=0.125, stage="step 1 of 8", force=True)
    job.refresh_from_db()
    assert (job.done, job.total, job.stage) == (1, 8, "step 1 of 8")
