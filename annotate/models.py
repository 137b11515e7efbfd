"""Pairs waiting for labels, who is looking at which pair, and the labels people (and judges) give."""
from pathlib import Path

from django.conf import settings
from django.db import connection, models
from django.db.models import Q

from jobs.models import Job
from prefcore.outcomes import BOTH_BAD, LEFT, OUTCOME_LABELS, RIGHT, SIDE_LABELS, TIE, A, B  # noqa: F401

CHOICES = list(OUTCOME_LABELS.items())
SIDES = list(SIDE_LABELS.items())
MAX_ID = 2**63 - 1  # ids are 64-bit (BigAutoField)
from prefcore.rows import MAX_NUMBER  # noqa: E402,F401  (round numbers and counts: 32-bit on PostgreSQL)


class QueueOrder(models.TextChoices):
    """Which of a round's open pairs people are given first (annotate/selection.py scores what the orders read)."""

    RANDOM = "random", "random (oldest first)"
    UNCERTAIN = "uncertain", "uncertain: smallest implicit-reward margin first"
    DISAGREEMENT = "disagreement", "disagreement: where a judge and the current version disagree first"


class Route(models.TextChoices):
    """Where a pair's decision comes from (annotate/routing.py); empty for a pair no routing looked at."""

    NONE = "", "not routed"
    PEOPLE = "people", "sent to people"
    JUDGE = "judge", "the judge's label accepted"
    DUPLICATE = "duplicate", "held back: near-duplicate answers"


