"""The versioned JSON API (/api/v1/): one NinjaAPI with the routers of each area, token or session sign-in, and
errors as JSON {"detail": "..."} a person can act on. Every endpoint calls the apps' services; none holds logic."""
from __future__ import annotations

import json

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser

from annotate.exporters import ExportError
from annotate.importers import ImportProblem
from annotate.services import ByLeaseOnly, LabelError
from compare.services import CompareError
from generation.services import GenerationError
from jobs.lifecycle import AlreadyActive
from judges import JudgeError
from loop.services import LoopError
from prefcore.rows import DuplicateKey, repeated_key, unique_keys
from training.services import AlreadyRunning, TrainingError

from . import data, jobs, labelling, rounds, versions, voting
from .auth import SessionAuth, TokenAuth
from .fields import FIELDS_ERROR, refuse_stray_query


class JSONParser(Parser):
    """json.loads, with every way a body can fail (bad JSON, nesting deep enough to exhaust the stack, a number of
    thousands of digits) a 400 that says which."""

    def parse_body(self, request: HttpRequest):
        try:
            return json.loads(request.body, object_pairs_hook=unique_keys)
        except UnicodeDecodeError as exc:
            raise HttpError(400, f"the request body is not UTF-8 (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise HttpError(400, f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                                 f"column {exc.colno}") from None
        except RecursionError:
            raise HttpError(400, "the request body is JSON nested too deeply") from None
        except DuplicateKey as exc:  # {"rows": [...], "rows": []} pushed nothing, without a word
            found = None
            if request.method == "POST" and request.path.rstrip("/").endswith(PUSHES):  # only a push has rows
                try:
                    found = _duplicate_in(request.body)
                except (RecursionError, ValueError):  # nested past the stack after the duplicate, 5,000 digits
                    pass
            if found is not None and found[0] is not None:  # in a pushed row: named as its other problems are
                line, key = found
                raise ImportProblem([f"{data.SOURCE}: line {line}: field {key!r}: given twice in one object: which "
                                     "value is meant cannot be told"]) from None
            message = str(exc)
            if found is not None:  # the body's own field: named before any row's (the parser met the inner first)
                message = f"the key {found[1]!r} is given twice in one object: which value is meant cannot be told"
            raise HttpError(400, f"the request body is refused: {message}") from None
        except ValueError as exc:  # an integer past Python's 4,300 digits
            raise HttpError(400, f"the request body holds a value no field takes: {exc}") from None


PUSHES = ("/prompts", "/pairs", "/preferences")  # the operations whose body holds `rows` (api.data)


class _Marked(dict):
    """A parsed object that named `twice` more than once (the last value kept)."""

    twice: str | None = None


def _marking(pairs: list) -> dict:
    found = _Marked(pairs)
    if len(found) < len(pairs):
        found.twice = repeated_key(pairs)
    return found


def _duplicate_in(body: bytes) -> tuple[int | None, str] | None:
    """Where a push's body gives a key twice: (None, key) for the body's own field, else (row, key) for the first row
    of `rows` (counting from 1) holding such an object at any depth; None when neither (elsewhere in the body)."""
    parsed = json.loads(body, object_pairs_hook=_marking)  # it parsed once already: only the duplicate stopped it
    if not isinstance(parsed, _Marked):
        return None
    if parsed.twice is not None:
        return None, parsed.twice

    def twice(value) -> str | None:
        if isinstance(value, _Marked) and value.twice is not None:
            return value.twice
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        return next((key for key in map(twice, children) if key is not None), None)

    rows = parsed.get("rows") if isinstance(parsed, dict) else None
    for line, row in enumerate(rows if isinstance(rows, list) else [], 1):
        key = twice(row)
        if key is not None:
            return line, key
    return None


api = NinjaAPI(
    title="PrefLoop API", version="1", urls_namespace="api-v1", auth=[TokenAuth(), SessionAuth()],
    parser=JSONParser(), docs_url="/docs",
    description="Push prompts, pairs and preferences; pull decided preferences; run generation, training, "
                "comparison and loop jobs; label pairs. Send `Authorization: Bearer <token>` (make a token on your "
                "account page). docs/api.md has examples.",
)
# A query parameter an operation does not declare is refused by name, on every operation (docs/api.md).
api.add_decorator(refuse_stray_query, mode="operation")
api.add_router("/", data.router)
api.add_router("/", versions.router)
api.add_router("/jobs", jobs.router)
api.add_router("/label", labelling.router)
api.add_router("/labelling-rounds", rounds.router)
api.add_router("/compare", voting.router)


def _error(request, status: int, detail: str, **more):
    return api.create_response(request, {"detail": detail, **more}, status=status)


BODY_PARAMETERS = ("payload", "body")  # the names the operations give their body's schema (ninja puts it in `loc`)


def _field(loc) -> str:
    """The field's name as a caller wrote it: ("body", "payload", "rows", 3) is rows.3, ("body", "body", "reason")
    is reason (the promote operation's body, named body.reason), ("form", "kind") is kind and ("file", "file") is
    file (the upload's form and file parts were named form.kind and file.file)."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "form", "file", "header", "cookie"):
        source, parts = parts[0], parts[1:]
        if source == "body" and parts and parts[0] in BODY_PARAMETERS:
            parts = parts[1:]
    return ".".join(str(p) for p in parts) or "body"


def _fields(error: dict) -> list[str]:
    """The fields one error is about: its own, or each one a body's refusal as a whole names (fields.fields_error),
    under the place the body's own fields are reported."""
    named = error.get("ctx", {}).get("fields") if error.get("type") == FIELDS_ERROR else None
    if not named:
        return [_field(error.get("loc", ()))]
    return [_field((*error.get("loc", ()), name)) for name in named]


def _message(error: dict) -> str:
    if error.get("type") == "extra_forbidden":  # pydantic's "Extra inputs are not permitted" names no way out
        return "not a field of this operation (check its spelling against the schema in /api/v1/docs)"
    return error.get("msg", "invalid")


@api.exception_handler(ValidationError)
def _invalid(request, exc: ValidationError):
    errors = [{"field": field, "message": _message(e)} for e in exc.errors for field in _fields(e)]
    text = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:10])
    return _error(request, 400, f"the request was refused, nothing was changed: {text}", errors=errors)


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    detail = str(exc)
    if detail == "Cannot parse request body" and exc.__cause__ is not None:
        if isinstance(exc.__cause__, ImportProblem):  # a pushed row the parser refused (a key given twice): by line
            return _import_problem(request, exc.__cause__)
        detail = str(exc.__cause__)
    return _error(request, exc.status_code, detail)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request, exc):
    return _error(request, 401, "sign in: send 'Authorization: Bearer <token>' (make a token on your account page)")


