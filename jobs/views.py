"""The one Cancel view every job kind's page uses: staff only (others get the refusal page), POST only; it answers with the job's own partial."""
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from prefloop.access import change_perm, require, staff_required

from . import lifecycle
from .models import Job


def cancel_view(model: type[Job], *, partial: str, name: str, then: str, then_with_pk: bool = False,
                shown_by=None):
    """A view that cancels the `model` row named by the URL's pk and answers htmx with `partial` (the row under
    the context `name`), anything else with a redirect to the URL name `then` (given the pk if `then_with_pk`).
    `shown_by`: the kind's own view of the job, for htmx, when its partial needs more than the row (a comparison
    set that had ended before the Cancel arrived showed no vote form, its comparisons there all the same)."""

    @staff_required
    @require_POST
    def cancel(request, pk: int) -> HttpResponse:
        require(request, change_perm(model))  # as the admin's Cancel action
        job = get_object_or_404(model, pk=pk)
        lifecycle.cancel(job)
        if request.htmx:
            return shown_by(request, pk) if shown_by is not None else render(request, partial, {name: job})
        return redirect(then, pk=pk) if then_with_pk else redirect(then)

    return cancel
