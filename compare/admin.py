"""Admin of the compare app: comparison sets, comparisons and votes (read mostly; votes come from the pages)."""
from django.contrib import admin

from jobs.admin import RefusesDeletingActiveJobs

from .models import CompareJob, Comparison, Vote


@admin.register(CompareJob)
class CompareJobAdmin(RefusesDeletingActiveJobs, admin.ModelAdmin):
    list_display = ("pk", "version_a", "version_b", "blind", "status", "done", "total", "created")
    list_filter = ("status", "blind")
    # prompt_ids and params are what the worker runs: set only by the service that starts a set.
    readonly_fields = ("prompt_ids", "params", "done", "total", "error", "started", "finished", "created_by")


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ("pk", "job", "prompt", "left_is_a", "created")
    raw_id_fields = ("prompt", "response_a", "response_b", "job")


@admin.register(Vote)
class VoteAdmin(admin.ModelAdmin):
    list_display = ("pk", "comparison", "voter", "outcome", "is_automatic", "judge", "created")
    list_filter = ("outcome", "is_automatic", "judge")
    raw_id_fields = ("comparison",)
