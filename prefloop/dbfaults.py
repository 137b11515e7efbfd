"""An unreachable database answers 503 with Retry-After, not a 500: the label page (static/prefloop/retry.js) then
sends the same request again until it goes through, and the label services record a label sent twice once."""
from __future__ import annotations

import logging

from django.db import DataError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils.html import escape

logger = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError)
MESSAGE = "The database is not answering; your label was not lost: the page retries."
RETRY_AFTER_SECONDS = 1


def is_outage(error: BaseException) -> bool:
    """Whether the error says the database could not be reached, rather than that this query was wrong. SQLite
    reports a failure inside a Python function it runs for Django (REGEXP with a pattern re cannot read, a date
    function) as an OperationalError too: that query fails the same way each time, so a 503 would have the label page
    retry it for ever; it stays the error it is (a 500, logged with its traceback)."""
    if not isinstance(error, DATABASE_ERRORS):
        return False
    return not str(error).startswith("user-defined function raised exception")


def _first_line(error: BaseException) -> str:
    """The first line of a database error's message ("" when it has none): its detail lines quote the query."""
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def unavailable(request: HttpRequest, error: BaseException) -> HttpResponse:
    """The 503 for a request that met an unreachable database: plain text, or a minimal page for a browser."""
    logger.warning("database not answering during %s %s: %s: %s", request.method, request.path,
                   type(error).__name__, _first_line(error))
    wants_html = "HX-Request" not in request.headers and "text/html" in request.headers.get("Accept", "")
    if wants_html:
        body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Database not answering</title>'
                f"</head><body><p>{escape(MESSAGE)}</p></body></html>")
        response = HttpResponse(body, status=503, content_type="text/html; charset=utf-8")
    else:
        response = HttpResponse(MESSAGE, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


class DatabaseFaultMiddleware:
    """Turns OperationalError and InterfaceError met loading the session and user, or in the view and its template,
    into the 503 above, unless the query itself was wrong (is_outage); a value the database refused (DataError) into
    a 400 naming it (refused_value). (A session save failing after the view is Django's 400 "session was deleted":
    the label views do not change the session.)"""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> HttpResponse | None:
        # The session and the user load lazily, at the first look at request.user (the login check, just after
        # this): look here, where a database fault is answered like one in the view.
        user = getattr(request, "user", None)
        if user is None:
            return None
        try:
            user.is_authenticated  # noqa: B018 (evaluates the lazy user)
        except DATABASE_ERRORS as error:
            if not is_outage(error):
                raise
            return unavailable(request, error)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if is_outage(exception):
            return unavailable(request, exception)
        if isinstance(exception, DataError):
            return refused_value(request, exception)
        return None


def refused_value(request: HttpRequest, error: DataError) -> HttpResponse:
    """A 400 for a value the database itself refused (PostgreSQL's DataError): a regular expression Python reads
    and PostgreSQL does not (`?text__regex=(?P<n>a)` in the admin's filters), a number or text its column cannot
    hold. The request's own value is at fault, as a 400 says: it was a 500. Logged with its traceback all the same,
    as a check of the view's own may be missing."""
    from prefloop.errors import refusal_page

    first = _first_line(error) or type(error).__name__
    logger.warning("the database refused a value during %s %s: %s", request.method, request.path, first,
                   exc_info=error)
    return refusal_page(request, "400.html", "Refused", f"The database refused a value this request sent ({first}).",
                        400)

