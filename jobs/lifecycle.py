"""The lifecycle of every long job, one function per step: enqueue, claim, progress (a `Tracker`), log, fail, finish,
cancel, and requeue after a worker is lost. Services of the job kinds call these; none keeps a copy of its own.

Cancelling is cooperative: `cancel` marks a running job "cancelling", and the worker, asking `Tracker.should_stop`
inside its work (per decode step, between training steps, between judge calls), stops within seconds, stores nothing
of the unit it was working on, and records what it kept with `stopped`.
"""
from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, CharField, F, Q, Value, When
from django.db.models.functions import Concat, Substr
from django.utils import timezone
from kombu.exceptions import OperationalError

from prefloop.celery import app as celery_app

from . import runner as runners
from .models import ACTIVE, FOREGROUND, SILENT_AFTER_S, Job, Status

log = logging.getLogger(__name__)

WRITE_EVERY_S = 1.0  # progress writes at most this often (the page polls every second)
CHECK_EVERY_S = 0.5  # the database is asked whether to stop at most this often
ALIVE_EVERY_S = 30.0  # and told the worker is alive (Job.alive_at) at most this often


# Called with a job the life cycle ended (with the jobs inside it) on behalf of a process that is gone, in the
# transaction that ends them, to clean up what that process left on disk: each kind's own business (training removes
# the unregistered checkpoint folders of the runs among them), added in the kind's AppConfig.ready. The endings that
# call them: end_if_runner_gone (the command running it was killed outright) and claim (its worker was lost while it
# stopped, or once too often; requeue_interrupted claims those at a worker's start). Only that job's and its parts'
# leftovers: those of a run ended otherwise (the silence rule in cancel) may belong to a process still at work. One
# that fails is logged, and the job stays ended.
AFTER_PROCESS_GONE: list[Callable[[Job], None]] = []


class JobCancelled(Exception):
    """The job (or the job it runs inside) was asked to stop."""


def job_kinds() -> list[type[Job]]:
    """Every concrete model that is a Job."""
    return [model for model in apps.get_models() if issubclass(model, Job)]


def task_named(name: str):
    """The registered Celery task called `name`. Outside a worker the apps' tasks modules are imported only when
    first asked for (Celery's autodiscovery is lazy), so ask for them here: services never import tasks."""
    if name not in celery_app.tasks:
        celery_app.loader.import_default_modules()
    return celery_app.tasks[name]


def enqueue(job: Job) -> None:
    """Send the job's task, by name, once the transaction that created the job commits (routing: settings; a
    task runs in-process when PREFLOOP_TASKS_EAGER is on).

    A task that cannot be sent ends its job failed, saying why: left queued, no worker would ever run it, and it
    held what it had taken (a version's one training round: a retry was refused as "already queued or running").
    With the broker down or unreachable, kombu's OperationalError is raised with a message for a person (the API
    answers 503 with it, a page shows it); any other error is raised as it is, the job failed all the same."""
    task, pk = task_named(job.task_name), job.pk

    def send() -> None:
        try:
            task.apply_async((pk,))
        except Exception as exc:
            if task.app.conf.task_always_eager:  # the task itself ran here and raised: its own failure
                raise
            down = isinstance(exc, (OperationalError, OSError))
            log.warning("%s: its task %s could not be sent", _named(job), job.task_name, exc_info=True)
            # the type only, not the message: a broker's message may carry its address
            what = "the task queue could not be reached" if down else "its task could not be sent"
            fail(job, f"{what} ({type(exc).__name__}), so it never started: {job.start_again}")
            if not down:
                raise
            raise OperationalError(f"{what}, so {_named(job)} was not started (it is marked failed): try again in "
                                   "a moment") from exc

    transaction.on_commit(send)


