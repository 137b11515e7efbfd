"""A command killed outright (kill -9, the out-of-memory killer) ends nothing itself: its job read "running" (and
"cancelling" after a Cancel) until it had been silent for 5 minutes, and a dead train_round's temporary checkpoint
stayed as long. Now the job names the process running it, and from the same machine that process is known gone: the
page says so, Cancel ends the job at once, and a worker starting ends it (cancelled, so that a process alive after
all would stop), with the jobs inside it."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from generation.models import GenerationJob, ModelVersion, Prompt
from jobs import lifecycle, runner
from loop.models import LoopRun
from tests.faults.conftest import ROOT, broker, slow_model_dir, slow_version, wait_for, worker, worker_data_dir  # noqa: F401


@contextmanager
def _sleeping(code: str = "import time; time.sleep(60)"):
    """A child Python process running `code`, killed and collected on the way out."""
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def _runner_of(pid: int) -> str:
    """The runner `this_process` would write in process `pid` (this machine, this PID namespace)."""
    return runner.this_process().rsplit(" ", 2)[0] + f" {pid} {runner._started(pid)}"


def _dead_process() -> str:
    """The runner of a process that has ended and been collected."""
    with _sleeping() as child:
        alive = _runner_of(child.pid)
        assert not runner.gone(alive)
    return alive


def test_a_process_is_gone_only_when_the_kernel_says_so(tmp_path):
    with _sleeping() as child:
        alive = _runner_of(child.pid)
        assert not runner.gone(alive) and not runner.gone(runner.this_process())
        host, boot, namespace, pid, started = alive.split(" ")
        assert runner.gone(f"{host} {boot} {namespace} {pid} 1")  # the pid used again by a later process
        child.kill()
        time.sleep(0.2)
        assert runner.gone(alive)  # killed, not yet collected by its parent (a zombie)
    assert runner.gone(alive)
    # another machine (of the same host name: another boot id), another PID namespace (a container), /proc unable
    # to say, or no runner written: cannot tell, so not gone
    other_boot = "0" * 8 + boot[8:]
    for other in (f"{host} {other_boot} {namespace} {pid} {started}", f"{host} {boot} pid:[1] {pid} {started}",
                  f"{host} {boot} - {pid} {started}", f"{host} - {namespace} {pid} {started}",
                  f"{host} {boot} {namespace} {pid} -", "", "not a runner", f"{host} {namespace} {pid} {started}"):
        assert not runner.gone(other), other
    assert runner.described(alive) == f"pid {pid} on {socket.gethostname()}"


def test_a_process_whose_name_is_not_utf8_is_read_without_error():
    """A name cut at 15 bytes inside a multi-byte character: reading its /proc entry as text raised, and every page
    showing the job answered 500."""
    name = bytes([100, 111, 110, 110, 0xC3, 0xA9, 101, 0xC3])
    code = f"import ctypes, time; ctypes.CDLL(None).prctl(15, {name!r}, 0, 0, 0); time.sleep(60)"
    with _sleeping(code) as child:
        time.sleep(0.5)
        assert name in open(f"/proc/{child.pid}/stat", "rb").read()
        alive = _runner_of(child.pid)
        assert alive.split(" ")[4].isdigit() and not runner.gone(alive)
        assert runner.gone(alive.rsplit(" ", 1)[0] + " 1")


@pytest.mark.skipif(os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "runuser", "mount"))),
                    reason="needs root, unshare, runuser and mount, to mount a /proc that hides other users' processes")
def test_a_process_proc_hides_from_this_user_is_not_judged_gone():
    """/proc mounted with hidepid=2 (or systemd's ProtectProc=invisible, which hardening guides recommend): the web
    app's user sees no entry for a command another user runs, and the job of a live command was ended."""
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
    # a folder the other user can read the module from
    with tempfile.TemporaryDirectory(prefix="runner-check-") as name, _sleeping() as child:
        folder = Path(name)
        shutil.copy(ROOT / "jobs" / "runner.py", folder / "runner.py")
        folder.chmod(0o755)
        (folder / "runner.py").chmod(0o644)
        alive = _runner_of(child.pid)
        check = (f"import sys, os; sys.path.insert(0, {str(folder)!r}); import runner; "
                 f"print(os.path.exists('/proc/{child.pid}'), runner.gone({alive!r}))")
        done = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount -t proc -o hidepid=2 proc /proc && exec runuser -u nobody -- {python} -c \"{check}\""],
            capture_output=True, text=True, timeout=60, cwd=folder)
        if done.returncode != 0:
            pytest.skip(f"cannot check under a hiding /proc here: {done.stderr.strip()[:200]}")
        visible, judged_gone = done.stdout.split()
        if visible == "True":
            pytest.skip("this /proc mount does not hide other users' processes")
        assert judged_gone == "False", done.stdout  # hidden from that user, and not judged gone


