"""Training rounds, their per-step metrics, and cached reference log-probs."""
from django.db import models

from jobs.models import Job


class TrainingRun(Job):
    """One round of DPO from an input version on the decided pairs; done/total count optimiser steps."""

    unit = "steps"
    task_name = "training.tasks.run_training"
    max_attempts = 2  # a run cannot resume part-way: a run whose worker died is started once more, then failed
    REF_BASE, REF_START = "base", "start"
    DATA_ALL, DATA_NEW, DATA_REPLAY, DATA_SPIN = "all", "new", "replay", "spin"
    params = models.JSONField(default=dict, blank=True, help_text="DPOConfig fields; missing ones take defaults.")
    reference_choice = models.CharField(
        max_length=10, choices=[(REF_BASE, "base (SFT) model"), (REF_START, "the round's starting model")],
        default=REF_BASE,
    )
    data_choice = models.CharField(
        max_length=10, default=DATA_ALL,
        choices=[(DATA_ALL, "every label so far"), (DATA_NEW, "only the labels of the starting version's labelling round"),
                 (DATA_REPLAY, "the starting version's labelling round and as many pairs of other rounds, drawn at "
                               "random"),
                 (DATA_SPIN, "SPIN: prompts' reference answers over the starting version's own answers, no labels")],
        help_text="'new': train on the pairs of the starting version's labelling round (its round + 1: the pairs "
                  "it sampled, those any version of its round sampled, such as a candidate the gate kept out, and "
                  "those pushed into that round; iterative DPO); 'all': on every decided pair; 'replay': on the new "
                  "pairs and as many of other rounds' drawn at random (a cost that stays "
                  "flat); 'spin': self-play (SPIN): each train prompt's reference answer is chosen over each answer "
                  "the starting version sampled for it.",
    )
    input_version = models.ForeignKey(
        "generation.ModelVersion", on_delete=models.PROTECT, related_name="training_runs_started"
    )
    reference_version = models.ForeignKey(
        "generation.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="training_runs_referenced"
    )
    output_version = models.OneToOneField(
        "generation.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="made_by_run"
    )
    pairs = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True, help_text="Summary: mean loss, final accuracy, ...")

    class Decision(models.TextChoices):
        NONE = "", "no version yet"
        CANDIDATE = "candidate", "candidate: not yet checked"
        KEPT = "kept", "kept out: did not pass the gate"
        PROMOTED = "promoted", "promoted: passed the gate"
        BY_HAND = "by_hand", "promoted by hand"

    decision = models.CharField(max_length=10, choices=Decision.choices, default=Decision.NONE, blank=True,
                                help_text="What became of the round's version (the promotion gate).")
    gate = models.JSONField(default=dict, blank=True,
                            help_text="The last gate check: rule, evidence (votes, interval, lengths), reasons.")
    decided_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True, help_text="Why a staff member promoted the version by hand.")

    class Meta(Job.Meta):
        constraints = [
            # A second round cannot start on the same input while one is queued, running or still stopping.
            models.UniqueConstraint(
                fields=["input_version"], condition=models.Q(status__in=["queued", "running", "cancelling"]),
                name="one_active_run_per_input",
            )
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"

    @property
    def step(self) -> int:
        """The optimiser steps taken (the dashboards' word for `done`)."""
        return self.done

    @property
    def total_steps(self) -> int:
        return self.total


class TrainingStep(models.Model):
    """Metrics of one optimiser step, for the curves."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="steps")
    step = models.PositiveIntegerField()
    data = models.JSONField()

    class Meta:
        ordering = ["step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="one_row_per_step")]


class ReferenceLogp(models.Model):
    """log pi_ref(response | prompt), computed once per (response, reference version, max length, dtype)."""

    response = models.ForeignKey("generation.Response", on_delete=models.CASCADE, related_name="reference_logps")
    reference = models.ForeignKey("generation.ModelVersion", on_delete=models.CASCADE, related_name="+")
    max_length = models.PositiveIntegerField()
    dtype = models.CharField(
        max_length=16, default="",
        help_text="The dtype the trainer computed it in, with the computation (training.dataset.cache_key: "
                  "'bfloat16/h3'); values under another key (empty: before dtypes were recorded) are not reused.",
    )
    logp = models.FloatField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["response", "reference", "max_length", "dtype"], name="one_ref_logp_per_dtype")
        ]
