"""Admin for versions (lineage, size, the run that made each, set current), prompts, responses and jobs."""
from pathlib import Path

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.template.defaultfilters import filesizeformat
from kombu.exceptions import OperationalError as QueueUnreachable

from jobs.admin import RefusesDeleting, RefusesDeletingActiveJobs, StartedElsewhereJobAdmin
from prefloop.access import may
from prefloop.forms import JSON_FIELDS
from training.promotion import PromotionError, rollback

from . import services
from .length import version_length
from .models import GenerationJob, ModelVersion, Prompt, Response


class ModelVersionForm(forms.ModelForm):
    """A version's folder is checked as POST /versions and every registration check it (configuration and weights
    of its kind, an absolute path on the server): the admin stored any text typed as the path, and the first job on
    the version failed in a worker."""

    class Meta:
        model = ModelVersion
        fields = "__all__"

    def clean_path(self) -> str:
        if self.instance.pk is not None and "path" not in self.changed_data:
            return self.cleaned_data["path"]  # as stored (a relative one an older admin kept): its name may change
        try:
            return str(services.given_folder(self.cleaned_data["path"]))
        except services.GenerationError as exc:
            raise ValidationError(str(exc)) from None

    def clean(self) -> dict:
        cleaned = super().clean()
        path, kind = cleaned.get("path"), cleaned.get("kind")
        # a version kept as it was is not refused for its folder (a disk not mounted while its name is edited)
        moved = self.instance.pk is None or {"path", "kind"} & set(self.changed_data)
        if path and kind and moved and (problem := services.version_folder_problem(Path(path), kind)):
            self.add_error("path", problem)
        return cleaned


