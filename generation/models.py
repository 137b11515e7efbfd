"""Model versions, prompts, sampled responses and the jobs that sample them."""
from __future__ import annotations

import hashlib
import json
import unicodedata

from django.db import models

from jobs.models import Job

from .length import is_truncated


class ModelVersionQuerySet(models.QuerySet):
    def current(self) -> ModelVersion | None:
        """The version that samples the next round (at most one: a database constraint), or None before bootstrap."""
        return self.filter(is_current=True).first()


class ModelVersion(models.Model):
    """A model the loop can sample from: the base, or a round's output (full checkpoint or LoRA adapter)."""

    FULL, LORA = "full", "lora"
    name = models.CharField(max_length=100, unique=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    round = models.PositiveIntegerField(default=0)
    path = models.CharField(max_length=500, help_text="Folder of the safetensors checkpoint or adapter.")
    kind = models.CharField(max_length=10, choices=[(FULL, "full checkpoint"), (LORA, "LoRA adapter")], default=FULL)
    base = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="adapters",
        help_text="For an adapter: the full model it applies to.",
    )
    size_bytes = models.BigIntegerField(default=0)
    is_current = models.BooleanField(default=False)
    mean_response_tokens = models.FloatField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    objects = ModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ["round", "created"]
        constraints = [
            models.UniqueConstraint(fields=["is_current"], condition=models.Q(is_current=True), name="one_current_version")
        ]

    def __str__(self) -> str:
        return self.name

    def lineage(self) -> list[ModelVersion]:
        """Base first, this version last. A chain that comes back to a version already in it (saved before clean()
        refused one) ends there: following it looped forever and every page listing versions hung."""
        chain, seen, node = [], set(), self
        while node is not None and node.pk not in seen:
            chain.append(node)
            if node.pk is not None:
                seen.add(node.pk)
            node = node.parent
        return list(reversed(chain))

    def clean(self) -> None:
        """A version's parent is an earlier version, never itself or one of its own descendants (the lineage would be
        a loop); an adapter names the full checkpoint it applies to, and only an adapter names one."""
        from django.core.exceptions import ValidationError

        problems: dict[str, str] = {}
        node, steps = self.parent, 0
        while node is not None and steps <= ModelVersion.objects.count():
            if self.pk is not None and node.pk == self.pk:
                problems["parent"] = (f"{self.parent.name!r} is {self.name!r} itself or descends from it: a version's "
                                      "parent must be one it was trained from, so the lineage cannot loop")
                break
            node, steps = node.parent, steps + 1
        if self.kind == self.LORA:
            if self.base is None:
                problems["base"] = "a LoRA adapter needs the full checkpoint it applies to"
            elif self.base.kind != self.FULL or (self.pk is not None and self.base.pk == self.pk):
                problems["base"] = f"{self.base.name!r} is not a full checkpoint: an adapter applies to one"
        elif self.base is not None:
            problems["base"] = "only a LoRA adapter has a base: leave it empty for a full checkpoint"
        if problems:
            raise ValidationError(problems)


class VersionChange(models.Model):
    """One change of the current version: promoted by the gate, promoted by hand, or rolled back; who and why."""

    class Action(models.TextChoices):
        GATE = "gate", "promoted: passed the gate"
        BY_HAND = "by_hand", "promoted by hand"
        ROLLBACK = "rollback", "rolled back"

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="changes")
    previous = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=10, choices=Action.choices)
    user = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_action_display()}: {self.version}"


def normalised_hash(text_or_messages) -> str:
    """A prompt's identity: its text with case folded, runs of whitespace as one space and Unicode in its composed
    form (NFC), so the same words cased, spaced or encoded two ways are one prompt. Compatibility forms count:
    folding them (NFKC) made "What is 2³?" and "What is 23?" one prompt, and an import gave one row's answers to the
    other's text."""
    if not isinstance(text_or_messages, str):
        text_or_messages = json.dumps(text_or_messages, sort_keys=True, ensure_ascii=False)
    text = unicodedata.normalize("NFC", text_or_messages).casefold()
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