@pytest.mark.django_db
def test_cancel_ends_a_job_whose_command_is_gone_at_once_with_the_jobs_inside_it(client, staff):
    base = ModelVersion.objects.create(name="base", path="/nowhere/base", is_current=True)
    dead = _dead_process()
    run = LoopRun.objects.create(rounds=1, pairs=1, judge="judges.rules:length_target", part_of="foreground",
                                 status="running", runner=dead)
    part = GenerationJob.objects.create(version=base, part_of=run.key, status="running")
    client.force_login(staff)
    page = client.get(f"/loop/runs/{run.pk}/").content.decode()
    assert "the command running it has ended without finishing it" in page and ">Cancel</button>" in page
    said = client.get(f"/api/v1/jobs/loop/{run.pk}").json()
    assert said["runner_gone"] is True and said["silent_seconds"] is None and said["active"]

    lifecycle.cancel(run)
    run.refresh_from_db()
    pid = dead.split(" ")[3]
    assert run.status == "cancelled" and run.finished is not None
    said = f"the command running it (pid {pid} on {socket.gethostname()}) ended without finishing it"
    assert said in run.error and said in run.log
    # the stage, which everyone who sees a job reads (a comparison set's voters), names no process or machine
    assert run.stage.startswith("cancelled: the command running it ended without finishing it")
    assert f"pid {pid}" not in run.stage and socket.gethostname() not in run.stage
    part.refresh_from_db()
    assert part.status == "cancelled" and f"pid {pid}" in part.error and f"pid {pid}" not in part.stage
    # were the process alive after all, its next check for a stop would stop it (a failed job's would work on)
    assert lifecycle.Tracker(run).should_stop()


@pytest.mark.django_db
def test_a_dead_rounds_unregistered_checkpoint_goes_when_its_job_is_ended(settings, tmp_path):
    """A loop killed while its round trained left the round's temporary checkpoint (hundreds of MB) until the next
    training run started, which might be never; it goes when the loop's job is ended. A run still training (on a
    worker sharing the disk) keeps its own, and so does a run ended otherwise (cancelled for its worker's silence:
    that worker may still be at work, about to register the folder)."""
    from training.models import TrainingRun

    settings.MODELS_DIR = tmp_path / "models"
    base = ModelVersion.objects.create(name="base", path="/nowhere/base", is_current=True)
    loop = LoopRun.objects.create(rounds=1, pairs=1, judge="judges.rules:length_target", part_of="foreground",
                                  status="running", runner=_dead_process())
    dead = TrainingRun.objects.create(input_version=base, reference_version=base, status="running", part_of=loop.key)
    other = ModelVersion.objects.create(name="round-1", path="/nowhere/round-1")  # one active run per version
    elsewhere = TrainingRun.objects.create(input_version=other, reference_version=base, status="running")
    third = ModelVersion.objects.create(name="round-2", path="/nowhere/round-2")
    silent = TrainingRun.objects.create(input_version=third, reference_version=base, status="cancelled")
    folders = {}
    for run in (dead, elsewhere, silent):
        folders[run.pk] = settings.MODELS_DIR / f".tmp-run-{run.pk}-abc123"
        (folders[run.pk] / "checkpoint").mkdir(parents=True)
        (folders[run.pk] / "checkpoint" / "model.safetensors").write_bytes(b"0" * 1024)

    lifecycle.cancel(loop)
    dead.refresh_from_db()
    assert dead.status == "cancelled"
    assert not folders[dead.pk].exists(), "the dead round's checkpoint folder was left"
    assert folders[elsewhere.pk].exists(), "a run still training lost its checkpoint folder"
    assert folders[silent.pk].exists(), "a run ended otherwise lost its checkpoint folder"

    # and at a worker's start (end_orphans), for a train_round killed outright on its own
    again = TrainingRun.objects.create(input_version=base, reference_version=base, status="running",  # base's ended
                                       part_of="foreground", runner=_dead_process())
    left = settings.MODELS_DIR / f".tmp-run-{again.pk}-def456"
    left.mkdir()
    assert [job.pk for job in lifecycle.end_orphans()] == [again.pk]
    assert not left.exists() and folders[elsewhere.pk].exists() and folders[silent.pk].exists()


