"""Labelling rounds from code: list them with their pair counts, create one, change one. Each goes through the
rounds page's own form (the same bounds, the same judge check) and annotate.rounds.save_round (an overlap change
reaches the round's pairs), so a round made here is one the page could have made."""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from django.db import IntegrityError, transaction
from django.http import HttpRequest
from ninja import Router, Schema, Status
from ninja.errors import HttpError, ValidationError
from pydantic import Field

from annotate import rounds as labelling_rounds
from annotate.forms import LabellingRoundForm
from annotate.models import MAX_NUMBER, LabellingRound, QueueOrder

from .auth import STAFF, staff
from .fields import Body, Fraction, Name, Number, Text

router = Router(tags=["labelling rounds"])
FIELDS = ("number", *labelling_rounds.SETTINGS)
ORDERS = tuple(QueueOrder.values)


class RoundOut(Schema):
    number: int
    guidelines: str
    labels_per_pair: int
    gold_rate: float
    queue_order: str
    route_judge: str
    route_threshold: float
    audit_share: float
    close_width: float | None
    closed_at: datetime | None
    closed_reason: str
    pairs: int = Field(description="Pairs of the round (gold pairs not counted).")
    open_pairs: int = Field(description="Of those, pairs that still need labels.")
    gold_pairs: int


class RoundChange(Body):
    """Every field may be left out: a new round takes the rounds page's defaults, a change keeps what is stored.
    Only close_width takes null (the round never closes by itself)."""

    guidelines: Text = Field(None, description="Shown above every pair of the round (Markdown).")
    labels_per_pair: Number = Field(None, description="How many people label each pair (overlap).")
    gold_rate: Fraction = None
    queue_order: Literal[ORDERS] = None  # type: ignore[valid-type]
    route_judge: Name = Field(None, description="A judge path to route pairs between it and people; '' for none.")
    route_threshold: Fraction = None
    audit_share: Fraction = None
    close_width: Fraction | None = Field(None, description="Close labelling when the held-out accuracy interval is "
                                                           "narrower than this; null: never by itself.")


class RoundIn(RoundChange):
    number: Number = Field(None, description="The round's number; left out: one more than the highest.")


def _out(row: labelling_rounds.RoundRow) -> dict:
    r = row.round
    return {**{name: getattr(r, name) for name in FIELDS}, "closed_at": r.closed_at, "closed_reason": r.closed_reason,
            "pairs": row.pairs, "open_pairs": row.open_pairs, "gold_pairs": row.gold_pairs}


def _row(number: int) -> dict:
    for row in labelling_rounds.round_rows():
        if row.round.number == number:
            return _out(row)
    raise HttpError(404, f"no labelling round {number}")


def _checked(form: LabellingRoundForm) -> None:
    """The form's refusal, named field by field as a refused body's fields are: in `detail` and in `errors` (the
    form's bounds, labels_per_pair 0 say, gave `detail` alone, where pydantic's, -1, listed `errors` too)."""
    if not form.is_valid():
        raise ValidationError([{"loc": ("body",) if field == "__all__" else ("body", field), "msg": " ".join(messages)}
                               for field, messages in form.errors.items()])


def _data(instance: LabellingRound, given: dict) -> dict:
    """What the form is sent: the stored (or default) value of every field, with the given ones on top."""
    values = {name: getattr(instance, name) for name in FIELDS}
    values.update(given)
    return {k: "" if v is None else v for k, v in values.items()}


@router.get("", auth=STAFF, response=list[RoundOut], summary="List the labelling rounds")
def list_rounds(request: HttpRequest):
    return [_out(row) for row in labelling_rounds.round_rows()]


@router.get("/{number}", auth=STAFF, response=RoundOut, summary="One labelling round")
def get_round(request: HttpRequest, number: Number):
    return _row(number)


@router.post("", auth=staff("annotate.add_labellinground"), response={201: RoundOut}, summary="Create a labelling round")
def create_round(request: HttpRequest, payload: RoundIn):
    given = payload.dict(exclude_unset=True)
    if given.get("number") is None:
        highest = LabellingRound.objects.order_by("-number").values_list("number", flat=True).first()
        given["number"] = 1 if highest is None else highest + 1
        if given["number"] > MAX_NUMBER:
            raise HttpError(409, f"no round number is left after {highest:,}: give a \"number\" of your own")
    if LabellingRound.objects.filter(number=given["number"]).exists():
        raise HttpError(409, f"labelling round {given['number']} exists already: change it with PATCH "
                             f"/api/v1/labelling-rounds/{given['number']}")
    form = LabellingRoundForm(_data(LabellingRound(), given), user=request.user)
    _checked(form)
    try:
        with transaction.atomic():
            made = form.save()
    except IntegrityError:  # another request took the number between the check and the save
        raise HttpError(409, f"labelling round {given['number']} exists already (made by another request just now): "
                             "send the request again") from None
    return Status(201, _row(made.number))


@router.patch("/{number}", auth=staff("annotate.change_labellinground"), response=RoundOut, summary="Change a labelling round")
def change_round(request: HttpRequest, number: Number, payload: RoundChange):
    """Only the fields sent change. A new overlap reaches the round's pairs as on its page: pairs people label need
    that many more (or fewer) labels from now on."""
    stored = LabellingRound.objects.filter(number=number).first()
    if stored is None:
        raise HttpError(404, f"no labelling round {number}")
    sent = payload.dict(exclude_unset=True)
    form = LabellingRoundForm(_data(stored, sent), instance=stored, user=request.user)
    _checked(form)
    try:
        labelling_rounds.save_round(form.save(commit=False), sent)  # only what was sent: not what was read
    except LabellingRound.DoesNotExist:
        raise HttpError(404, f"no labelling round {number} (deleted meanwhile)") from None
    return _row(number)
