"""Admin for loop runs: "Add loop run" is "run N rounds with judge J" (same service as the page), then watch it."""
from django.contrib import admin, messages
from django.shortcuts import redirect

from jobs.admin import RefusesDeletingActiveJobs, StartsJobAdmin, cancel_jobs
from judges import JudgeError

from . import services
from .forms import LoopRunForm
from .models import LoopRun


@admin.register(LoopRun)
class LoopRunAdmin(RefusesDeletingActiveJobs, StartsJobAdmin, admin.ModelAdmin):
    list_display = ["id", "status", "judge", "rounds_done_of", "pairs", "progress_pct", "last_win_rate", "created"]
    list_filter = ["status"]
    actions = ["cancel_runs"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = LoopRunForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return LoopRunForm.Meta.fields
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else [f.name for f in LoopRun._meta.fields]

    @admin.display(description="rounds")
    def rounds_done_of(self, obj):
        return f"{obj.rounds_done} / {obj.rounds}"

    @admin.display(description="progress")
    def progress_pct(self, obj):
        return f"{obj.percent}% {obj.stage}".strip()

    @admin.display(description="win rate vs base")
    def last_win_rate(self, obj):
        return obj.results[-1].get("win_rate_vs_base") if obj.results else ""

    def save_model(self, request, obj, form, change):
        if change:
            return
        try:
            run = services.start_loop_run(rounds=obj.rounds, pairs=obj.pairs, judge=obj.judge, tag=obj.tag,
                                          eval_limit=obj.eval_limit, seed=obj.seed, user=request.user,
                                          eval_judge=form.cleaned_data.get("eval_judge", ""))
        except (services.LoopError, JudgeError) as exc:
            self.message_user(request, str(exc), messages.ERROR)
            obj.pk = None
            return
        obj.pk = run.pk
        self.message_user(request, f"Loop run {run.pk} queued; its page shows each round live.")

    def response_add(self, request, obj, post_url_continue=None):
        if obj.pk is None:
            return redirect("admin:loop_looprun_add")
        return redirect("loop:run", pk=obj.pk)

    @admin.action(description="Cancel the selected runs", permissions=["change"])
    def cancel_runs(self, request, queryset):
        cancel_jobs(self, request, queryset, services.cancel_loop_run)