@pytest.mark.django_db(transaction=True)
def test_a_dead_commands_job_reads_cancelled_only_once_its_parts_and_checkpoint_are_gone(settings, tmp_path,
                                                                                       monkeypatch):
    """The job was written "cancelled" (committed), then its parts, then its dead round's unregistered checkpoint
    was removed: a reader of the ended loop (its page, a worker starting, a script freeing the disk) found its round
    "running" and the folder still there, as a039def found of a cancelled training run."""
    from tests.threads import run_at_once
    from training.models import TrainingRun

    settings.MODELS_DIR = tmp_path / "models"
    base = ModelVersion.objects.create(name="base", path="/nowhere/base", is_current=True)
    loop = LoopRun.objects.create(rounds=1, pairs=1, judge="judges.rules:length_target", part_of="foreground",
                                  status="running", runner=_dead_process())
    dead = TrainingRun.objects.create(input_version=base, reference_version=base, status="running", part_of=loop.key)
    folder = settings.MODELS_DIR / f".tmp-run-{dead.pk}-abc123"
    folder.mkdir(parents=True)
    seen = []

    def reading(job):  # as the clean-ups begin: what another process reads of the loop and its round
        def read():
            seen.append((LoopRun.objects.get(pk=loop.pk).status, TrainingRun.objects.get(pk=dead.pk).status))
        assert run_at_once({"reader": read}) == []

    monkeypatch.setattr(lifecycle, "AFTER_PROCESS_GONE", [reading, *lifecycle.AFTER_PROCESS_GONE])
    lifecycle.cancel(loop)
    loop.refresh_from_db()
    assert loop.status == "cancelled" and not folder.exists()
    # (Cancel's own "cancelling" is written first, on its own)
    assert seen == [("cancelling", "running")], f"read {seen} while the dead round's checkpoint was still there"


@pytest.mark.django_db
def test_a_job_whose_command_runs_or_is_elsewhere_still_stops_as_before(client, staff):
    """The other side: a live command stops its job itself; one on another machine cannot be judged from here."""
    with _sleeping() as child:
        alive = _runner_of(child.pid)
        host, boot, rest = _dead_process().split(" ", 2)
        elsewhere = f"{host} {'0' * 8 + boot[8:]} {rest}"  # the same host name, another machine
        runs = [LoopRun.objects.create(rounds=1, pairs=1, judge="judges.rules:length_target", part_of="foreground",
                                       status="running", runner=who, seed=k) for k, who in enumerate((alive, elsewhere))]
        client.force_login(staff)
        for run in runs:
            assert "the command running it has ended" not in client.get(f"/loop/runs/{run.pk}/").content.decode()
            assert client.get(f"/api/v1/jobs/loop/{run.pk}").json()["runner_gone"] is False
            lifecycle.cancel(run)
            run.refresh_from_db()
            assert run.status == "cancelling"  # its process stops it within seconds, as it asks
        # what a worker starting does (prefloop/celery.py): neither is ended, nor sent to the queue
        assert lifecycle.end_orphans() == [] and lifecycle.requeue_interrupted() == {}
        assert LoopRun.objects.filter(status="cancelling").count() == 2