def claim(model: type[Job], pk: int, *, restart: bool = False, retry_failed: bool = False,
          resume_at: Callable[[Job], tuple[float, int]] | None = None) -> Job | None:
    """Mark the job running for a worker's attempt; None when there is nothing to do (ended, cancelled, or out of
    attempts: then it is marked failed with the reason). `restart`: progress starts again from zero (a job that
    cannot resume part-way). `retry_failed`: a failed job runs again, keeping what it stored (a job that resumes).
    `resume_at(job)`: (progress, done) a retried or resumed attempt starts from, for a job that walks its units again
    from what it kept: left where the last attempt was, its bar went back once the new attempt reported."""
    now = timezone.now()
    with transaction.atomic():
        job = model.objects.select_for_update().get(pk=pk)
        if job.status == Status.CANCELLING:  # its worker was lost while stopping: nothing more will be stored
            # the stage it was in ("round 1: train · training") read as still at work
            stage = "cancelled: its worker was lost while it stopped" + (f" ({job.stage})" if job.stage else "")
            job.log += f"[{now:%H:%M:%S}] {stage}\n"
            _end(job, Status.CANCELLED, now, stage=fit(stage), fields=["log"])
            end_parts(job, f"cancelled with {_named(job)}, whose worker was lost while stopping", Status.CANCELLED)
            _clean_up_after(job)
            return None
        again = ""  # the stage a new attempt starts in: the lost attempt's stage blamed the next one's failure
        if retry_failed and job.status == Status.FAILED:
            job.log += f"[{now:%H:%M:%S}] trying again after: {job.error}\n"
            job.status, job.finished, job.attempts = Status.QUEUED, None, 0
            again = "trying again after a failure"
        if job.status not in (Status.QUEUED, Status.RUNNING):
            return None
        lost = job.status == Status.RUNNING
        if lost and job.attempts >= job.max_attempts:
            job.error = f"the worker stopped during this job {job.attempts} times (killed or out of memory)"
            _end(job, Status.FAILED, now, fields=["error"],
                 stage=fit(f"failed in: {job.stage}") if job.stage else "")
            end_parts(job, f"{_named(job)} failed: {job.error}")
            _clean_up_after(job)
            return None
        if lost:
            job.log += f"[{now:%H:%M:%S}] the worker was lost; " + ("starting again\n" if restart else "resuming\n")
            again = "starting again after a lost worker" if restart else "resuming after a lost worker"
        if restart:
            job.done, job.progress = 0, 0.0
        elif again and resume_at is not None:
            job.progress, job.done = resume_at(job)
        if again:
            job.stage = again
        job.status, job.attempts, job.error = Status.RUNNING, job.attempts + 1, ""
        job.started = job.started or now
        job.claimed, job.claimed_progress, job.updated = now, job.progress, None
        job.save(update_fields=["status", "attempts", "error", "started", "finished", "claimed", "claimed_progress",
                                "updated", "log", "done", "progress", "stage"])
    return job


def _clean_up_after(job: Job) -> None:
    """Run the AFTER_PROCESS_GONE clean-ups for `job`, just ended (with its parts) for a process that is gone, inside
    the transaction that ends it: whoever reads it ended finds what its process left on disk gone (the next claim of
    its kind, which removed it before, may come hours later, or never). The price: other writers wait while a
    folder is removed (SQLite's one write lock, the job's row lock on PostgreSQL), milliseconds for a checkpoint on a
    local disk, and these endings are rare (a process killed or lost)."""
    for clean_up in AFTER_PROCESS_GONE:
        try:
            with transaction.atomic():  # a clean-up's failed query undoes its own writes, not the job's end
                clean_up(job)
        except Exception:
            log.exception("cleaning up after %s %s failed", type(job).__name__, job.pk)


def _end(job: Job, status: str, now, *, stage: str | None = None, fields: Iterable[str] = ()) -> None:
    job.status, job.finished = status, now
    names = ["status", "finished", *fields]
    if stage is not None:
        job.stage = stage
        names.append("stage")
    job.save(update_fields=names)


def append_log(job: Job, line: str) -> None:
    """Add a time-stamped line to the job's log (appended in the database: no other write is lost)."""
    type(job).objects.filter(pk=job.pk).update(log=_logged(line))
    job.refresh_from_db(fields=["log"])


