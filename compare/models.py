"""Blind side-by-side comparisons of two model versions, and the votes on them."""
from django.conf import settings
from django.db import models

from annotate.models import CHOICES


class CompareJob(models.Model):
    """Versions A and B answering a prompt set: queued, answered by a worker, then voted on (blind) or viewed."""

    QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
    STATUSES = [(s, s) for s in (QUEUED, RUNNING, SUCCEEDED, FAILED)]
    version_a = models.ForeignKey("generation.ModelVersion", on_delete=models.PROTECT, related_name="+")
    version_b = models.ForeignKey("generation.ModelVersion", on_delete=models.PROTECT, related_name="+")
    prompt_ids = models.JSONField(default=list, help_text="The prompts both versions answer, in order.")
    blind = models.BooleanField(default=True, help_text="Hide the versions' names until the vote.")
    params = models.JSONField(default=dict, blank=True, help_text="Sampling settings and seed.")
    status = models.CharField(max_length=12, choices=STATUSES, default=QUEUED, db_index=True)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"comparison set {self.pk}"

    @property
    def is_active(self) -> bool:
        return self.status in (self.QUEUED, self.RUNNING)

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0


class Comparison(models.Model):
    """Two versions' answers to one prompt, with the side each is shown on."""

    job = models.ForeignKey(CompareJob, null=True, blank=True, on_delete=models.CASCADE, related_name="comparisons")
    prompt = models.ForeignKey("generation.Prompt", on_delete=models.CASCADE, related_name="comparisons")
    response_a = models.ForeignKey("generation.Response", on_delete=models.CASCADE, related_name="+")
    response_b = models.ForeignKey("generation.Response", on_delete=models.CASCADE, related_name="+")
    left_is_a = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "prompt"], name="one_comparison_per_job_prompt")]

    @property
    def version_a(self):
        return self.response_a.version

    @property
    def version_b(self):
        return self.response_b.version


class Vote(models.Model):
    """An outcome for a comparison: a (response A's version) wins, b wins, tie, or both bad."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="votes")
    voter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="votes")
    outcome = models.CharField(max_length=10, choices=CHOICES)
    is_automatic = models.BooleanField(default=False)
    judge = models.CharField(max_length=300, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["comparison", "voter"], name="one_vote_per_person")]