class LabellingRound(models.Model):
    """A labelling round: a batch of pairs put to people under one set of guidelines, with how many labels each of
    its pairs needs, the order its queue is served in, how pairs are routed between a judge and people, and when its
    labelling closes.

    Not a training round: `ModelVersion.round` counts versions, a `TrainingRun` makes one, and a loop round is one
    pass of generate-label-train-compare. Pairs sampled from version N land in labelling round N + 1."""

    number = models.PositiveIntegerField(unique=True)
    guidelines = models.TextField(blank=True)
    labels_per_pair = models.PositiveIntegerField(default=1)
    gold_rate = models.FloatField(default=0.0, help_text="Share of served pairs that are gold pairs.")
    queue_order = models.CharField(max_length=20, choices=QueueOrder.choices, default=QueueOrder.RANDOM)
    route_judge = models.CharField(
        max_length=300, blank=True,
        help_text="A judge path (as its labels are stored, e.g. judges.rules:length_target): route this round's "
                  "pairs between it and people. Empty: no routing.",
    )
    route_threshold = models.FloatField(
        default=0.8, help_text="People label a pair when the judge's agreement with people on its prompt tag (lower "
                               "bound of the 95% Wilson interval) is below this; above it the judge's label stands.",
    )
    audit_share = models.FloatField(
        default=0.1, help_text="Share of the pairs the judge would decide that people label anyway, for auditing.",
    )
    close_width = models.FloatField(
        null=True, blank=True,
        help_text="Close labelling once the held-out reward-accuracy 95% interval after training is narrower "
                  "than this (e.g. 0.15). Empty: never closes by itself.",
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_reason = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["number"]
        verbose_name = "labelling round"

    def __str__(self) -> str:
        return f"round {self.number}"


class Pair(models.Model):
    GENERATED, IMPORTED, GOLD = "generated", "imported", "gold"
    prompt = models.ForeignKey("generation.Prompt", on_delete=models.CASCADE, related_name="pairs")
    response_a = models.ForeignKey("generation.Response", on_delete=models.CASCADE, related_name="pairs_as_a")
    response_b = models.ForeignKey("generation.Response", on_delete=models.CASCADE, related_name="pairs_as_b")
    origin = models.CharField(
        max_length=20, choices=[(GENERATED, "generated"), (IMPORTED, "imported"), (GOLD, "gold")], default=GENERATED
    )
    round = models.ForeignKey(LabellingRound, null=True, blank=True, on_delete=models.SET_NULL, related_name="pairs")
    job = models.ForeignKey(
        "generation.GenerationJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="pairs"
    )
    labels_needed = models.PositiveIntegerField(default=1)
    labels_done = models.PositiveIntegerField(default=0, db_index=True)
    is_gold = models.BooleanField(default=False)
    gold_choice = models.CharField(max_length=10, choices=CHOICES, blank=True)
    margin = models.FloatField(
        null=True, blank=True,
        help_text="Implicit-reward margin beta*[(log pi - log pi_ref)(a) - (log pi - log pi_ref)(b)] under "
                  "margin_version against its base; > 0: that version prefers a.",
    )
    margin_version = models.ForeignKey(
        "generation.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The version the margin was scored under.",
    )
    route = models.CharField(max_length=10, choices=Route.choices, default=Route.NONE, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    def clean(self) -> None:
        """What the admin may save: two different answers, both to the pair's own prompt (the importers and the
        sampler only ever make such pairs; a pair of one answer twice, or of another prompt's, trains on nonsense),
        and a gold answer, a or b, exactly when the pair is gold, as the rounds page sets them (annotate.rounds.
        set_gold): the admin saved a gold pair answered "tie" or not at all, which no label can match, and an answer
        on a pair that is not gold."""
        from django.core.exceptions import ValidationError

        if self.is_gold and self.gold_choice not in (A, B):
            got = f"got {self.gold_choice!r}" if self.gold_choice else "it has none"
            raise ValidationError({"gold_choice": f"a gold pair's answer is a or b ({got}): pick the answer people "
                                                  "should choose, or untick is gold"})
        if not self.is_gold and self.gold_choice:
            raise ValidationError({"gold_choice": f"only a gold pair has a gold answer (got {self.gold_choice!r}): "
                                                  "tick is gold, or clear the answer"})
        if not (self.prompt_id and self.response_a_id and self.response_b_id):
            return
        if self.response_a_id == self.response_b_id:
            raise ValidationError({"response_b": "a pair needs two different answers"})
        for name in ("response_a", "response_b"):
            if getattr(self, name).prompt_id != self.prompt_id:
                raise ValidationError({name: f"this answer is to prompt {getattr(self, name).prompt_id}, not to the "
                                             f"pair's prompt {self.prompt_id}"})

    class Meta:
        constraints = [models.UniqueConstraint(fields=["response_a", "response_b"], name="one_pair_per_responses")]
        indexes = [
            models.Index(fields=["labels_done", "created"]),
            # The labelling queue: open regular pairs in serving order, so leasing never scans finished pairs.
            models.Index(
                fields=["round", "created"], name="pair_open_queue",
                condition=models.Q(is_gold=False, labels_done__lt=models.F("labels_needed")),
            ),
        ]

    def __str__(self) -> str:
        return f"pair {self.pk}"


UPDATE_BATCH = 1000  # ids per UPDATE of update_pairs (fewer where the database allows fewer parameters)


def in_lock_order(rows: models.QuerySet, field: str = "pk") -> models.QuerySet:
    """rows ordered by `field`, and, where the database has row locks, locked as they are read until the transaction
    ends (FOR NO KEY UPDATE: a row added meanwhile that refers to one of them does not wait). Every writer that holds
    several rows of a table at once takes them in one order, this one: an import labelling its pairs in file order
    and a round's update of its pairs in scan order each held one the other wanted, and PostgreSQL ended one with a
    deadlock error. SQLite has no row locks and needs none: one writer at a time holds the whole database."""
    rows = rows.order_by(field)
    if connection.features.has_select_for_no_key_update:
        rows = rows.select_for_update(no_key=True, of=("self",))
    return rows


def lock_pairs(pairs: models.QuerySet) -> list[int]:
    """Lock these pairs in id order (in_lock_order), all in one query; returns their ids."""
    return list(in_lock_order(pairs).values_list("pk", flat=True))


def update_pairs(pairs: models.QuerySet, **changes) -> int:
    """pairs.update(**changes), the pairs taken in id order (lock_pairs) and only those locked changed: an UPDATE
    takes its rows in scan order, and one repeating the filter after the lock could take a pair that joined it
    meanwhile. Inside a transaction."""
    ids = lock_pairs(pairs)
    # under the database's limit of query parameters (999 in SQLite before 3.32), with room for the changes' own
    limit = connection.features.max_query_params
    batch = min(UPDATE_BATCH, limit - 50) if limit else UPDATE_BATCH
    return sum(Pair.objects.filter(pk__in=ids[i:i + batch]).update(**changes) for i in range(0, len(ids), batch))


class Assignment(models.Model):
    """One annotator's lease on one pair, with the sides it was shown on. Never two for the same pair and person, and
    one open (leased) at most per person: the database refuses a second however many of their requests race."""

    LEASED, DONE, SKIPPED, EXPIRED = "leased", "done", "skipped", "expired"
    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    left_is_a = models.BooleanField()
    state = models.CharField(
        max_length=10,
        choices=[(LEASED, "leased"), (DONE, "done"), (SKIPPED, "skipped"), (EXPIRED, "expired")],
        default=LEASED,
    )
    leased_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    # The labelling round the pair was served in, when that is not its own: a gold pair of no round, drawn into a
    # round's queue, is shown as that round's (its number, its guidelines), or it stood out before it was answered.
    served_in = models.ForeignKey(LabellingRound, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    @property
    def shown_round(self) -> LabellingRound | None:
        """The round the person is shown this pair as part of."""
        return self.served_in or self.pair.round

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pair", "annotator"], name="one_assignment_per_person"),
            models.UniqueConstraint(fields=["annotator"], condition=models.Q(state="leased"), name="one_open_lease_per_person"),
        ]
        indexes = [models.Index(fields=["pair", "state", "expires_at"]), models.Index(fields=["annotator", "state"])]


# People's labels: neither a judge's nor a file's. The import account records an imported preference as a label,
# and it is no one's judgement here: in people's agreement it counted as one more person, and against a judge as
# people's majority (the trust routing gives the judge, and the weight of its labels in training).
BY_PEOPLE = Q(is_automatic=False) & ~Q(annotator__annotator_profile__is_import=True)


class Label(models.Model):
    """A decision on a pair. `choice` is in terms of the stored responses; `side` is the key as pressed."""

    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="labels")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="labels")
    choice = models.CharField(max_length=10, choices=CHOICES)
    side = models.CharField(max_length=10, choices=SIDES)
    left_is_a = models.BooleanField()
    strength = models.CharField(max_length=10, choices=[("slight", "slight"), ("clear", "clear")], blank=True)
    preference_prob = models.FloatField(null=True, blank=True)
    comment = models.TextField(blank=True)
    seconds = models.FloatField(null=True, blank=True, help_text="Time from showing the pair to the label.")
    is_automatic = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["pair", "annotator"], name="one_label_per_person")]

    def clean(self) -> None:
        """What the admin may save: a probability from 0 to 1 and a time of 0 seconds or more, finite."""
        import math

        from django.core.exceptions import ValidationError

        problems = {}
        if self.preference_prob is not None and not (math.isfinite(self.preference_prob)
                                                     and 0 <= self.preference_prob <= 1):
            problems["preference_prob"] = f"a probability is from 0 to 1 (got {self.preference_prob})"
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds >= 0):
            problems["seconds"] = f"a time is 0 seconds or more (got {self.seconds})"
        if problems:
            raise ValidationError(problems)

    def __str__(self) -> str:
        return f"{self.annotator} on pair {self.pair_id}: {self.choice}"


