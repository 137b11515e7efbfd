"""Who may open a staff page: a signed-out visitor is sent to the sign-in page; a signed-in person without the
right gets the one refusal page (templates/403.html: a sentence and a link home), never the admin's login."""
from __future__ import annotations

import functools
from collections.abc import Callable

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from prefloop.htmx import is_htmx, signed_out

STAFF_ONLY = "This page is for staff: ask an administrator if you need it."


def staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            # (LoginRequiredMiddleware answers first; this covers a view also marked login_not_required)
            return signed_out(request) if is_htmx(request) else redirect_to_login(request.get_full_path())
        if not (request.user.is_active and request.user.is_staff):
            raise PermissionDenied(STAFF_ONLY)
        return view(request, *args, **kwargs)

    return wrapped
