"""Who is calling the API: a personal token (`Authorization: Bearer pfl_...`), or the signed-in browser session.

A token request needs no CSRF token: a browser never adds an Authorization header to a cross-site request by
itself, so a forged form cannot carry one. A session request that changes anything must carry the CSRF token, as
the pages' forms do. A request with a token that is wrong, revoked or malformed is refused outright, whatever
session cookie it also carries.
"""
from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest
from ninja.errors import HttpError
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from prefloop.access import may, refusal

from . import tokens

BAD_HEADER = "the Authorization header must be 'Bearer <token>' (make a token on your account page)"
BAD_TOKEN = "this API token is not valid: it is unknown, revoked, or its account is disabled"


class TokenAuth(HttpBearer):
    def __init__(self, *, allow: Callable | None = None, refusal: str | Callable = "") -> None:
        super().__init__()
        self.allow, self.refusal = allow, refusal

    def __call__(self, request: HttpRequest):
        header = request.headers.get(self.header)
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HttpError(401, BAD_HEADER)
        return self.authenticate(request, token.strip())

    def authenticate(self, request: HttpRequest, token: str):
        user = tokens.user_for_token(token)
        if user is None:
            raise HttpError(401, BAD_TOKEN)
        request.user = user  # what the services and permission checks read
        return _refuse_unless_allowed(self, user, request)


class SessionAuth(APIKeyCookie):
    """The browser session (the docs page, a page's own scripts); writes must carry the CSRF token."""

    param_name = "sessionid"

    def __init__(self, *, allow: Callable | None = None, refusal: str | Callable = "") -> None:
        from django.conf import settings

        self.param_name = settings.SESSION_COOKIE_NAME
        self.allow, self.refusal = allow, refusal
        super().__init__(csrf=True)  # tells the docs page to send the CSRF token with its requests

    def _get_key(self, request: HttpRequest) -> str | None:
        return request.COOKIES.get(self.param_name)  # CSRF is checked in authenticate, once a session user is known

    def authenticate(self, request: HttpRequest, key: str | None):
        if not request.user.is_authenticated:
            return None
        if check_csrf(request) is not None:
            raise HttpError(403, "CSRF check failed: a request signed in by session must send the CSRF token "
                                 "(X-CSRFToken header); programs should use an API token instead")
        return _refuse_unless_allowed(self, request.user, request)


STAFF_ONLY = "staff only: this needs a staff account's token"


def _refuse_unless_allowed(auth, user, request):
    """An operation for some callers only (staff's) refuses (403) a signed-in caller who is not one of them before
    it reads its body: the check inside the operation came after ninja's, so an annotator got 400 for a bad body
    and 403 for a good one, learning the operation's schema and not that it was refused."""
    if user is not None and auth.allow is not None and not auth.allow(user, request):
        raise HttpError(403, auth.refusal(user, request) if callable(auth.refusal) else auth.refusal)
    return user


def only(allow: Callable, refusal: str | Callable) -> list:
    """The auth of an operation for the callers `allow(user, request)` admits: the same two schemes (one class each,
    so the docs page's Authorize asks once), refusing anyone else first, with `refusal` (or `refusal(user, request)`)."""
    return [TokenAuth(allow=allow, refusal=refusal), SessionAuth(allow=allow, refusal=refusal)]


def staff(perm: str | Callable | None = None) -> list:
    """A staff operation's auth: staff only, and with the admin's permission `perm` where it changes something
    (prefloop.access.may), both refused before the body is read. `perm` may be worked out from the request (the
    path's job kind: `perm(request)`, None when the path names none the operation knows, whose path check answers).
    Operations with this auth do not check the caller again: this is the one check."""

    def needed(request) -> str | None:
        return perm(request) if callable(perm) else perm

    def allow(user, request) -> bool:
        return user.is_staff and (needed(request) is None or may(user, needed(request)))

    return only(allow, lambda user, request: refusal(needed(request)) if user.is_staff else STAFF_ONLY)


STAFF = staff()
