"""Admin pages for rounds, pairs, assignments, labels, annotator profiles, and import and export jobs."""
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.db import transaction
from django.shortcuts import redirect
from django.urls import reverse

from jobs import lifecycle
from jobs.admin import RefusesDeleting, RefusesDeletingActiveJobs, StartedElsewhereJobAdmin
from prefloop.access import may

from . import closing, export_jobs, routing
from .forms import LabellingRoundForm
from .models import AnnotatorProfile, Assignment, ExportJob, ImportJob, Label, LabellingRound, Pair
from .rounds import save_round


@admin.register(LabellingRound)
class RoundAdmin(RefusesDeleting, admin.ModelAdmin):
    # the rounds page's form: its bounds and checks (an overlap of 0 or 2**31, a gold rate of 5, a judge not allowed
    # were saved here, and the round could not be edited on its page or by the API after)
    form = LabellingRoundForm
    list_display = ["number", "labels_per_pair", "gold_rate", "queue_order", "route_judge", "closed_at", "created"]
    readonly_fields = ["closed_at", "closed_reason"]
    actions = ["route_now", "close_now"]
    fieldsets = [
        (None, {"fields": ["number", "guidelines", "labels_per_pair", "gold_rate"]}),
        ("Which pairs people label first", {"fields": ["queue_order"]}),
        ("Judge and people", {"fields": ["route_judge", "route_threshold", "audit_share"]}),
        ("When labelling closes", {"fields": ["close_width", "closed_at", "closed_reason"]}),
    ]

    def get_form(self, request, obj=None, **kwargs):
        """The form told who edits (a routing judge over a folder needs the permission to register one)."""
        form = super().get_form(request, obj, **kwargs)

        class ByThisPerson(form):
            def __init__(self, *args, **options):
                super().__init__(*args, user=request.user, **options)

        return ByThisPerson

    def delete_refusal(self, obj) -> str:
        # its pairs would stay, in no round (Pair.round is emptied), and training on "new" or "replay" data, which
        # finds a version's pairs through their round, would lose their labels
        count = obj.pairs.count()
        if count:
            return (f"{obj} has {count} pair(s), which would be left in no round and their labels lost to training "
                    "on 'new' or 'replay' data; move its pairs to another round first")
        return ""

    def save_model(self, request, obj, form, change):
        if not change:
            return super().save_model(request, obj, form, change)
        # as the page saves it: a new overlap reaches the round's pairs, and only the fields changed are written
        save_round(obj, form.changed_data)

    # actions that change the rounds' pairs: not for staff who may only look
    @admin.action(description="Route the judge-labelled pairs now (by the judge's measured agreement)",
                  permissions=["change"])
    def route_now(self, request, queryset):
        for round_ in queryset:
            if not round_.route_judge:  # routing does nothing then; "0 to the judge, 0 to people" read as done
                messages.warning(request, f"{round_} has no route judge, so nothing was routed: name one on the "
                                          "round to route its pairs between the judge and people")
                continue
            done = routing.route_round(round_)
            messages.info(request, f"round {done.round}: {done.to_judge} to the judge, {done.to_people} to people "
                                   f"({done.audited} of them for audit)")

    @admin.action(description="Close labelling now", permissions=["change"])
    def close_now(self, request, queryset):
        for round_ in queryset:
            try:
                closing.close_round(round_, f"closed by {request.user.get_username()} from the admin")
            except closing.ClosingError as exc:
                messages.warning(request, str(exc))
            else:  # said: the page came back with no word that anything happened
                messages.info(request, f"round {round_.number} closed: its open pairs need no more labels, and people "
                                       "are given nothing more from it")


class LabelInline(admin.TabularInline):
    """Shown, not edited: labels come from the labelling pages and the API, which keep the pair's labels_done and
    its serving in step with them; one added, changed or deleted here left the pair's count wrong."""

    model = Label
    extra = 0
    fields = ["annotator", "choice", "side", "left_is_a", "strength", "preference_prob", "seconds", "comment", "created"]
    readonly_fields = ["created"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Pair)
