"""At the command line a failed job says why in lines, not in a logged traceback (`--verbosity 2` shows it)."""
from __future__ import annotations

import io
import logging

import pytest
from django.core.management import CommandError, call_command

from generation.models import ModelVersion

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("verbosity,traceback", [(1, False), (2, True)])
def test_a_failed_round_logs_one_line_unless_asked_for_more(verbosity, traceback):
    ModelVersion.objects.create(name="base", path="/nonexistent/base", is_current=True)
    seen = io.StringIO()
    handler = logging.StreamHandler(seen)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with pytest.raises(CommandError, match="no decided pairs to train on yet"):
            call_command("train_round", verbosity=verbosity, stdout=io.StringIO(), stderr=io.StringIO())
    finally:
        root.removeHandler(handler)
    logged = seen.getvalue()
    assert "failed: TrainingError: no decided pairs" in logged or (traceback and "no decided pairs" in logged)
    assert ("Traceback (most recent call last)" in logged) is traceback
    assert not handler.filters  # the command leaves the handlers as it found them


def test_ctrl_c_ends_the_commands_job_cancelled_and_no_worker_resumes_it(monkeypatch):
    """Ctrl-C left a command's job "running" at 9%, and the next worker to start took it for a lost worker's job
    and ran it again behind the person's back."""
    import generation.management.commands.generate_pairs as command
    from generation.models import GenerationJob, Prompt
    from jobs import lifecycle

    ModelVersion.objects.create(name="base", path="/nonexistent/base", is_current=True)
    for k in range(3):
        Prompt.objects.create(text=f"Question {k}?", split=Prompt.TRAIN)

    def pressed_ctrl_c(pk, **_):  # the job is under way when the person presses Ctrl-C
        lifecycle.claim(GenerationJob, pk)
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "run_generation_job", pressed_ctrl_c)
    with pytest.raises(CommandError, match=r"generate_pairs: interrupted: generation job \d+ is cancelled"):
        call_command("generate_pairs", prompts=3, stdout=io.StringIO(), stderr=io.StringIO())
    job = GenerationJob.objects.get()
    assert job.status == "cancelled" and job.stage == "stopped: Ctrl-C at the command line"
    assert lifecycle.requeue_interrupted() == {}  # a worker starting now finds nothing to resume


def test_ctrl_c_during_a_loop_cancels_the_jobs_inside_it_too():
    from jobs import lifecycle
    from loop.models import LoopRun
    from training.models import TrainingRun

    base = ModelVersion.objects.create(name="base", path="/nonexistent/base", is_current=True)
    loop = LoopRun.objects.create(judge="judges.rules:length_target", rounds=2, total=2, status="running")
    child = TrainingRun.objects.create(input_version=base, reference_version=base, status="running", part_of=loop.key)
    elsewhere = ModelVersion.objects.create(name="round-1", path="/nonexistent/r1", parent=base, round=1)
    other = TrainingRun.objects.create(input_version=elsewhere, reference_version=base, status="queued")
    lifecycle.interrupted(loop, "Ctrl-C at the command line")
    child.refresh_from_db(), other.refresh_from_db()
    assert loop.status == child.status == "cancelled" and other.status == "queued"
    assert "stopped: Ctrl-C at the command line" in child.log


def test_a_job_cancelled_meanwhile_is_not_reported_done(monkeypatch):
    import generation.management.commands.generate_pairs as command
    from generation.models import GenerationJob, Prompt
    from jobs import lifecycle

    ModelVersion.objects.create(name="base", path="/nonexistent/base", is_current=True)
    Prompt.objects.create(text="Question?", split=Prompt.TRAIN)

    def cancelled_from_a_page(pk, **_):
        job = lifecycle.claim(GenerationJob, pk)
        lifecycle.cancel(job)
        lifecycle.stopped(job, "0 pairs kept")
        return GenerationJob.objects.get(pk=pk)

    monkeypatch.setattr(command, "run_generation_job", cancelled_from_a_page)
    with pytest.raises(CommandError, match=r"generate_pairs: job \d+ cancelled: cancelled after 0 of 1 prompts"):
        call_command("generate_pairs", prompts=1, stdout=io.StringIO(), stderr=io.StringIO())


def test_bootstrap_model_says_when_its_path_is_not_used(tiny_model_dir, tmp_path):
    """With a base registered, `bootstrap_model --path OTHER` printed the old base and used it, without a word: the
    person meant every round to start from OTHER."""
    import shutil

    ModelVersion.objects.create(name="base", path=str(tiny_model_dir), is_current=True)
    out = io.StringIO()
    call_command("bootstrap_model", path=str(tiny_model_dir), stdout=out)  # the same folder: idempotent, as before
    assert "version 'base'" in out.getvalue()
    other = shutil.copytree(tiny_model_dir, tmp_path / "other")
    with pytest.raises(CommandError, match=rf"^bootstrap_model: the version 'base' is registered already, at "
                                           rf"{tiny_model_dir}: {other} is not used"):
        call_command("bootstrap_model", path=str(other), stdout=io.StringIO())
    assert ModelVersion.objects.get(name="base").path == str(tiny_model_dir)


@pytest.mark.django_db
def test_generate_pairs_takes_the_seeds_the_form_and_the_api_take():
    """A seed past 2**31 - 1 was queued by the command alone (the form, the API, evaluate and run_loop refuse it)."""
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=r"--seed must be from 0 to 2,147,483,647 \(got 1099511627776\)"):
        call_command("generate_pairs", prompts=1, seed=2**40, stdout=io.StringIO(), stderr=io.StringIO())
