"""Blind side-by-side comparisons of two model versions, and the votes on them."""
from django.conf import settings
from django.db import models

from annotate.models import CHOICES
from jobs.models import Job


class CompareJob(Job):
    """Versions A and B answering a prompt set: queued, answered by a worker, then voted on (blind) or viewed."""

    unit = "answers"
    task_name = "compare.tasks.answer_compare_job"
    version_a = models.ForeignKey("generation.ModelVersion", on_delete=models.PROTECT, related_name="+")
    version_b = models.ForeignKey("generation.ModelVersion", on_delete=models.PROTECT, related_name="+")
    prompt_ids = models.JSONField(default=list, help_text="The prompts both versions answer, in order.")
    blind = models.BooleanField(default=True, help_text="Hide which answer is which version until the vote.")
    params = models.JSONField(default=dict, blank=True, help_text="Sampling settings and seed.")

    class Meta(Job.Meta):
        verbose_name = "comparison set"  # as the pages name it: in the admin, a 404 and the jobs' messages

    def __str__(self) -> str:
        return f"comparison set {self.pk}"


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