class PairAdmin(admin.ModelAdmin):
    list_display = ["pk", "round", "origin", "is_gold", "gold_choice", "labels_done", "labels_needed", "margin", "route",
                    "created"]
    list_filter = ["round", "origin", "is_gold", "route"]
    raw_id_fields = ["prompt", "response_a", "response_b", "job", "margin_version"]
    # counted by the labelling pages and the API as labels arrive: a number typed here served the pair too often or
    # never again. The route is set by routing and the hold-back of near-duplicates (annotate.routing, .selection),
    # which keep labels_needed and the judge's label weights in step with it: "judge" typed here on a pair with no
    # judge label left it decided by nothing and served to no one.
    readonly_fields = ["labels_done", "route"]
    inlines = [LabelInline]

    def get_readonly_fields(self, request, obj=None):
        """A stored pair keeps its prompt and answers: its labels say "a" or "b" of these two, and swapping them in
        the admin turned every label on it into the opposite preference (training learnt it without a word)."""
        fixed = list(self.readonly_fields)
        if not may(request.user, "annotate.add_label"):  # a gold answer decides the pair for training, as a label does
            fixed += ["is_gold", "gold_choice"]
        return fixed + ["prompt", "response_a", "response_b"] if obj is not None else fixed


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["pk", "pair", "annotator", "state", "left_is_a", "leased_at", "expires_at"]
    list_filter = ["state"]
    raw_id_fields = ["pair", "annotator"]


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    """Read only, as LabelInline: a label is made on the labelling pages or by the API, and goes only with its pair."""

    list_display = ["pk", "pair", "annotator", "choice", "side", "strength", "seconds", "is_automatic", "created"]
    list_filter = ["choice", "is_automatic"]
    raw_id_fields = ["pair", "annotator"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # Django asks this of each label that deleting its pair (its prompt, its answers) takes along: those go, the
        # pair's count with them. Asked without a label (the list's "Delete selected"), it is refused, and so is a
        # label's own delete page (delete_view).
        return obj is not None and super().has_delete_permission(request, obj)

    def delete_view(self, request, object_id, extra_context=None):
        self.message_user(request, "Not deleted: a label goes only with its pair (the labelling pages and the API "
                                   "keep the pair's labels_done in step with its labels); delete the pair instead.",
                          messages.ERROR)
        label = self.get_object(request, unquote(object_id))
        if label is None:
            return redirect(reverse("admin:annotate_label_changelist", current_app=self.admin_site.name))
        return redirect(reverse("admin:annotate_label_change", args=[quote(label.pk)], current_app=self.admin_site.name))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # no Delete link on the label's page (has_delete_permission allows it for a label, for its pair's delete)
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "show_delete": False})


@admin.register(AnnotatorProfile)
class AnnotatorProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "is_automatic", "is_import", "judge_path"]


@admin.register(ImportJob)
class ImportJobAdmin(RefusesDeletingActiveJobs, StartedElsewhereJobAdmin, admin.ModelAdmin):
    """Read only: an import is started on the Import page (or the API), which checks the file it keeps; a path
    edited here would have a worker read any file the server can. An active one is not deleted (its worker would
    fail on the missing row, and its upload would wait for the sweep)."""

    list_display = ("pk", "file_name", "kind", "status", "done", "total", "added", "skipped", "created", "created_by")
    list_filter = ("status", "kind")
    cancel = staticmethod(lifecycle.cancel)


@admin.register(ExportJob)
class ExportJobAdmin(RefusesDeletingActiveJobs, StartedElsewhereJobAdmin, admin.ModelAdmin):
    """Read only: an export is started on the Export page, which names its path in the exports folder; a path edited
    here would be served (or removed) wherever it pointed. Deleting an ended export removes its file; an active one
    is not deleted (its worker would write a file no row names)."""

    list_display = ("pk", "format", "round_number", "status", "done", "total", "created", "created_by")
    list_filter = ("status", "format")
    cancel = staticmethod(lifecycle.cancel)

    def delete_model(self, request, obj) -> None:
        super().delete_model(request, obj)
        transaction.on_commit(lambda: export_jobs.remove_files(obj))

    def delete_queryset(self, request, queryset) -> None:
        jobs = list(queryset)
        super().delete_queryset(request, queryset)
        transaction.on_commit(lambda: [export_jobs.remove_files(job) for job in jobs])
