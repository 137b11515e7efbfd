"""Admin for training rounds: "Add training run" starts a round through the same service as the page."""
from django import forms
from django.contrib import admin, messages

from generation.services import GenerationError
from jobs.admin import RefusesDeletingActiveJobs, StartsJobAdmin, cancel_jobs
from prefloop.forms import JSON_FIELDS

from . import services
from .models import ReferenceLogp, TrainingRun


class StartRunForm(forms.ModelForm):
    class Meta:
        model = TrainingRun
        fields = ["input_version", "reference_choice", "data_choice", "params"]


@admin.register(TrainingRun)
class TrainingRunAdmin(RefusesDeletingActiveJobs, StartsJobAdmin, admin.ModelAdmin):
    formfield_overrides = JSON_FIELDS
    list_display = ["id", "status", "input_version", "reference_version", "output_version", "pairs", "progress_pct",
                    "created"]
    list_filter = ["status", "reference_choice", "data_choice"]
    actions = ["cancel_runs"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = StartRunForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["input_version", "reference_choice", "data_choice", "params"]
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [f.name for f in TrainingRun._meta.fields]

    @admin.display(description="progress")
    def progress_pct(self, obj):
        return f"{obj.percent}%"  # as every page shows it: a run still measuring its version is at 99%, not 100%

    def save_model(self, request, obj, form, change):
        if change:
            return
        try:
            run = services.start_training_run(input_version=obj.input_version, reference_choice=obj.reference_choice,
                                              data_choice=obj.data_choice,
                                              # [] or 0 is refused as the page refuses it, not run with defaults
                                              params={} if obj.params is None else obj.params, user=request.user)
        except (services.TrainingError, GenerationError) as exc:
            self.message_user(request, str(exc), messages.ERROR)
            obj.pk = None
            return
        obj.pk = run.pk
        self.message_user(request, f"Training run {run.pk} queued; watch it on /training/.")

    def response_add(self, request, obj, post_url_continue=None):
        from django.shortcuts import redirect

        return redirect("training:runs")

    @admin.action(description="Cancel the selected runs", permissions=["change"])
    def cancel_runs(self, request, queryset):
        cancel_jobs(self, request, queryset, services.cancel_training_run)


@admin.register(ReferenceLogp)
class ReferenceLogpAdmin(admin.ModelAdmin):
    list_display = ["response_id", "reference", "max_length", "dtype", "logp", "created"]
