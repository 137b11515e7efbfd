"""The abstract job every long piece of work inherits: its status, progress, log, error, timestamps and who started it.

GenerationJob, TrainingRun, CompareJob and LoopRun add only their own fields; `jobs.lifecycle` moves them through
their states, and `templates/jobs/_progress.html` shows any of them.
"""
from __future__ import annotations

import math

from django.conf import settings
from django.db import models
from django.utils import timezone

from .runner import gone as runner_gone

# A running job writes its progress every few seconds (a training step, a chunk of a decode, a stage): this long
# without a write, its page says so instead of an estimate that no longer means anything.
SILENT_AFTER_S = 300
# part_of of a job the calling process runs itself (a command without --queue, run_loop, evaluate, a benchmark): no
# worker resumes it; Cancel stops it, or ends it once it has been silent for SILENT_AFTER_S.
FOREGROUND = "foreground"


class Status(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling", "cancelling"  # asked to stop; the worker stops within seconds and says what it kept
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (Status.QUEUED, Status.RUNNING, Status.CANCELLING)
ENDED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


class Job(models.Model):
    """A unit of long work a worker runs: queued, running (with progress), then succeeded, failed or cancelled.

    `done`/`total` count the kind's own units (prompts, steps, answers, rounds: `unit`); `progress` is the finer
    fraction in [0, 1] the bar shows, written while a unit is in flight (tokens sampled, judge calls made).
    """

    Status = Status
    QUEUED, RUNNING, CANCELLING = Status.QUEUED, Status.RUNNING, Status.CANCELLING
    SUCCEEDED, FAILED, CANCELLED = Status.SUCCEEDED, Status.FAILED, Status.CANCELLED
    unit = "units"  # what done/total count, in the plural, for the progress partial
    task_name = ""  # the Celery task that runs a job of this kind, by name (routing: CELERY_TASK_ROUTES)
    start_again = "start it again"  # what a person does to run a job again that never started (lifecycle.enqueue)
    left_when_lost = "what it stored before stays"  # said of a job cancelled at once, its worker lost (lifecycle.cancel)
    max_attempts = 3  # workers lost during one job before it is marked failed instead of resumed again

    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    stage = models.CharField(max_length=200, blank=True, help_text="What the job is doing now, in words.")
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    progress = models.FloatField(default=0.0, help_text="Fraction of the work done, 0 to 1.")
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker started this job.")
    error = models.TextField(blank=True)
    log = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    # The rate behind the time-left estimate: progress made since this attempt began, over the time it took.
    claimed = models.DateTimeField(null=True, blank=True, help_text="When the current attempt began.")
    claimed_progress = models.FloatField(default=0.0)
    updated = models.DateTimeField(null=True, blank=True, help_text="When progress was last written.")
    alive_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When its worker last showed it was alive: it asks whether to stop every second or so, and says so "
                  "at most every half minute, in stages that write no progress too (loading, reference log-probs).")
    part_of = models.CharField(
        max_length=80, blank=True, db_index=True,
        help_text="The job this one runs inside (app_label.model:pk): that job resumes or ends it, not the queue.",
    )

    runner = models.CharField(
        max_length=160, blank=True, default="", db_default="",  # a release before it inserts rows without it
        help_text="The command's process that runs this job in the foreground (host, boot id, PID namespace, "
                  "pid, start time: jobs.runner); empty for a worker's. Once it is gone, the job is ended.")

    class Meta:
        abstract = True
        ordering = ["-created"]

    @property
    def key(self) -> str:
        """This job's name in another job's `part_of`."""
        return f"{self._meta.label_lower}:{self.pk}"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def percent(self) -> int:
        """Whole percent done, rounded down: 99.6% of a running job is 99%, never 100% before it ends (nor while it
        works past its last counted unit: measuring a trained version, judging the answers it collected)."""
        shown = math.floor(100 * min(1.0, max(0.0, self.progress)) + 1e-9)
        return min(shown, 99) if self.status in ACTIVE else shown

    @property
    def runner_gone(self) -> bool:
        """A foreground job whose command's process is certainly gone (killed outright): see jobs.runner."""
        return self.status in ACTIVE and bool(self.runner) and runner_gone(self.runner)

    @property
    def cancellable(self) -> bool:
        """Whether its page offers Cancel: while active, and while stopping only when nothing else will end it (its
        worker silent for minutes, or its command's process gone)."""
        return self.status in ACTIVE and (self.status != Status.CANCELLING or bool(self.silent_seconds)
                                          or self.runner_gone)

    @property
    def silent_seconds(self) -> float | None:
        """How long a running (or stopping) job has given no sign of its worker (no progress written, no check for a
        stop), once that is over SILENT_AFTER_S: its worker may be gone. None otherwise."""
        last = max((t for t in (self.updated, self.claimed, self.alive_at) if t is not None), default=None)
        if self.status not in (Status.RUNNING, Status.CANCELLING) or last is None:
            return None
        silent = (timezone.now() - last).total_seconds()
        return silent if silent > SILENT_AFTER_S else None

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate measured in this attempt; None until a rate is known, while it is silent, and once
        the estimate has run out or the counted units are done (the stage then says what it is doing): "about 0 s
        left" stayed up for as long as a round was measured."""
        if self.status != Status.RUNNING or not (self.claimed and self.updated) or self.silent_seconds is not None:
            return None
        made, spent = self.progress - self.claimed_progress, (self.updated - self.claimed).total_seconds()
        if made <= 0 or spent <= 0 or self.progress >= 1.0:
            return None
        left = spent * (1.0 - self.progress) / made - (timezone.now() - self.updated).total_seconds()
        return left if left > 0 else None
