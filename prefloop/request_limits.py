"""Limits on what a request may carry, checked before any view reads it.

A request declaring a body over Django's DATA_UPLOAD_MAX_MEMORY_SIZE (5 MB) is refused with 413 before anything reads
it; only the two uploads (the Import page, POST /api/v1/jobs/import) take a file up to PREFLOOP_MAX_UPLOAD_BYTES, and
only from staff, checked before the body is read (Django's own limits cover form fields and the number of files, not
their size, and a multipart body is spooled to disk when anything reads request.POST: the CSRF check does, before a
view can send an anonymous caller to the sign-in page). A parameter no page can use is refused with 400,
naming it: a NUL character (PostgreSQL cannot store one), a whole number past 64 bits (no id or count is; SQLite
cannot even look one up), a run of more digits than Python reads as a number, JSON nested deeper than any form needs,
a JSON escape of a lone surrogate (PostgreSQL refuses it), a year no date holds, or a regular expression Python
cannot read (SQLite runs the admin's `__regex` filters with Python's re). Views and forms check their own fields too;
this layer also covers the pages PrefLoop does not write (the admin).
"""
from __future__ import annotations

import codecs
import re

from django.conf import settings
from django.core.handlers.wsgi import WSGIRequest
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.http import parse_header_parameters

INT64 = 2**63
_DATE_PARTS = ("__year", "__month", "__day")
MAX_NESTING = 64  # JSON in a form (a chat, job params) is nested a few levels; Python's parser fails near 1,000
_INTEGER = re.compile(r"[+-]?\d+")
# Lookups that bound a year with a date (YearLookup: exact, gt, gte, lt, lte): a year past 1..9999 fails building it.
_YEAR_LOOKUPS = tuple(f"__{part}{op}" for part in ("year", "iso_year")
                      for op in ("", "__exact", "__gt", "__gte", "__lt", "__lte"))
