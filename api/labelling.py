"""Labelling through the API, for custom front ends: lease the next pair, submit a label, skip, undo. Each calls
annotate.services, so a pair is leased to one person at a time and only the pair leased to the caller can be
labelled, exactly as on the label page."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Router, Schema, Status
from pydantic import Field, model_validator

from annotate import services
from annotate.models import BOTH_BAD, LEFT, RIGHT, TIE, Assignment, Pair
from prefloop.access import may

from .auth import only
from .fields import Body, Comment, Id, NoBody, Seconds, fields_error, found

router = Router(tags=["labelling"])


class LeaseOut(Schema):
    lease: int = Field(description="The lease's id: name the pair by it on submit and skip. Leases are numbered as "
                                   "pairs are served, so it tells nothing of the pair (a pair's id would: regular "
                                   "pairs are served oldest first, gold ones at random).")
    round: int | None
    guidelines: str
    prompt: list[dict[str, Any]] = Field(description="The chat so far, as {role, content} messages.")
    left: str
    right: str
    expires_at: datetime


class ChosenLeaseOut(LeaseOut):
    pair: int = Field(description="The pair's id, which the caller chose.")


class NothingLeft(Schema):
    detail: str


class ProgressOut(Schema):
    done: int
    today: int
    remaining: int


def _lease(assignment) -> dict:
    pair = assignment.pair
    left, right = (pair.response_a, pair.response_b) if assignment.left_is_a else (pair.response_b, pair.response_a)
    prompt, round_ = pair.prompt, assignment.shown_round
    return {
        "lease": assignment.pk, "round": round_.number if round_ else None,
        "guidelines": round_.guidelines if round_ else "",
        "prompt": prompt.chat,
        "left": left.text, "right": right.text, "expires_at": assignment.expires_at,
    }


@router.post("/next", response={200: LeaseOut, 204: None}, summary="Lease the next pair to label")
def next_pair(request: HttpRequest, payload: NoBody | None = None):
    """The pair on the caller's screen: the one they hold, or a new lease; 204 when nothing is left to label."""
    assignment = services.next_pair_for(request.user)
    if assignment is None:
        return Status(204, None)
    return Status(200, _lease(assignment))


class LeaseIn(Body):
    pair: Id


def _picks_pairs(user, request) -> bool:
    # staff status alone grants nothing (prefloop.access.may): a label on a pair one picks, a gold pair among them,
    # decides it as a gold answer does, which needs the permission to add labels
    return may(user, PICK_PERM) or services.is_automatic(user)


PICK_PERM = "annotate.add_label"
PICKS_PAIRS = only(_picks_pairs, f"choosing a pair to label is for automatic labellers and staff with the permission "
                                 f"{PICK_PERM!r}: people label the pairs the queue leases them (POST /label/next)")


@router.post("/lease", auth=PICKS_PAIRS, response=ChosenLeaseOut,
             summary="Lease one chosen pair (staff who may add labels, and automatic labellers)")
def lease(request: HttpRequest, payload: LeaseIn):
    """For scripts that pick their pairs. A person's token may not: choosing pairs would skip the gold pairs the
    queue mixes in, its order and its random sides, and let one person label the prompts they pick into the data
    (refused by PICKS_PAIRS before the body is read)."""
    found(Pair, payload.pair, "pair")  # a 404, as for anything that does not exist (the lease rules answer 409)
    return _lease(services.lease_pair(payload.pair, request.user)) | {"pair": payload.pair}


class Leased(Body):
    """The pair leased to the caller, named by the lease's id (as POST /label/next gives it); `pair`, the pair's id,
    is taken from staff and automatic labellers (services.named), for their own leased pair."""

    lease: Id | None = None
    pair: Id | None = None

    @model_validator(mode="after")
    def _one_named(self):
        if self.lease is None and self.pair is None:
            raise fields_error(["lease"], "expected lease, the id POST /label/next gave the pair on your screen")
        if self.lease is not None and self.pair is not None:
            # Both were taken and `pair` dropped without a word: the lease's pair was labelled, not the one named.
            # Refused whether or not they agree, as an answer that differed by whether they do would tell a person
            # which pair is on their screen (the pair ids the leases stand in for).
            raise fields_error(["lease", "pair"], "give lease or pair, not both: the lease names its pair already")
        return self

    def target(self, user) -> services.Lease | int:
        return services.named(user, lease=self.lease, pair=self.pair)


class LabelIn(Leased):
    side: Literal[LEFT, RIGHT, TIE, BOTH_BAD] = Field(description="left, right, tie or both_bad, as shown")  # type: ignore[valid-type]
    strength: Literal["", "slight", "clear"] = ""
    comment: Comment = ""
    seconds: Seconds | None = None


class LabelOut(Schema):
    lease: int
    choice: str = Field(description="a, b, tie or both_bad, in terms of the stored responses")
    side: str
    created: datetime


@router.post("/submit", response=LabelOut, summary="Label the leased pair")
def submit(request: HttpRequest, payload: LabelIn):
    label = services.record_label(payload.target(request.user), request.user, payload.side, strength=payload.strength or None,
                                  comment=payload.comment, seconds=payload.seconds)
    lease = payload.lease or Assignment.objects.filter(pair_id=label.pair_id, annotator=request.user
                                                       ).values_list("pk", flat=True).first()
    return {"lease": lease, "choice": label.choice, "side": label.side, "created": label.created}


@router.post("/skip", response=ProgressOut, summary="Skip the leased pair")
def skip(request: HttpRequest, payload: Leased):
    services.skip(request.user, payload.target(request.user))
    return vars(services.progress_for(request.user))


class UndoIn(Body):
    lease: Id | None = Field(None, description=(
        "The lease whose label to undo (as POST /label/submit answered it): sent again once it was undone, the same "
        "lease answers, leased again, and no earlier label is undone. Without it, the caller's last label."))


@router.post("/undo", response={200: LeaseOut, 409: NothingLeft}, summary="Undo the last label (within a minute)")
def undo(request: HttpRequest, payload: UndoIn | None = None):
    lease = payload.lease if payload else None
    assignment = services.undo_last_label(request.user, lease=lease)
    if assignment is None:
        if lease is not None and not Assignment.objects.filter(pk=lease, annotator=request.user).exists():
            # "for a minute" of a lease that was never the caller's sent people looking at the clock, not the id
            return Status(409, {"detail": f"nothing to undo: lease {lease} is not one of yours (the lease "
                                          "POST /label/submit answered names it)"})
        return Status(409, {"detail": "nothing to undo: labels can be undone for a minute"})
    return Status(200, _lease(assignment))


@router.get("/progress", response=ProgressOut, summary="The caller's labelling progress")
def progress(request: HttpRequest):
    return vars(services.progress_for(request.user))
