"""The API under /api/v1/ and the account page where people make their tokens.

API operations are reachable without a session (LoginRequiredMiddleware would send a token request to the sign-in
page); each operation still signs the caller in itself (api.auth) and answers 401 without a token or a session. The
docs page stays behind the sign-in, like every page; the schema is given to a session or a token (a program that
builds its client from it holds a token, not a session)."""
from functools import wraps

from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import redirect_to_login
from django.http import JsonResponse
from django.urls import path

from . import tokens, views
from .auth import BAD_HEADER, BAD_TOKEN
from .main import api

SIGNED_IN_ONLY = {"openapi-view", "api-root"}  # the docs page, the bare /api/v1/


def _session_or_token(view):
    """The schema for a signed-in session, or for a request with a valid API token. A browser signed out is sent
    to the sign-in page; a program (an Authorization header, or no HTML in what it accepts) gets the operations'
    JSON 401: a bad header or no credentials was redirected to the sign-in page, which a client that follows
    redirects read as a 200 HTML schema."""

    @wraps(view)
    def schema(request, *args, **kwargs):
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return JsonResponse({"detail": BAD_HEADER}, status=401)
            user = tokens.user_for_token(token.strip())
            if user is None:
                return JsonResponse({"detail": BAD_TOKEN}, status=401)
            request.user = user
        elif not request.user.is_authenticated:
            if "text/html" in request.headers.get("Accept", ""):
                return redirect_to_login(request.get_full_path())
            return JsonResponse({"detail": "sign in, or send 'Authorization: Bearer <token>' (make a token on your "
                                           "account page)"}, status=401)
        return view(request, *args, **kwargs)

    return login_not_required(schema)


def api_patterns():
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        if pattern.name == "openapi-json":
            pattern.callback = _session_or_token(pattern.callback)
        elif pattern.name not in SIGNED_IN_ONLY:
            pattern.callback = login_not_required(pattern.callback)
    return patterns, app_name, namespace


account = [
    path("", views.account, name="account"),
    path("revoke/", views.revoke, name="revoke"),
]
