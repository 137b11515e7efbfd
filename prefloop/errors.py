"""The pages' refusals say what was wrong, as the API's do. Django's own were bare: every 404 read "The requested
resource was not found on this server" (a deleted labelling round, a set's id mistyped, a path no page serves: all
alike), a request Django refused before any view (too many form fields, an upload that is not multipart, an unknown
host name) was "Bad Request (400)" with nothing more, and a POST-only page asked with GET answered 405 with an
empty body. The sentence is the first paragraph of the page, which static/prefloop/errors.js shows for htmx requests;
the API (api.middleware) answers the same sentence as its JSON `detail`."""
from __future__ import annotations

import logging
import re

from django.apps import apps
from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from django.utils.html import escape
from django.views.decorators.csrf import requires_csrf_token

logger = logging.getLogger(__name__)


def sentence(text: str) -> str:
    """`text`, a message that starts lower case to be read inside another ("pair 3 was given to Alice before"), as a
    sentence of its own: its first letter upper case, the rest as written (str.capitalize() lowered it: "alice"), a
    full stop at the end unless it ends in one already."""
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def bad_request_reason(exception: BaseException | None) -> str:
    """A sentence for a request Django refused before any view read it: the kind of fault, never the value sent."""
    if isinstance(exception, TooManyFieldsSent):
        return (f"The form sent more fields than any page here takes (at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS}"
                "): nothing was saved.")
    if isinstance(exception, TooManyFilesSent):
        return (f"The form sent more files than any page here takes (at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES}"
                "): nothing was saved.")
    if isinstance(exception, RequestDataTooBig):
        return "The request's body is larger than this server takes: nothing was saved."
    if isinstance(exception, MultiPartParserError):
        return f"The upload is not valid multipart/form-data ({exception}): nothing was saved."
    if isinstance(exception, DisallowedHost):
        # the host name is the request's own: naming it tells the sender nothing they did not send
        return ("This server does not answer to the host name the request named: add it to ALLOWED_HOSTS "
                "(docs/deployment.md) or use the server's own address.")
    return "The request is malformed, so it was refused: nothing was saved."


@requires_csrf_token
def bad_request(request: HttpRequest, exception: BaseException | None = None) -> HttpResponse:
    reason = bad_request_reason(exception)
    return refusal_page(request, "400.html", "Refused", reason, 400)


@requires_csrf_token
def page_not_found(request: HttpRequest, exception: BaseException | None = None) -> HttpResponse:
    """The message a view gave its 404 (a deleted round, "no set 12"), or, for a path no page serves, that path."""
    message = exception.args[0] if exception is not None and exception.args else None
    if not isinstance(message, str) or not message.strip():  # a path no URL matches: Django's args are a dict
        message = f"There is no page at {request.path}."
    elif found := re.fullmatch(r"No (\w+) matches the given query\.", message):  # get_object_or_404's, in code words
        message = _not_there(request, found.group(1))
    return refusal_page(request, "404.html", "Not found", message, 404)


def refusal_page(request: HttpRequest, template: str, title: str, reason: str, status: int) -> HttpResponse:
    """The page with the site's frame, or, when that cannot be drawn, the sentence alone: the frame reads the
    signed-in user (the database), the static files' manifest (missing until collectstatic has run) and the URL
    names, and a refusal that failed on any of them was a 500 in place of the 400 or 404."""
    try:
        response = render(request, template, {"reason": reason}, status=status)
    except Exception:  # noqa: BLE001 (whatever broke the frame, the refusal itself stands)
        logger.warning("the %s page could not be drawn for %s; answering its sentence alone", status, request.path,
                       exc_info=True)
        response = HttpResponse(
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} · PrefLoop</title></head>'
            f"<body><h1>{title}</h1><p>{escape(reason)}</p></body></html>", status=status)
    response.prefloop_reason = reason  # the API's JSON detail (api.middleware)
    return response


def _not_there(request: HttpRequest, object_name: str) -> str:
    """"No CompareJob matches the given query." as a person would say it: "There is no comparison set 12"."""
    model = next((m for m in apps.get_models() if m._meta.object_name == object_name), None)
    name = model._meta.verbose_name if model is not None else object_name
    kwargs = request.resolver_match.kwargs if request.resolver_match is not None else {}
    key = next(iter(kwargs.values()), None) if len(kwargs) == 1 else None
    return f"There is no {name}{f' {key}' if key is not None else ''}: it may have been deleted, or the address is wrong."


class MethodNotAllowedSentenceMiddleware:
    """A page's 405 says which method it takes: Django's require_POST answers with an empty body, which a person
    (or errors.js's status line) read as nothing at all."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 405 and not response.streaming and not response.content:
            allowed = response.get("Allow", "")
            response.content = (f"{request.method} is not allowed on {request.path}"
                                + (f": this page takes {allowed} only." if allowed else ".")).encode()
            response["Content-Type"] = "text/plain; charset=utf-8"
        return response