_LIST_LOOKUPS = ("__in", "__range")  # the admin splits `id__in=1,2,3` at the commas; each item is looked up
_REGEX_LOOKUPS = ("__regex", "__iregex")
MAX_REGEX = 10_000  # characters: re.compile takes about a microsecond a character (5 MB: seconds), before sign-in
# Every pattern here runs on any request, before sign-in, on values of up to 5 MB: each must take time linear in the
# value. A digit run is tried from its first digit only (the look-behind), not again from each digit inside it.
_LONG_DIGITS = re.compile(r"(?<!\d)\d{4301}")  # Python's int() refuses more than 4,300 digits
# A JSON string, or an unterminated one to the end of the value (so no later quote starts a scan to the end again),
# or a bracket.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_LONE_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _nesting(value: str) -> int:
    """How deep brackets nest in a value, outside JSON strings (an upper bound of its JSON depth)."""
    if "[" not in value and "{" not in value:
        return 0
    depth = deepest = 0
    for token in _JSON_TOKEN.finditer(value):
        char = token[0]
        if char in ("[", "{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_NESTING:
                    break  # already too deep: the rest cannot change the refusal
        elif char in ("]", "}"):
            depth = max(0, depth - 1)
    return deepest


def _whole_number(value: str) -> int | None:
    """The value as a whole number, read as int() reads it (the database layer does: an id, a count, a year), or
    None. int() takes more than digits: spaces around them, underscores between them (9_223_372_036_854_775_808) and
    digits of other scripts, so matching digits alone let a number past 64 bits through to a 500 (OverflowError)."""
    try:
        return int(value)  # linear in the value: past 4,300 digits int() refuses before converting
    except ValueError:
        return None


def _beyond_64_bits(value: str, number: int | None) -> bool:
    if number is not None:
        return not -INT64 <= number < INT64
    return bool(_INTEGER.fullmatch(value)) and len(value) > 20  # digits int() will not read: past 4,300 of them


def _not_a_regex(value: str, case_blind: bool) -> str | None:
    if len(value) > MAX_REGEX:
        return f"is a regular expression of more than {MAX_REGEX:,} characters"
    if connection.vendor != "sqlite":
        # PostgreSQL reads its own dialect (\m, \y), which Python's re refuses: one it cannot read is its DataError,
        # answered 400 by prefloop.dbfaults
        return None
    try:
        re.compile(("(?i)" if case_blind else "") + value)  # as SQLite's REGEXP runs it: iregex puts (?i) in front
    except (re.error, ValueError, RecursionError, OverflowError) as exc:
        # ( nested thousands deep is a RecursionError; "(?a)(?u)x" a ValueError (flags that exclude each other)
        return f"is not a regular expression Python can read ({exc})"
    return None


def unusable(name: str, value: str) -> str | None:
    """Why no page can use this parameter, or None when it may go on to the view."""
    if "\x00" in name or "\x00" in value:
        return "holds a NUL character"
    number = _whole_number(value)
    if _beyond_64_bits(value, number):
        return "is a whole number beyond 64 bits"
    if name.endswith(_LIST_LOOKUPS) and "," in value and any(
            _beyond_64_bits(item, _whole_number(item)) for item in value.split(",")):
        return "holds a whole number beyond 64 bits"
    if _LONG_DIGITS.search(value):
        return "holds a number of more than 4,300 digits"
    if "\\u" in value and _LONE_SURROGATE.search(value):
        return "holds a JSON escape of a lone surrogate (\\ud800-\\udfff), which is not text"
    if _nesting(value) > MAX_NESTING:
        return f"is nested more than {MAX_NESTING} levels deep"
    if name.endswith(_YEAR_LOOKUPS) and number is not None and not 1 <= number <= 9999:
        # A year lookup (`created__year=99999`, `created__year__gt=0`) is run as a range of dates built from the
        # year: one no date holds failed with a 500 (ValueError: year is out of range).
        return "is not a year (1 to 9999)"
    if name.endswith(_DATE_PARTS) and number is not None and not 0 <= number <= 9999:
        # The admin's date hierarchy (`attempt_time__year=...`) builds a date from these and fails with a 500
        # (OverflowError) on a year past what a date holds.
        return "is not a year, month or day"
    if name.endswith(_REGEX_LOOKUPS):
        # A pattern re cannot read failed inside SQLite's REGEXP function: an OperationalError, answered as if the
        # database were down (503, "the page retries") where the filter itself was wrong.
        why = _not_a_regex(value, case_blind=name.endswith("__iregex"))
        if why:
            return why
    if name == "_selected_action" and not _INTEGER.fullmatch(value):
        # The admin's bulk actions filter on the selected ids and fail with a 500 (ValueError) on one that is no number.
        return "is not the id of a row"
    if name == "_to_field" and not value:
        # Django's admin looks up a field named by `_to_field` and fails with a 500 when it is given empty.
        return "is empty"
    return None


def _refusal(request: HttpRequest, *, read_form: bool = True) -> str | None:
    sources = [("query", request.GET)]
    # The API's bodies are JSON, but for one upload (POST /api/v1/jobs/import, whose fields ImportForm checks): reading
    # a form here would consume the body its parser reads next (a multipart POST to a JSON endpoint was a 500), and
    # the API refuses a body that is not JSON with its own 400.
    form = request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")
    if read_form and request.method == "POST" and form and not request.path.startswith("/api/"):
        sources.append(("form", request.POST))
    for where, params in sources:
        for name, values in params.lists():
            for value in values:
                why = unusable(name, value)
                if why:
                    shown = name.replace("\x00", "\\x00")[:60]
                    return f"The {where} parameter {shown!r} {why}: no page of PrefLoop takes such a value."
    return None


def _refuse(request: HttpRequest, text: str, status: int) -> HttpResponse:
    """Plain text for pages; JSON {"detail": ...} for the API, whose callers parse every answer."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": text}, status=status)
    return HttpResponse(text, status=status, content_type="text/plain")


def upload_paths() -> tuple[str, ...]:
    """The paths that take a file larger than an ordinary request body: the Import page and the API's import job."""
    from django.urls import reverse

    return (reverse("annotate:import"), "/api/v1/jobs/import")


def _sent_by_staff(request: HttpRequest) -> bool:
    """Whether a signed-in staff session or a staff member's API token sends this request (read before the body)."""
    header = request.headers.get("Authorization", "")
    if header:
        from api.tokens import user_for_token

        scheme, _, token = header.partition(" ")
        user = user_for_token(token.strip()) if scheme.lower() == "bearer" else None
    else:
        user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


def declared_length(request: HttpRequest) -> int | None:
    """The body's length as its Content-Length header declares it (0 when there is none), None when it is no number."""
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None


class LargeUploadSenderMiddleware:
    """After the session and authentication: a body over DATA_UPLOAD_MAX_MEMORY_SIZE (only an upload path's may be)
    is read only for staff. Anyone else is refused with 403 before the CSRF check reads, and spools to disk, up to
    PREFLOOP_MAX_UPLOAD_BYTES of it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = declared_length(request) or 0  # a bad header: RequestSizeLimitMiddleware answered already
        if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            if not _sent_by_staff(request):
                return _refuse(request, f"An upload over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 2**20:.0f} MiB is "
                                        "taken only from a signed-in staff member or a staff member's API token.", 403)
            refusal = _refusal(request)  # the form's parameters, which RequestSizeLimitMiddleware left unread
            if refusal:
                return _refuse(request, refusal, 400)
        return self.get_response(request)


# codecs that are text encodings to Python but no character set a form is sent in: they transform text (IDNA host
# names, Python string escapes) and fail or alter what a form's fields read
_NOT_CHARSETS = {"idna", "punycode", "unicode-escape", "raw-unicode-escape", "utf-7"}
_ASCII_PROBE = bytes(range(32, 127)) + b"\r\n\t"


def _reads_as_text(charset: str) -> bool:
    """Whether a request's charset is a character set in which a form's ASCII (names, '=', '&', boundaries) reads
    as itself: utf-8, latin-1, windows-1252, shift_jis; not base64 or rot13 (not text encodings), utf-16 or
    EBCDIC (ASCII reads otherwise), nor idna or the escape codecs."""
    try:
        info = codecs.lookup(charset)
    except LookupError:
        return True  # Django ignores a charset it does not know and reads the body as DEFAULT_CHARSET
    except ValueError:  # a NUL in the name: Django's own lookup raised it, a 500
        return False
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return False
    try:
        return _ASCII_PROBE.decode(info.name) == _ASCII_PROBE.decode("ascii")
    except (UnicodeError, LookupError):
        return False


class CharsetCheckedRequest(WSGIRequest):
    """Django's request, but a charset that is no character set (`_reads_as_text`) is set aside as it is read, in
    `refused_charset`, for RequestSizeLimitMiddleware to refuse with a 400: Django decodes the query string with the
    request's charset as it builds the request, so a GET with a query and `Content-Type: text/plain; charset=base64`
    failed there, before any middleware, with a 500. The server's handler (prefloop.wsgi) builds these."""

    refused_charset: str | None = None

    def _set_content_type_params(self, meta):
        self.content_type, self.content_params = parse_header_parameters(meta.get("CONTENT_TYPE", ""))
        charset = self.content_params.get("charset")
        if charset and not _reads_as_text(charset):
            self.refused_charset = self.content_params.pop("charset")
        elif charset:
            try:  # as Django's own: a charset it does not know is ignored (the body read as DEFAULT_CHARSET)
                codecs.lookup(charset)
            except LookupError:
                return
            self.encoding = charset


class RequestSizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = declared_length(request)
        if length is None:
            return _refuse(request, "Bad Content-Length header.", 400)
        charset = getattr(request, "refused_charset", None) or request.content_params.get("charset")
        if charset and not _reads_as_text(charset):
            # Django decodes the query and the form with the charset a request names; one that is no character set
            # (base64, rot13, idna) failed as it was read, with a 500, before sign-in
            shown = charset.replace("\x00", "\\x00")[:40]
            return _refuse(request, f"The Content-Type names charset {shown!r}, which is not a character set "
                                    "PrefLoop reads: send UTF-8 (or name no charset).", 400)
        # a file upload (multipart) up to PREFLOOP_MAX_UPLOAD_BYTES; any other body (JSON, a form) is read into
        # memory, up to Django's DATA_UPLOAD_MAX_MEMORY_SIZE, and was told the upload limit it never had
        upload = request.content_type == "multipart/form-data" and request.path_info in upload_paths()
        limit = settings.PREFLOOP_MAX_UPLOAD_BYTES if upload else settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if length > limit:
            what, setting = (("upload", "PREFLOOP_MAX_UPLOAD_BYTES") if upload
                             else ("request body", "DATA_UPLOAD_MAX_MEMORY_SIZE"))
            return _refuse(
                request, f"The {what} is too large: {length / 2**20:.1f} MiB, the limit is {limit / 2**20:.0f} MiB "
                f"({setting}){'' if upload else ': send the rows in smaller batches'}.", 413,
            )
        # a body larger than an ordinary one is read only once LargeUploadSenderMiddleware knows who sends it
        refusal = _refusal(request, read_form=length <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        if refusal:
            return _refuse(request, refusal, 400)
        return self.get_response(request)
