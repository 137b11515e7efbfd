"""The one Cancel view every job kind's page uses: staff only (others get the refusal page), POST only; it answers with the job's own partial."""
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from prefloop.access import staff_required

from . import lifecycle
from .models import Job


def cancel_view(model: type[Job], *, partial: str, name: str, then: str, then_with_pk: bool = False):
    """A view that cancels the `model` row named by the URL's pk and answers htmx with `partial` (the row under
    the context `name`), anything else with a redirect to the URL name `then` (given the pk if `then_with_pk`)."""

    @staff_required
    @require_POST
    def cancel(request, pk: int) -> HttpResponse:
        job = get_object_or_404(model, pk=pk)
        lifecycle.cancel(job)
        if request.htmx:
            return render(request, partial, {name: job})
        return redirect(then, pk=pk) if then_with_pk else redirect(then)

    return cancel
