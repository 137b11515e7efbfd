"""What the admins of job kinds share: "Add" starts the job through its service, which may refuse it; rows that must
not be deleted (an active job, a job a running job still reads) are refused on their delete page and in "Delete
selected", with the reason shown."""
from __future__ import annotations

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.utils import model_ngettext, quote, unquote
from django.shortcuts import redirect
from django.urls import reverse
from kombu.exceptions import OperationalError as QueueUnreachable

from .lifecycle import job_kinds
from .models import ACTIVE


class StartsJobAdmin:
    """For a ModelAdmin whose save_model starts the job through its service and leaves `obj.pk` None when the service
    refused it (the reason shown as a message): no "Added" entry is written to the admin's history for a job that
    was never made."""

    def log_addition(self, request, obj, message):
        if obj.pk is None:
            return None
        return super().log_addition(request, obj, message)

    def changeform_view(self, request, *args, **kwargs):
        """The task is sent as the admin's transaction commits, after save_model: with the queue down that raised out
        of the page (a 500). The job is recorded, ended failed with the reason (jobs.lifecycle.enqueue): the list of
        jobs shows it, with that reason as the page's message."""
        try:
            return super().changeform_view(request, *args, **kwargs)
        except QueueUnreachable as exc:
            for _ in messages.get_messages(request):  # save_model's "queued" is not true now: read, so not shown
                pass
            self.message_user(request, str(exc), messages.ERROR)
            opts = self.model._meta
            return redirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))


class StartedElsewhereJobAdmin:
    """For a job kind started only on its pages or the API (the service checks what the worker will run): the admin
    adds none (a row made here had no task sent, and stayed queued for ever, with no params to run), and shows a job
    read only, with a Cancel action. Its status and progress were form fields: a page opened while the job ran, saved
    after it had finished, put it back to running at the old progress, with no worker behind it."""

    actions = ["cancel_selected"]
    cancel = None  # the kind's cancel service, e.g. staticmethod(generation.services.cancel_generation_job)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # a job's page is for reading (no Save to write back what it showed); the list keeps its Cancel action
        return obj is None and super().has_change_permission(request, obj)

    @admin.action(description="Cancel the selected jobs", permissions=["change"])
    def cancel_selected(self, request, queryset):
        cancel_jobs(self, request, queryset, self.cancel)


def _named(job) -> str:
    return f"{job._meta.verbose_name} {job.pk}"


def job_delete_refusal(job) -> str:
    """Why deleting `job` would break a worker, or "" when it may go."""
    if job.is_active:
        return (f"{_named(job)} is {job.status}: its worker still writes to it and would fail on the missing row; "
                "cancel it, and delete it once it has ended")
    # A job run inside another (a loop run's generation, training and comparison jobs): while that one is active it
    # reads its parts again (to resume a round, to name the version a round made), and fails on a missing one.
    label, _, pk = job.part_of.rpartition(":")
    try:
        parent_model = apps.get_model(label) if label and pk.isdigit() else None
    except (LookupError, ValueError):  # not a job's key: "foreground", a set its own process evaluates
        parent_model = None
    parent = parent_model.objects.filter(pk=pk, status__in=ACTIVE).first() if parent_model else None
    if parent is not None:
        return f"{_named(job)} is part of {_named(parent)}, still {parent.status}, which reads it; delete it once " \
               "that has ended"
    # A job whose parts are still active: only it resumes or ends them (the queue leaves them to it), so with it gone
    # they would stay active for ever.
    for model in job_kinds():
        part = model.objects.filter(part_of=job.key, status__in=ACTIVE).first()
        if part is not None:
            return f"{_named(part)} inside {_named(job)} is still {part.status}, and only {_named(job)} ends it; " \
                   "delete it once that has ended"
    return ""


def _delete_selected_unless_refused(modeladmin, request, queryset):
    """Django's "Delete selected", refusing the whole selection when a row in it may not go: Django asks for the
    delete permission of the selection as a whole, without its rows, and would delete an active job with the rest."""
    refused = [reason for obj in queryset if (reason := modeladmin.delete_refusal(obj))]
    if refused:
        modeladmin.message_user(request, f"Nothing deleted: {'; '.join(refused)}.", messages.ERROR)
        return None  # back to the list
    return delete_selected(modeladmin, request, queryset)


_delete_selected_unless_refused.allowed_permissions = delete_selected.allowed_permissions
_delete_selected_unless_refused.short_description = delete_selected.short_description


class RefusesDeleting:
    """For a ModelAdmin some of whose rows must not be deleted: `delete_refusal(obj)` says why, or "" when it may go.
    Such a row is refused on its delete page and in "Delete selected", the reason shown as a message."""

    def delete_refusal(self, obj) -> str:
        return ""

    def has_delete_permission(self, request, obj=None) -> bool:
        # False for a refused row hides its Delete button, and refuses it where another row's delete would take it
        # along (Django asks this of each row a delete cascades to)
        return super().has_delete_permission(request, obj) and (obj is None or not self.delete_refusal(obj))

    def delete_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        reason = self.delete_refusal(obj) if obj is not None else ""
        if reason:  # Django's own refusal is a bare 403 page that does not say why
            self.message_user(request, f"Not deleted: {reason}.", messages.ERROR)
            opts = self.opts
            return redirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[quote(obj.pk)],
                                    current_app=self.admin_site.name))
        return super().delete_view(request, object_id, extra_context)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            _, name, description = actions["delete_selected"]
            actions["delete_selected"] = (_delete_selected_unless_refused, name, description)
        return actions


class RefusesDeletingActiveJobs(RefusesDeleting):
    """A job kind's admin: an active job, a part of an active job, and a job with active parts are not deleted."""

    def delete_refusal(self, obj) -> str:
        return job_delete_refusal(obj)


def cancel_jobs(modeladmin, request, queryset, cancel) -> None:
    """The "Cancel" action of a job kind's admin: `cancel` each selected job still active, and say how many were
    asked to stop and how many had ended already (nothing was said, and a selection of finished runs looked cancelled)."""
    asked, ended = [], []
    for job in queryset:
        if job.is_active:
            cancel(job)
            asked.append(job)
        else:
            ended.append(job)
    if asked:
        modeladmin.message_user(
            request, f"{len(asked)} {model_ngettext(modeladmin.opts, len(asked))} asked to stop "
                     f"({', '.join(str(j.pk) for j in asked)}): a queued one ends at once, a running one within "
                     "seconds.", messages.SUCCESS)
    if ended:
        modeladmin.message_user(
            request, f"{len(ended)} {model_ngettext(modeladmin.opts, len(ended))} had already finished, left as "
                     f"they were ({', '.join(f'{j.pk}: {j.status}' for j in ended)}).", messages.WARNING)