@api.exception_handler(ImportProblem)
def _import_problem(request, exc: ImportProblem):
    problems = list(exc.problems[:50])
    return _error(request, 400, "the rows were refused and nothing was stored: " + "; ".join(problems[:5]),
                  problems=problems)


@api.exception_handler(RequestDataTooBig)
def _too_big(request, exc):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 2**20
    return _error(request, 413, f"the request body is over the size limit of {limit:.0f} MiB: send the rows in "
                                "smaller batches")


@api.exception_handler(Http404)
def _not_found(request, exc):
    return _error(request, 404, str(exc) or "not found")


@api.exception_handler(PermissionDenied)
def _denied(request, exc):
    return _error(request, 403, str(exc) or "not allowed")


@api.exception_handler(AlreadyActive)
def _twin(request, exc):
    """The same job started again while the first is active (a retried request whose answer was lost): a conflict,
    with the first job as `job`, so a script can go on with it instead of parsing the sentence."""
    return _error(request, 409, str(exc), job=jobs.describe(jobs.kind_of(exc.job), exc.job))


# (a subclass's own status wins over its domain's: the handler is looked up along the exception's MRO)
for _domain, _status in ((GenerationError, 400), (TrainingError, 400), (AlreadyRunning, 409), (LoopError, 400),
                         (CompareError, 400), (ByLeaseOnly, 400), (LabelError, 409), (ExportError, 409),
                         (JudgeError, 400)):
    api.add_exception_handler(_domain, lambda request, exc, status=_status: _error(request, status, str(exc)))