@pytest.mark.slow
def test_a_generate_pairs_killed_outright_is_ended_by_the_next_worker(worker, slow_version):  # noqa: F811
    for k in range(16):
        Prompt.objects.create(text=f"Say something about the number {k}.")
    # greedy on the slow model: every answer runs to its token limit, long enough to kill the command mid-sampling
    command = subprocess.Popen(
        [sys.executable, "manage.py", "generate_pairs", "--prompts", "16", "--samples", "8", "--temperature", "0",
         "--max-new-tokens", "1600", "--pairing", "none"],
        cwd=ROOT, env=worker.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def sampling():
            job = GenerationJob.objects.filter(status="running", progress__gt=0).first()
            assert command.poll() is None, "generate_pairs ended before it was killed"
            return job
        job = wait_for(sampling, 240, "generate_pairs to sample", interval=0.1)
    finally:
        command.send_signal(signal.SIGKILL)
        command.wait()
    assert job.runner == f"{runner.this_process().rsplit(' ', 2)[0]} {command.pid} {job.runner.split(' ')[4]}"
    time.sleep(1)
    job.refresh_from_db()
    assert job.status == "running" and job.runner_gone  # nothing ended it: the process had no say

    worker.start()  # its start looks for jobs lost workers and commands left
    job.refresh_from_db()
    assert job.status == "cancelled" and f"pid {command.pid} on {socket.gethostname()}" in job.error, job.error
    assert job.stage.startswith("cancelled: the command running it") and "ended without finishing it" in job.log


@pytest.mark.django_db
def test_the_api_says_a_job_is_silent_as_its_page_does(client, staff):
    from datetime import timedelta

    from django.utils import timezone

    quiet = timezone.now() - timedelta(minutes=10)
    run = LoopRun.objects.create(rounds=1, pairs=1, judge="judges.rules:length_target", status="running",
                                 claimed=quiet, updated=quiet)
    client.force_login(staff)
    said = client.get(f"/api/v1/jobs/loop/{run.pk}").json()
    assert 590 <= said["silent_seconds"] <= 660 and said["runner_gone"] is False
    assert "no word from its worker for 10" in client.get(f"/loop/runs/{run.pk}/").content.decode()
    LoopRun.objects.filter(pk=run.pk).update(updated=timezone.now())
    assert client.get(f"/api/v1/jobs/loop/{run.pk}").json()["silent_seconds"] is None


@pytest.mark.django_db
def test_a_killed_commands_job_does_not_block_the_next_start():
    """A train_round killed outright held its version ("already queued or running") until someone pressed Cancel on
    its run: the next start ends it first, as the next worker would."""
    from training import services as train
    from training.models import TrainingRun

    base = ModelVersion.objects.create(name="base", path="/nowhere/base", is_current=True)
    killed = train.start_training_run(input_version=base, enqueue=False)
    TrainingRun.objects.filter(pk=killed.pk).update(status="running", part_of="foreground", runner=_dead_process())
    with _sleeping() as child:  # a command still running blocks it, as before
        alive = train.start_training_run(input_version=ModelVersion.objects.create(name="other", path="/nowhere/o"),
                                         enqueue=False)
        TrainingRun.objects.filter(pk=alive.pk).update(status="running", part_of="foreground",
                                                       runner=_runner_of(child.pid))
        again = train.start_training_run(input_version=base, enqueue=False)
        with pytest.raises(train.TrainingError, match="already queued or running"):
            train.start_training_run(input_version=alive.input_version, enqueue=False)
    killed.refresh_from_db()
    assert killed.status == "cancelled" and "ended without finishing it" in killed.stage
    assert again.status == "queued" and again.input_version == base