class AnnotatorProfile(models.Model):
    """Marks an account as an automatic labeller (a judge), or as the account that owns imported labels."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="annotator_profile")
    is_automatic = models.BooleanField(default=False)
    judge_path = models.CharField(max_length=300, blank=True)
    is_import = models.BooleanField(default=False, help_text="Owns labels imported from preference files.")


class ImportJob(Job):
    """A file uploaded on the import page, imported by a worker (annotate.importers: checked whole, then written
    CHUNK_ROWS rows a transaction); the upload is kept under settings.IMPORTS_DIR until the job ends."""

    PROMPTS, PAIRS, PREFERENCES = "prompts", "pairs", "preferences"
    KINDS = [(PROMPTS, "prompts"), (PAIRS, "unlabelled pairs"), (PREFERENCES, "labelled preferences")]
    unit = "rows"
    task_name = "annotate.tasks.run_import_job"
    start_again = "upload the file again"  # its upload is not kept for a job that never started

    kind = models.CharField(max_length=12, choices=KINDS)
    file_name = models.CharField(max_length=255, help_text="The uploaded file's name, as people see it.")
    path = models.CharField(max_length=1000, help_text="Where the upload is kept until the job ends.")
    options = models.JSONField(default=dict, blank=True, help_text="split, tag, format, round: the form's choices.")
    added = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0, help_text="Rows already present.")
    set_aside = models.JSONField(default=list, blank=True, help_text="Lines set aside: their prompt is an eval prompt.")
    disagreeing = models.JSONField(default=list, blank=True,
                                   help_text="Lines that disagree with a label imported before (that label is kept).")
    same_answers = models.JSONField(default=list, blank=True,
                                    help_text="Lines not added: both answers are the same text.")
    held_back = models.JSONField(default=list, blank=True,
                                 help_text="Lines added but held back from people: their two answers are nearly the "
                                           "same.")
    problems = models.JSONField(default=list, blank=True, help_text="The file's bad rows (up to 50), when it had any.")
    problem_count = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"import {self.pk} ({self.file_name})"

    @property
    def summary(self) -> str:
        """What it stored, as the import commands word it ("3 added, 1 already present, ...")."""
        from .importers import ImportResult  # importers imports this module

        return str(ImportResult(self.added, self.skipped, tuple(self.set_aside), tuple(self.disagreeing),
                                tuple(self.same_answers), tuple(self.held_back)))


class ExportJob(Job):
    """The decided pairs written as a file by a worker (annotate.export_jobs), with the export page's options; the
    file is kept under settings.EXPORTS_DIR, in a folder of the job's own, until the job is deleted."""

    unit = "rows"
    task_name = "annotate.tasks.run_export_job"
    start_again = "start the export again"
    left_when_lost = "nothing was kept; start the export again for the file"  # its folder is swept (export_jobs)

    format = models.CharField(max_length=10, help_text="jsonl, parquet, or hf (a Hugging Face data set, zipped).")
    round_number = models.PositiveIntegerField(null=True, blank=True, help_text="Only this labelling round (empty: all).")
    min_agreement = models.FloatField(null=True, blank=True)
    include_automatic = models.BooleanField(default=True, help_text="Judge labels counted beside people's.")
    soft_labels = models.BooleanField(default=False)
    license = models.CharField(max_length=100, help_text="For hf: the dataset card's licence field.")
    path = models.CharField(max_length=1000, help_text="Where the file is written and kept, under the exports folder.")

    def __str__(self) -> str:
        return f"export {self.pk} ({self.format})"

    @property
    def file_name(self) -> str:
        """The name the download is saved under."""
        return Path(self.path).name
