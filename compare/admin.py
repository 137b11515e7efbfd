"""Admin of the compare app: comparison sets, comparisons and votes (read mostly; votes come from the pages)."""
from django.contrib import admin

from jobs.admin import RefusesDeletingActiveJobs, StartedElsewhereJobAdmin

from .models import CompareJob, Comparison, Vote
from .services import cancel_compare_job


@admin.register(CompareJob)
class CompareJobAdmin(RefusesDeletingActiveJobs, StartedElsewhereJobAdmin, admin.ModelAdmin):
    """Read only, with Cancel: a set is started on the Compare page or the API (start_compare_job), which sets the
    prompt_ids and params the worker runs."""

    list_display = ("pk", "version_a", "version_b", "blind", "status", "done", "total", "created")
    list_filter = ("status", "blind")
    cancel = staticmethod(cancel_compare_job)


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ("pk", "job", "prompt", "left_is_a", "created")
    raw_id_fields = ("prompt", "response_a", "response_b", "job")

    def get_readonly_fields(self, request, obj=None):
        """A stored comparison keeps what it shows: its answers swapped turned every blind vote on it into a vote for
        the other version, which the gate reads; pointed elsewhere, the votes were for answers no one saw."""
        return ("prompt", "response_a", "response_b", "left_is_a", "job") if obj is not None else ()


@admin.register(Vote)
class VoteAdmin(admin.ModelAdmin):
    list_display = ("pk", "comparison", "voter", "outcome", "is_automatic", "judge", "created")
    list_filter = ("outcome", "is_automatic", "judge")
    raw_id_fields = ("comparison",)

    def get_readonly_fields(self, request, obj=None):
        """A vote is what its voter said: recorded by the compare page, the API or a judge, never typed over."""
        return ("comparison", "voter", "outcome", "is_automatic", "judge") if obj is not None else ()