def _logged(line: str) -> Concat:
    """The log column with a time-stamped line added, for an UPDATE (so no other write to the log is lost)."""
    return Concat(F("log"), Value(f"[{timezone.now():%H:%M:%S}] {line}\n"))


def fail(job: Job, message: str, *, stage: str | None = None) -> None:
    """Mark the job failed with a message for a person; a job being cancelled ends cancelled, saying what stopped it.
    `stage`: what its page should say of where it stopped (by default the stage it was in, said to be where it
    failed); written with the end, so a job that had already ended keeps the stage of its own end."""
    now, model = timezone.now(), type(job)
    model.objects.filter(pk=job.pk, status__in=[Status.QUEUED, Status.RUNNING]).update(
        status=Status.FAILED, error=message, finished=now, stage=_failed_in() if stage is None else fit(stage))
    # asked to stop, it failed on the way: cancelled, and its stage and log say so (the stage it was in stayed, read
    # as still at work, and the log had no line of the cancel)
    how = "cancelled; failed while stopping"
    model.objects.filter(pk=job.pk, status=Status.CANCELLING).update(
        status=Status.CANCELLED, error=message, finished=now,
        stage=_failed_in(how, no_stage=how) if stage is None else fit(f"{how}: {stage}"),
        log=_logged(f"{how}: {message}"))
    job.refresh_from_db(fields=["status", "error", "finished", "stage", "log"])


def _failed_in(how: str = "failed", *, no_stage: str = "") -> Case:
    """The stage column, for an UPDATE that fails the job: the stage it was in stays, said to be where it failed
    ("round 1: label" alone read as still labelling); `no_stage` when it had none."""
    return Case(When(stage="", then=Value(no_stage)),
                default=Substr(Concat(Value(f"{how} in: "), F("stage"), output_field=CharField()), 1, 200))


STAGE_LENGTH = 200  # jobs.models.Job.stage's max_length


