"""Who may open a staff page: a signed-out visitor is sent to the sign-in page; a signed-in person without the
right gets the one refusal page (templates/403.html: a sentence and a link home), never the admin's login."""
from __future__ import annotations

import functools
from collections.abc import Callable

from django.contrib.auth import get_permission_codename
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from prefloop.htmx import is_htmx, signed_out

STAFF_ONLY = "This page is for staff: ask an administrator if you need it."


def may(user, perm: str) -> bool:
    """Whether a staff member may do, in the pages and the API, what the admin's model permission `perm`
    ("app.codename", e.g. "generation.change_modelversion") lets them do there. A superuser may do anything; any
    other staff member may do what the permissions an administrator gave them (their own or a group's) allow, as in
    the admin, and nothing more: one given view permissions only looks, and one given none looks at the staff pages
    and changes nothing, as staff status alone grants nothing in Django's admin. Staff given no permission could
    once do everything here; the upgrade (annotate's migration 0018) put such staff as an instance then had in the
    group "PrefLoop staff (every action)", so they keep what they did until an administrator narrows it."""
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return False
    if user.is_superuser:
        return True
    return perm in user.get_all_permissions()


def change_perm(model) -> str:
    """The admin's permission to change `model`'s rows ("app.change_model"), which its Cancel action needs."""
    return f"{model._meta.app_label}.{get_permission_codename('change', model._meta)}"


def refusal(perm: str) -> str:
    return (f"Your account may not do this: it needs the permission {perm!r}, which an administrator gives in the "
            "admin (Users, or a group).")


def require(request: HttpRequest, perm: str) -> None:
    """PermissionDenied (the refusal page) unless the signed-in staff member may do what `perm` allows (`may`)."""
    if not may(request.user, perm):
        raise PermissionDenied(refusal(perm) if request.user.is_authenticated and request.user.is_staff
                               else STAFF_ONLY)


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