def _json_kind(value) -> str:
    """What a JSON value is, in the words of JSON, for a form's error."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "an object" if isinstance(value, dict) else "a list"


class PromptQuerySet(models.QuerySet):
    def for_eval(self, split: str = "eval") -> PromptQuerySet:
        """The prompts an evaluation answers, oldest first: the split's prompts without those typed on the compare
        page (they are eval prompts so no round trains on them, but not part of the fixed eval set)."""
        return self.filter(split=split).exclude(tag=Prompt.TYPED_TAG).order_by("pk")


class Prompt(models.Model):
    TRAIN, EVAL = "train", "eval"
    TYPED_TAG = "compare-typed"  # prompts typed on the compare page
    text = models.TextField(help_text="The prompt as plain text (the last user turn for a chat).")
    messages = models.JSONField(null=True, blank=True, help_text="A chat as a list of {role, content}, if any.")
    split = models.CharField(max_length=10, choices=[(TRAIN, "train"), (EVAL, "eval")], default=TRAIN, db_index=True)
    source = models.CharField(max_length=200, blank=True)
    tag = models.CharField(max_length=100, blank=True, db_index=True)
    hash = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    objects = PromptQuerySet.as_manager()

    def __str__(self) -> str:
        return self.text[:80]

    @property
    def as_input(self):
        """What the chat template takes: the message list, or the text as one user turn."""
        return self.messages if self.messages else self.text

    def clean(self) -> None:
        """A chat is what the importers take (prefcore.rows.prompt_row): a non-empty list of {role, content}
        messages with text content, ending with a user turn. Anything else typed in the admin (a content that is a
        number, a list of numbers, an object) was stored, and the label page and POST /api/v1/label/next answered
        500 to every annotator that pair was served to."""
        from django.core.exceptions import ValidationError

        from prefcore.rows import RowError, prompt_row

        if self.messages is None:  # no chat: the text is the prompt
            self._clean_unique()
            return
        try:
            if not isinstance(self.messages, list):  # prompt_row would read a string as a text prompt
                raise RowError("messages", "expected a non-empty list of {role, content} messages, got "
                                           f"{_json_kind(self.messages)}")
            prompt_row(0, self.messages, "messages")
        except RowError as exc:
            raise ValidationError({"messages": f"{exc.message}."}) from None
        self._clean_unique()

    def _clean_unique(self) -> None:
        """The same prompt (up to case, Unicode form and whitespace) stored twice is refused as a form error, where
        the database's unique hash answered with an error page."""
        from django.core.exceptions import ValidationError

        other = (Prompt.objects.filter(hash=normalised_hash(self.messages or self.text)).exclude(pk=self.pk)
                 .values_list("pk", flat=True).first())
        if other is not None:  # not by field: the field can be read-only on the form (an answered prompt's text)
            raise ValidationError(f"{'This chat' if self.messages else 'This text'} is prompt {other}'s already "
                                  "(compared ignoring case, runs of whitespace and how Unicode composes accents).")

    @property
    def chat(self) -> list[dict]:
        """The chat to show an annotator: the stored messages when they are a chat clean() accepts, else the text as
        one user turn. A prompt stored before clean() checked its messages (or written around it) then shows its
        text, where the label page and the labelling API failed with a 500."""
        from prefcore.rows import RowError, prompt_row

        if isinstance(self.messages, list) and self.messages:
            try:
                return prompt_row(0, self.messages, "messages").messages
            except RowError:
                pass
        return [{"role": "user", "content": self.text}]

    def save(self, *args, **kwargs):
        # always from the prompt itself: kept once set, an edited prompt kept its old text's hash, so the old text
        # imported again was taken for it and the new one could be stored twice
        self.hash = normalised_hash(self.messages or self.text)
        super().save(*args, **kwargs)


class GenerationJob(Job):
    """K samples for each of a set of prompts from one version, paired for labelling (chunk by chunk)."""

    unit = "prompts"
    task_name = "generation.tasks.run_generation_job"
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="generation_jobs")
    params = models.JSONField(default=dict, help_text="SamplingConfig and prompt selection.")
    pairs_made = models.PositiveIntegerField(default=0)


class Response(models.Model):
    """One sampled (or imported) response to a prompt."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="responses",
        help_text="Empty for imported or human-written responses.",
    )
    job = models.ForeignKey(GenerationJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="responses")
    sample_index = models.PositiveIntegerField(default=0)
    text = models.TextField()
    token_ids = models.JSONField(null=True, blank=True)
    token_count = models.PositiveIntegerField(default=0)
    logp_sum = models.FloatField(null=True, blank=True, help_text="Sum of token log-probs under the sampling model.")
    finish_reason = models.CharField(max_length=20, blank=True)
    sampling_params = models.JSONField(default=dict, blank=True)
    sampling_key = models.CharField(
        max_length=64, blank=True, db_index=True, help_text="Hash of the sampling settings and seed, for reuse."
    )
    source = models.CharField(max_length=200, blank=True)
    is_reference = models.BooleanField(
        default=False, db_default=False, db_index=True,
        help_text="A reference answer from a prompt file: SPIN rounds train it over the model's own answers.",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "prompt", "sample_index"], name="one_response_per_job_sample")
        ]

    def __str__(self) -> str:
        return self.text[:80]

    def clean(self) -> None:
        """An empty field on a form (or "null") means no sampling settings: the column holds {} then, never NULL
        (saving None was a NOT NULL error, a 500 on the admin's form). Anything else must be an object of settings by
        name: the length comparison (generation.length) reads its items."""
        from django.core.exceptions import ValidationError

        if self.sampling_params is None:
            self.sampling_params = {}
        elif not isinstance(self.sampling_params, dict):
            got = _json_kind(self.sampling_params)
            raise ValidationError({"sampling_params": 'expected a JSON object of settings by name, such as '
                                                      f'{{"temperature": 0.7}}; got {got}.'})

    @property
    def truncated(self) -> bool:
        """The answer stopped at the token limit: it may be cut mid-sentence."""
        return is_truncated(self.finish_reason)