def fit(stage: str, length: int = STAGE_LENGTH) -> str:
    """A stage as the field holds it: a longer one shortened at a word with "…", not cut mid-word (a cancelled loop
    run's line ended "...; the samples, pairs and labe"); the whole line is in the log. `length`: for a part of a
    stage, the room left for it."""
    if len(stage) <= length:
        return stage
    cut = stage[: length - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut[length // 2 :] else cut).rstrip(" ;,:·(") + "…"


def finish(job: Job, *, stage: str = "", **fields) -> None:
    """Mark the job succeeded (with its own fields, e.g. pairs made; `stage`: what a person should know of how it
    ended, e.g. a measurement that failed); a cancel that came after its last unit was stored is too late to undo
    anything, so the job says it finished."""
    type(job).objects.filter(pk=job.pk, status__in=ACTIVE).update(
        status=Status.SUCCEEDED, finished=timezone.now(), progress=1.0, updated=timezone.now(), stage=fit(stage),
        **fields)
    job.refresh_from_db()


def cancel(job: Job) -> None:
    """Ask the job to stop: a queued job is cancelled at once, a running one stops within seconds (see `stopped`),
    one silent for SILENT_AFTER_S (its worker seems lost) is cancelled at once, with the jobs inside it."""
    model, now = type(job), timezone.now()
    model.objects.filter(pk=job.pk, status=Status.QUEUED).update(
        status=Status.CANCELLED, finished=now, stage="cancelled before it started")
    model.objects.filter(pk=job.pk, status=Status.RUNNING).update(status=Status.CANCELLING)
    job.refresh_from_db(fields=["status", "finished", "stage", "updated", "claimed", "alive_at", "runner"])
    if job.status == Status.CANCELLING and end_if_runner_gone(job):
        return
    silent = job.silent_seconds
    if job.status == Status.CANCELLING and silent is not None:
        # Its worker wrote no progress and asked nothing for minutes (a live one asks whether to stop every second or
        # so, and says it is alive every ALIVE_EVERY_S): it is likely gone (killed, its machine lost), and the job
        # stayed "cancelling" until some worker of its queue started again. End it now; a worker alive after all
        # (in a step that asks nothing, a model loading) stops at its next check, and every end of a job is written
        # only while it is active.
        reason = (f"cancelled after {round(silent / 60)} min without a word from its worker (it seems lost); "
                  f"{job.left_when_lost}")
        cutoff = now - timedelta(seconds=SILENT_AFTER_S)  # silent still as it is ended (no report came meanwhile)
        # the job's end and its parts' committed together: the job committed first, a reader of the ended job (its
        # page, the API) found a job inside it still "running"
        # Its leftovers on disk are left (no AFTER_PROCESS_GONE clean-up, unlike a job whose process is known gone):
        # silence is only a guess, and a worker alive after all is still writing them (a checkpoint, an export's file)
        # until its next check, which stops it and removes its own; those of a process that did die are removed by
        # the next claim of its kind (training) or the exports' sweep.
        with transaction.atomic():
            ended = model.objects.filter(
                Q(updated__lt=cutoff) | Q(updated__isnull=True, claimed__lt=cutoff),
                Q(alive_at__isnull=True) | Q(alive_at__lt=cutoff), pk=job.pk, status=Status.CANCELLING,
            ).update(status=Status.CANCELLED, finished=now, stage=reason, log=_logged(reason))
            if ended:
                end_parts(job, reason, Status.CANCELLED)
        job.refresh_from_db(fields=["status", "finished", "stage", "log"])


def end_if_runner_gone(job: Job) -> bool:
    """End `job` (and the jobs inside it) cancelled when the command's process running it is certainly gone
    (jobs.runner), saying so. Cancelled, not failed: were the process alive after all, its next check for a stop
    sees it and stops (a failed job's process would work on). True if it was ended here."""
    if not (job.runner and job.status in ACTIVE and runners.gone(job.runner)):
        return False
    model, now = type(job), timezone.now()
    gone = "ended without finishing it (killed, or out of memory); what it stored before stays"
    reason = f"the command running it ({runners.described(job.runner)}) {gone}"
    # the stage is shown to everyone who sees the job (a comparison set's voters): the process and its machine are
    # said in the error and log, which staff read
    stage = f"cancelled: the command running it {gone}"
    # The job's end, its parts' and the clean-ups of what its process left on disk are committed together, so
    # whoever reads it "cancelled" finds its parts ended and its leftovers gone: committed before them, a reader of
    # the ended job (its page, a worker starting, a script freeing the disk) found a part "running" and its dead
    # round's unregistered checkpoint folder still there.
    with transaction.atomic():
        # one write, only while the job is active and still that process's
        ended = model.objects.filter(pk=job.pk, runner=job.runner, status__in=ACTIVE).update(
            status=Status.CANCELLED, error=reason, finished=now, stage=fit(stage),
            log=_logged(f"cancelled: {reason}"))
        if ended:
            end_parts(job, reason, Status.CANCELLED, stage=stage)
            log.warning("%s %s ended: %s", model.__name__, job.pk, reason)
            _clean_up_after(job)
    job.refresh_from_db(fields=["status", "error", "finished", "stage", "log"])
    return bool(ended)


def end_orphans() -> list[Job]:
    """End every active job whose command's process is gone (see end_if_runner_gone); returns those ended. Called
    when a worker starts, and at every start of a job that an active one could block (a training run holds its input
    version, a generation job its prompts, a comparison set or a loop run refuses its twin): a command killed outright
    blocked those until someone pressed Cancel on its job."""
    ended = []
    for model in job_kinds():
        for job in model.objects.filter(status__in=ACTIVE).exclude(runner=""):
            if end_if_runner_gone(job):
                ended.append(job)
    return ended


def stopped(job: Job, kept: str, *, progress: float | None = None) -> None:
    """The worker stopped the job on request: cancelled, saying what it kept ("cancelled after 3 of 8 prompts: ...").
    `progress`: where its bar ends, for a job whose bar counted the unit in flight that it drops (its tokens)."""
    done, stored_total, at = type(job).objects.values_list("done", "total", "stage").get(pk=job.pk)
    total = job.total or stored_total
    if total:
        stage = f"cancelled after {done} of {total} {job.unit}"
    else:  # stopped before it counted its work (a training run loading its model): where it was, not "0 of 0"
        stage = f"cancelled before any of its {job.unit}" + (f" (at: {at})" if at else "")
    stage += f": {kept}" if kept else ""
    # One write: whoever sees "cancelled" also sees the line in the log.
    type(job).objects.filter(pk=job.pk, status__in=ACTIVE).update(
        status=Status.CANCELLED, finished=timezone.now(), stage=fit(stage), log=_logged(stage),
        **({} if progress is None else {"progress": progress}))
    job.refresh_from_db()


def interrupted(job: Job, how: str) -> None:
    """The process running the job in the foreground was stopped (Ctrl-C at the command line): the job and the jobs
    inside it end cancelled now, so no worker resumes them later behind the person's back."""
    now, stage = timezone.now(), f"stopped: {how}"
    for model in job_kinds():
        model.objects.filter(part_of=job.key, status__in=ACTIVE).update(
            status=Status.CANCELLED, finished=now, stage=stage, log=_logged(stage))
    type(job).objects.filter(pk=job.pk, status__in=ACTIVE).update(status=Status.CANCELLED, finished=now,
                                                                   stage=stage, log=_logged(stage))
    job.refresh_from_db()


def _named(job: Job) -> str:
    return f"{job._meta.verbose_name} {job.pk}"


def end_parts(job: Job, reason: str, status: str = Status.FAILED, *, keep: Iterable[Job] = (),
              stage: str | None = None) -> int:
    """End (failed, or `status`) the jobs still active inside `job`, left by a worker that was lost: nothing else
    would, as only the job they are part of resumes or ends them. `keep`: parts the job resumes itself; `stage`: what
    everyone who sees a part reads, when `reason` (its error, for staff) says more. Returns how many."""
    count = 0
    for model in job_kinds():
        # the stage too: a part ended with a stage of its work ("the judge votes on 8 comparisons") read as at work
        shown = _failed_in() if status == Status.FAILED else Value(fit(stage or reason))
        kept = [part.pk for part in keep if isinstance(part, model)]
        count += model.objects.filter(part_of=job.key, status__in=ACTIVE).exclude(pk__in=kept).update(
            status=status, error=reason, finished=timezone.now(), log=_logged(reason), stage=shown)
    return count


def job_done(job: Job) -> int:
    return type(job).objects.values_list("done", flat=True).get(pk=job.pk)


class AlreadyActive(Exception):
    """The same job started again while an active one does the same (the same form sent twice, a request retried
    after its answer was lost): `job` is that one. Each kind raises it as its own error too (compare's, loop's)."""

    def __init__(self, message: str, job: Job):
        super().__init__(message)
        self.job = job


def one_start_at_a_time(lock: int) -> None:
    """Inside a transaction, before looking for an active job with the same settings (a twin: the same form sent
    twice): starts taking the same `lock` pass here one at a time until their transactions end, so two sent in the
    same instant cannot both find none. PostgreSQL: a transaction-scoped advisory lock (any number the project
    takes no other lock on). SQLite: every transaction is IMMEDIATE (prefloop/settings.py), one writer at a time."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock])


def queue_of(task_name: str) -> str:
    """The queue a task is sent to (settings.CELERY_TASK_ROUTES, by pattern; else the default queue)."""
    for pattern, route in settings.CELERY_TASK_ROUTES.items():
        if fnmatch.fnmatchcase(task_name, pattern):
            return route["queue"]
    return settings.CELERY_TASK_DEFAULT_QUEUE


def requeue_interrupted(queues: Iterable[str] | None = None) -> dict[str, list[int]]:
    """After a worker was lost: send every job it left running to the queue again (each kind resumes without
    duplicates, or fails once out of attempts), and end those it left stopping. Jobs run inside a loop run are
    left to that loop run, and those a command runs in its own process (part_of "foreground": `run_loop`,
    `evaluate`, and `generate_pairs`, `train_round` and `compare_versions` without --queue) to that process: no
    worker ran them, and one starting meanwhile resumed the run beside it, or ended it cancelled while the command
    stopped it. `queues`: only the kinds whose tasks go to these (the starting
    worker's own queues; a worker of another queue may be running its jobs right now). Returns the ids sent, by
    kind."""
    sent: dict[str, list[int]] = {}
    # the jobs inside a command's own job (run_loop's rounds) are that process's too: one it was stopping was ended
    # "worker lost" while the command still ran it
    owned = [job.key for kind in job_kinds() for job in kind.objects.filter(part_of=FOREGROUND, status__in=ACTIVE)]
    for model in job_kinds():
        if queues is not None and queue_of(model.task_name) not in set(queues):
            continue
        # one left stopping by a process that died: Cancel ends it once silent
        stopping = model.objects.filter(status=Status.CANCELLING).exclude(part_of=FOREGROUND).exclude(
            part_of__in=owned)
        for job in stopping:
            claim(model, job.pk)  # ends it cancelled
        running = model.objects.filter(status=Status.RUNNING, part_of="")
        ids = list(running.values_list("pk", flat=True))
        for pk in ids:
            task_named(model.task_name).apply_async((pk,))
        if ids:
            log.info("requeued %s %s after a lost worker", model.__name__, ids)
            sent[model.__name__] = ids
    return sent


class Tracker:
    """A running job's progress and stop signal, for callbacks deep inside the work (which know nothing of Django).

    `should_stop()` is cheap to call per decode step: it asks the database at most every CHECK_EVERY_S whether this
    job, or a job it runs inside (`parents`), was asked to stop. `report(...)` writes progress at most every
    WRITE_EVERY_S unless forced, and a new stage at once (a stage whose count alone changed, as progress).
    """

    def __init__(self, job: Job, *, parents: Iterable[Tracker] = ()):
        self.job, self.parents = job, list(parents)
        self._checked, self._stop, self._alive = 0.0, False, 0.0
        self._written = 0.0
        self._held: dict = {}  # counts and fields of throttled reports not written yet (flush)
        self._stage_name: str | None = None  # the name of the stage last written, when its text carries a count
        # What the last report said, written or throttled: a report of a stage alone passes it to the parents (the
        # last progress written, seconds old, moved a loop's bar back at each stage the job inside it named)
        self._progress = job.progress
        self._rate_from_claim = True  # until this attempt's first progress is written
        # Set by a job that runs others inside it: told each child report (fraction, stage), so its own bar moves.
        self.on_child: Callable[[float, str], None] | None = None
        # Set by a command running the job in the foreground: told each report (fraction, stage), written or
        # throttled, so its bar shows what the job's page shows (a count of steps or chunks stood still, or full,
        # through the work around them)
        self.on_report: Callable[[float, str], None] | None = None

    def should_stop(self, *, fresh: bool = False) -> bool:
        """Whether this job, or one it runs inside, was asked to stop. `fresh`: ask the database now, for this job and
        every parent, not at most every CHECK_EVERY_S."""
        if self._stop:
            return True
        now = time.monotonic()
        if fresh or now - self._checked >= CHECK_EVERY_S:
            self._checked = now
            if now - self._alive >= ALIVE_EVERY_S:  # a stage that writes no progress still shows its worker is alive
                self._alive = now
                type(self.job).objects.filter(pk=self.job.pk).update(alive_at=timezone.now())
            status = type(self.job).objects.values_list("status", flat=True).get(pk=self.job.pk)
            self._stop = status in (Status.CANCELLING, Status.CANCELLED)
        self._stop = self._stop or any(parent.should_stop(fresh=fresh) for parent in self.parents)
        return self._stop

    def check(self, *, fresh: bool = False) -> None:
        """Raise JobCancelled when the job was asked to stop. `fresh`: ask the database now, not at most every
        CHECK_EVERY_S: before a step that cannot be taken back (a trained round registering its version), where a
        Cancel pressed a moment earlier must still count, on this job or on a loop run it works inside."""
        if self.should_stop(fresh=fresh):
            raise JobCancelled

    def flush(self) -> None:
        """Write what the throttle held back, before the job's end is written: a training run stopped after its
        step 5, whose report came within a second of step 4's, said "cancelled after 4 of 8 steps" with 5 stored.
        The row only, while the job is active; the parents are not told (they may be stopping too)."""
        if self._held:
            held, self._held = self._held, {}
            type(self.job).objects.filter(pk=self.job.pk, status__in=ACTIVE).update(updated=timezone.now(), **held)
            for name in ("done", "total", "progress", "stage"):
                if name in held:
                    setattr(self.job, name, held[name])

    def tell_parents(self, progress: float, stage: str) -> None:
        """Pass (progress, stage) to the jobs this one runs inside, which show it, and to `on_report`; this job's own
        row is left alone (a finished job that still works for its parent, measuring say)."""
        if self.on_report:
            self.on_report(progress, stage)
        for parent in self.parents:
            if parent.on_child:
                parent.on_child(progress, stage)

    def report(self, *, done: int | None = None, total: int | None = None, progress: float | None = None,
               stage: str | None = None, stage_name: str | None = None, force: bool = False, **own) -> bool:
        """Record progress (throttled), with any of the kind's own fields (`own`); returns whether it was written.
        `stage_name`: the name of a `stage` whose text carries a count ("reading p.jsonl: 1,200 of 5,000 lines" of
        "reading p.jsonl"), told many times a second: a stage of another name is written at once, one whose count
        alone changed is held as progress is, until the next write or flush."""
        if progress is not None:
            self._progress = progress
        told = stage or self.job.stage
        now = time.monotonic()
        # A new stage is written at once: throttled, it was dropped, and the page named the stage before it for as
        # long as the new one ran without another report (loading a model, measuring a round). One whose count alone
        # changed is not new: its stage is told at every report, and each written at once undid the throttle.
        new_stage = stage is not None and fit(stage) != self.job.stage and (
            stage_name is None or stage_name != self._stage_name)
        if not force and not new_stage and now - self._written < WRITE_EVERY_S:
            self._held.update({name: value for name, value in (("done", done), ("total", total),
                                                               ("progress", progress)) if value is not None}, **own)
            if stage is not None and stage_name is not None:  # its count, written with the next write (or flush)
                self._held["stage"] = fit(stage)
            # told the stage the row says (the page's), not a count held back
            self.tell_parents(self._progress, self.job.stage if stage_name is not None else told)
            return False
        self._written = now
        fields: dict = {**self._held, "updated": timezone.now(), **own}
        self._held = {}
        if stage is None and "stage" in fields:  # a stage's count held back, written with this report
            self.job.stage = told = fields["stage"]
        if stage is not None:
            self._stage_name = stage_name
        if "claimed" in own:  # the job sets its own starting point (an import, once its rows are read)
            self._rate_from_claim = False
        elif self._rate_from_claim and progress is not None and progress > self.job.progress:
            self._rate_from_claim = False
            # this attempt's first progress: its rate is measured from here, not from the claim (loading a model,
            # reference log-probs, a warm start moved no bar, and counted as slow work made the estimate too long)
            fields["claimed"], fields["claimed_progress"] = fields["updated"], progress
            self.job.claimed, self.job.claimed_progress = fields["claimed"], progress
        for name, value in (("done", done), ("total", total), ("progress", progress), ("stage", stage)):
            if value is not None:
                fields[name] = fit(value) if name == "stage" else value
                setattr(self.job, name, fields[name])
        # only while the job is active: a worker alive after all once its job was ended for seeming lost (cancel) wrote
        # its next step's stage and progress over the ended row ("cancelled" reading "training")
        type(self.job).objects.filter(pk=self.job.pk, status__in=ACTIVE).update(**fields)
        # the parents are told after this job's own row is written: a parent cancelled meanwhile raises JobCancelled
        # from here, and told first, it left the row behind what was stored (a training run read "cancelled before
        # any of its steps" with a step stored, and the loop's stage named the step before)
        self.tell_parents(self._progress, told)
        return True