@admin.register(ModelVersion)
class ModelVersionAdmin(RefusesDeleting, admin.ModelAdmin):
    form = ModelVersionForm
    list_display = ["name", "lineage_display", "round", "kind", "size", "made_by", "is_current", "created"]
    list_filter = ["kind", "is_current"]
    # the mean answer length measured as every page measures it (generation.length), not the stored
    # mean_response_tokens, which only a generation job or a round's measuring writes: stale once comparison or loop
    # answers are stored
    readonly_fields = ["is_current", "size_bytes", "created", "mean_answer_tokens"]
    exclude = ["mean_response_tokens"]
    actions = ["make_current", "generate_pairs"]

    def delete_refusal(self, obj) -> str:
        # with no current version nothing can generate, train or be compared against; the Train page and the gate
        # move "current" from one version to another, never to none
        if obj.is_current:
            return f"{obj.name} is the current version; make another version current first"
        return ""

    def save_model(self, request, obj, form, change) -> None:
        if not change or "path" in form.changed_data:
            obj.size_bytes = services.folder_size(obj.path)
        super().save_model(request, obj, form, change)

    @admin.display(description="lineage")
    def lineage_display(self, obj):
        return " → ".join(v.name for v in obj.lineage())

    @admin.display(description="size")
    def size(self, obj):
        return filesizeformat(obj.size_bytes)

    @admin.display(description="mean answer tokens")
    def mean_answer_tokens(self, obj):
        length = version_length(obj) if obj is not None and obj.pk else None
        if length is None or length.mean is None:
            return "–"
        return f"{length.mean:.4g} ({length.label})"

    @admin.display(description="made by")
    def made_by(self, obj):
        run = getattr(obj, "made_by_run", None)
        return f"training run {run.pk}" if run else "–"

    # actions that change what the team works on: not for staff who may only look
    @admin.action(description="Make the selected version current", permissions=["change"])
    def make_current(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version.", messages.ERROR)
            return
        version = queryset.get()
        try:  # as the Train page's rollback: a candidate awaiting the gate is refused (the gate's decision is its)
            rollback(version, user=request.user, reason="made current from the admin")
        except PromotionError as exc:
            self.message_user(request, f"{exc}.", messages.ERROR)
            return
        self.message_user(request, f"{version.name} is now the current version.")

    def has_generate_permission(self, request) -> bool:
        """The Generate page's and POST /api/v1/jobs/generation's permission: a version's change permission (to
        promote, say) let staff queue generation jobs from here."""
        return may(request.user, "generation.add_generationjob")

    @admin.action(description="Generate pairs (32 train prompts, 2 samples each)", permissions=["generate"])
    def generate_pairs(self, request, queryset):
        for version in queryset:
            try:
                job = services.start_generation_job(version, n_prompts=32, user=request.user)
            except (services.GenerationError, QueueUnreachable) as exc:  # the latter: the job is ended failed, said why
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Generation job {job.pk} queued for {version.name}; see /generation/.")


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    formfield_overrides = JSON_FIELDS
    list_display = ["id", "short_text", "split", "tag", "source", "created"]
    list_filter = ["split", "tag", "source"]
    search_fields = ["text"]

    def get_readonly_fields(self, request, obj=None):
        """The hash is the prompt's own (Prompt.save); its text, chat and split are fixed once it has answers or
        pairs: an edited prompt kept the answers sampled for its old text, which comparisons, evaluations and the gate
        then showed as answers to the new one, and its pairs' labels were for the old question; a train prompt a
        round had trained on, moved to eval, was scored by the gate as unseen."""
        if obj is None:
            return ["hash"]
        # its split once a model answered it (a reference answer stored at import is no model's: a prompt set
        # imported into the wrong split can still be moved until it is sampled)
        sampled = obj.pairs.exists() or obj.responses.filter(is_reference=False).exists()
        if sampled:
            return ["hash", "text", "messages", "split"]
        return ["hash", "text", "messages"] if obj.responses.exists() else ["hash"]

    @admin.display(description="text")
    def short_text(self, obj):
        return obj.text[:100]

    # Deleting a prompt deletes its pairs first (the collector's order), then the prompt. An import holding the
    # prompt (it locks its prompts first, in hash order) and then asking for one of those pairs deadlocked with it,
    # and PostgreSQL ended one side with an error. The prompts are locked first here too, in the same order.
    def delete_model(self, request, obj):
        with transaction.atomic():
            _lock_prompts_to_delete(Prompt.objects.filter(pk=obj.pk))
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            _lock_prompts_to_delete(queryset)
            super().delete_queryset(request, queryset)


def _lock_prompts_to_delete(prompts) -> None:
    list(Prompt.objects.select_for_update().filter(pk__in=prompts.values("pk")).order_by("hash").values_list("pk"))


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    formfield_overrides = JSON_FIELDS
    list_display = ["id", "prompt_id", "version", "is_reference", "source", "token_count", "logp_sum", "finish_reason",
                    "created"]
    list_filter = ["is_reference", "version", "finish_reason"]
    raw_id_fields = ["prompt", "job"]
    # Set by the prompt importer: a sample turned into a reference answer would be trained as SPIN's chosen answer,
    # and a reference turned into a sample would lose its place as one.
    readonly_fields = ["is_reference"]

    def get_readonly_fields(self, request, obj=None):
        """An answer in a pair or a comparison is a record of what was shown and judged: every field is fixed. Its
        text rewritten kept the labels and votes given on the old one, and moved to another prompt it sat in a pair
        of that prompt's (what Pair.clean refuses)."""
        if obj is not None and _shown(obj):
            return [f.name for f in self.model._meta.concrete_fields if f.editable and not f.primary_key]
        return list(self.readonly_fields)


def _shown(response: Response) -> bool:
    from django.db.models import Q

    from annotate.models import Pair
    from compare.models import Comparison

    either = Q(response_a=response) | Q(response_b=response)
    return Pair.objects.filter(either).exists() or Comparison.objects.filter(either).exists()


@admin.register(GenerationJob)
class GenerationJobAdmin(RefusesDeletingActiveJobs, StartedElsewhereJobAdmin, admin.ModelAdmin):
    """Read only, with Cancel: a job is started on the Generate page or the API (start_generation_job), which sets
    the params the worker runs (sampling, prompts, the judge)."""

    list_display = ["id", "version", "status", "done", "total", "pairs_made", "created"]
    list_filter = ["status"]
    cancel = staticmethod(services.cancel_generation_job)
