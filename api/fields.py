"""Field types the API's request schemas share: ids and numbers the database can hold, text it can store."""
from __future__ import annotations

from functools import wraps
from typing import Annotated

from django.core.exceptions import ImproperlyConfigured
from django.http import Http404
from ninja import Schema
from ninja.errors import HttpError
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from annotate.models import MAX_ID, MAX_NUMBER


def _storable(text: str) -> str:
    """Text PostgreSQL and SQLite both keep: no NUL character, no lone surrogate (neither is valid text)."""
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode text (a lone surrogate)") from None
    return text


def _not_bool(value):
    """JSON true and false are not numbers (pydantic would take them as 1 and 0: `{"pair": true}` leased pair 1,
    `{"gold_rate": true}` made every pair served a gold pair)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    return value


Id = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_not_bool)]
Number = Annotated[int, Field(ge=0, le=MAX_NUMBER), BeforeValidator(_not_bool)]
def Count(low: int, high: int):  # noqa: N802  (a type, named as one)
    """A whole number from `low` to `high` in a request body: how many prompts, rounds, labels (never true or false)."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_not_bool)]


Text = Annotated[str, Field(max_length=20_000), AfterValidator(_storable)]
Name = Annotated[str, Field(max_length=300), AfterValidator(_storable)]
Comment = Annotated[str, Field(max_length=5000), AfterValidator(_storable)]  # as the label page's form takes it
Reason = Annotated[str, Field(max_length=2000), AfterValidator(_storable)]  # a recorded why (VersionChange.reason)
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False), BeforeValidator(_not_bool)]
Seconds = Annotated[float, Field(ge=0, le=86400, allow_inf_nan=False), BeforeValidator(_not_bool)]


FIELDS_ERROR = "fields"


def fields_error(fields: list[str] | tuple[str, ...], message: str) -> PydanticCustomError:
    """A refusal of a body as a whole (two fields that exclude each other, neither of two given) reported under
    each field it is about, as they were sent: raised from a model validator, it was reported under `body`, so a
    program reading errors[].field learned nothing of which fields to change. api.main reads it."""
    return PydanticCustomError(FIELDS_ERROR, "{message}", {"message": message, "fields": tuple(fields)})


class Body(Schema):
    """A request body: a field the operation does not take is refused, named (a typo such as "splt" or "param" was
    dropped without a word, and the operation ran on its defaults: a train split, a full default round)."""

    model_config = ConfigDict(extra="forbid")


class NoBody(Body):
    """The body of an operation that takes none: `{}` or nothing. A field sent is refused by name (`POST /label/next
    {"pair": 5}` leased the queue's own pair, as if the pair asked for were not there)."""


def query_names(operation) -> set[str]:
    """The query parameters a ninja operation declares (a `Query[...]` schema's fields, or plain query arguments)."""
    return {name for model in operation.models if model.__ninja_param_source__ == "query"
            for name in getattr(model, "__ninja_flatten_map__", None) or model.model_fields}


def known_query(request, known: set[str]) -> None:
    """Refuse a query parameter the operation does not take, by name, as Body refuses a field: `?roud=1` (a typo of
    round) answered every round's rows, and a pipeline trained on them. A parameter given twice is refused too:
    `?round=1&round=2` answered round 2's rows alone, as if round 1 had none."""
    stray = sorted(set(request.GET) - known)
    if stray:
        takes = f"it takes {', '.join(sorted(known))}" if known else "it takes none"
        raise HttpError(400, f"{stray[0]}: not a query parameter of this operation ({takes})")
    twice = sorted(name for name in request.GET if len(request.GET.getlist(name)) > 1)
    if twice:
        raise HttpError(400, f"{twice[0]}: given {len(request.GET.getlist(twice[0]))} times; give it once")


def refuse_stray_query(view):
    """Every operation's check of its query (api.main adds it to the whole API): known_query with the parameters
    the operation declares, run after the caller is signed in and the parameters are read, before the operation
    does anything. It was called by hand in some operations and forgotten in the rest, where `?roud=1` or
    `POST /labelling-rounds?number=5` ran as if the parameter were not there."""
    operation = getattr(view, "_ninja_operation", None)
    if operation is None:  # ninja sets it on every operation's function; without it no parameter would be known
        raise ImproperlyConfigured(f"{view.__qualname__}: not a ninja operation, its query parameters are unknown")
    known = query_names(operation)

    @wraps(view)
    def checked(request, *args, **kwargs):
        known_query(request, known)
        return view(request, *args, **kwargs)

    return checked


def found(rows, pk: int, what: str):
    """The row with this id, or a 404 that names what was not found and its id (Django's own says "No TrainingRun
    matches the given query.")."""
    manager = rows.objects if hasattr(rows, "objects") else rows
    row = manager.filter(pk=pk).first()
    if row is None:
        raise Http404(f"no {what} with id {pk}")
    return row

