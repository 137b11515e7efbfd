"""Headless loop runs: several rounds of generate → judge-label → train → evaluate, started from the admin."""
from django.conf import settings
from django.db import models


class LoopRun(models.Model):
    """R rounds of P pairs labelled by one judge; each round's figures are appended to `results` as it ends."""

    QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
    STATUSES = [(s, s) for s in (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)]
    status = models.CharField(max_length=12, choices=STATUSES, default=QUEUED, db_index=True)
    rounds = models.PositiveIntegerField(default=1)
    pairs = models.PositiveIntegerField(default=48, help_text="Pairs generated and labelled per round.")
    judge = models.CharField(max_length=300, help_text='The judge, as "package.module:attr".')
    tag = models.CharField(max_length=100, blank=True, help_text="Only prompts with this tag (empty: all).")
    eval_limit = models.PositiveIntegerField(default=64, help_text="Eval prompts each new version answers.")
    seed = models.PositiveIntegerField(default=0)
    params = models.JSONField(default=dict, blank=True, help_text="Training, sampling and pairing settings.")
    stage = models.CharField(max_length=20, blank=True)
    progress = models.FloatField(default=0.0)
    results = models.JSONField(default=list, blank=True, help_text="One object per finished round.")
    error = models.TextField(blank=True)
    log = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"loop run {self.pk} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in (self.QUEUED, self.RUNNING)

    @property
    def rounds_done(self) -> int:
        return len(self.results or [])

    @property
    def percent(self) -> int:
        return round(100 * self.progress)
