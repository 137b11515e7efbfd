"""How an htmx request (a label, a vote, a Cancel, a progress poll) fails: visibly, never with a whole page swapped
into part of another.

- Signed out (the session ended, or they signed out in another tab): Django's sign-in redirect would be followed by
  the XHR and the login page swapped into the label area, the label silently lost. Instead the answer is 401 with
  `HX-Redirect` to the sign-in page, whose `next` is the page the person was on (the HX-Current-URL's path, only when
  it is on this site: never a way to send someone elsewhere), and a message on that page saying what was not saved.
- A CSRF refusal (the page's token is stale: they signed in again in another tab): a plain sentence instead of
  Django's HTML page, which static/prefloop/errors.js shows in the page's status line.

The middleware takes the place of Django's LoginRequiredMiddleware. Its check runs in process_view, after every
middleware's request phase (MessageMiddleware's too), so the message it adds is stored on the way out.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url
from django.utils.http import url_has_allowed_host_and_scheme

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")

SIGNED_OUT_POST = ("You were signed out, so what you just did (a label, vote or other change) was not saved. "
                   "Sign in, then do it again.")
SIGNED_OUT_GET = "You were signed out. Sign in to go back to the page you were on."
STALE_PAGE = ("Not saved: this page is out of date (you signed in or out in another tab). "
              "Reload the page, then do it again.")


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def page_path(request: HttpRequest) -> str | None:
    """The path (and query) of the page the person was on, from HX-Current-URL; None unless it is on this site."""
    current = request.headers.get("HX-Current-URL", "")
    if not current or any(c in current for c in "\\\r\n\t\x00"):
        return None
    try:
        parts = urlsplit(current)
    except ValueError:
        return None
    if parts.scheme or parts.netloc:  # absolute, as htmx sends it: it must name this very site
        if parts.scheme not in ("http", "https") or parts.netloc.lower() != request.get_host().lower():
            return None
    path = parts.path
    if not path.startswith("/") or path.startswith("//"):
        return None
    if path == resolve_url(settings.LOGIN_URL):
        return None
    candidate = f"{path}?{parts.query}" if parts.query else path
    # Django's own test, as the sign-in view applies it to `next`: a relative path on this host.
    if not url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        return None
    return candidate


def signed_out(request: HttpRequest) -> HttpResponse:
    """The answer to an htmx request that needs a signed-in person: 401 and a full-page move to the sign-in page."""
    unsafe = request.method not in SAFE_METHODS
    text = SIGNED_OUT_POST if unsafe else SIGNED_OUT_GET
    if unsafe and hasattr(request, "_messages"):  # (not for polls: a page of them would say it many times over)
        messages.warning(request, text)
    login_url = resolve_url(settings.LOGIN_URL)
    next_path = page_path(request)
    target = redirect_to_login(next_path, login_url)["Location"] if next_path else login_url
    response = HttpResponse(text, status=401, content_type="text/plain; charset=utf-8")
    response["HX-Redirect"] = target
    response["Cache-Control"] = "no-store"
    return response


class HtmxLoginRequiredMiddleware(LoginRequiredMiddleware):
    """Django's LoginRequiredMiddleware (every page needs a signed-in person unless marked login_not_required), in
    its place in MIDDLEWARE, answering htmx requests as above. (It cannot be told apart from the outside: a sign-out
    also redirects to the sign-in page.)"""

    def handle_no_permission(self, request: HttpRequest, view_func) -> HttpResponse:
        if is_htmx(request):
            return signed_out(request)
        return super().handle_no_permission(request, view_func)

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        # The CSRF check's refusal comes back through here too (it is answered from process_view, inside every
        # middleware's __call__).
        if (is_htmx(request) and response.status_code == 403 and request.method not in SAFE_METHODS
                and not getattr(request, "csrf_processing_done", False)
                and not response.streaming and b"CSRF verification failed" in response.content):
            # Refused before the CSRF check let it through, with Django's CSRF page: the view never ran.
            refusal = HttpResponse(STALE_PAGE, status=403, content_type="text/plain; charset=utf-8")
            refusal["Cache-Control"] = "no-store"
            return refusal
        return response
