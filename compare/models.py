"""Blind side-by-side comparisons of two model versions, and the votes on them."""
from django.conf import settings
from django.db import models

from annotate.models import CHOICES


class Comparison(models.Model):
    """Two versions' answers to one prompt, with the side each is shown on."""

    prompt = models.ForeignKey("generation.Prompt", on_delete=models.CASCADE, related_name="comparisons")
    response_a = models.ForeignKey("generation.Response", on_delete=models.CASCADE, related_name="+")
    response_b = models.ForeignKey("generation.Response", on_delete=models.CASCADE, related_name="+")
    left_is_a = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

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
