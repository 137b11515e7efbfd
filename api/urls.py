"""The API under /api/v1/ and the account page where people make their tokens.

API operations are reachable without a session (LoginRequiredMiddleware would send a token request to the sign-in
page); each operation still signs the caller in itself (api.auth) and answers 401 without a token or a session. The
schema and the docs page stay behind the sign-in, like every page."""
from django.contrib.auth.decorators import login_not_required
from django.urls import path

from . import views
from .main import api

SIGNED_IN_ONLY = {"openapi-json", "openapi-view", "api-root"}  # the schema, its docs, the bare /api/v1/


def api_patterns():
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        if pattern.name not in SIGNED_IN_ONLY:
            pattern.callback = login_not_required(pattern.callback)
    return patterns, app_name, namespace


account = [
    path("", views.account, name="account"),
    path("revoke/", views.revoke, name="revoke"),
]
