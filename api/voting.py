"""People's blind votes through the API, for custom front ends and scripts: the next comparison of a blind set for
the caller, and a vote on it, with the same rules as the set's page (compare.views): nothing names a version until
the vote, a comparison whose answers the caller has seen named is left out, and the first vote stands."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Router, Schema
from ninja.errors import HttpError
from pydantic import Field

from annotate.services import is_automatic
from compare import services
from compare.models import CompareJob, Comparison
from jobs.models import ACTIVE
from prefcore import outcomes

from .auth import only
from .fields import Body, Id, found

router = Router(tags=["compare"])


class ComparisonOut(Schema):
    set: int
    voted: int = Field(description="Comparisons of the set the caller has voted on.")
    count: int = Field(description="Comparisons of the set the caller can vote on blind, voted ones included.")
    left_out: list[str] = Field(description="Why some were left out for the caller (answers seen named elsewhere).")
    comparison: int | None = Field(description="The next one to vote on; null when none is left for the caller.")
    prompt: list[dict[str, Any]] = Field(description="The chat the versions answered, as {role, content} messages.")
    left: str
    right: str


class VoteIn(Body):
    side: Literal["left", "right", "tie", "both_bad"]


class VoteOut(Schema):
    comparison: int
    side: str = Field(description="The vote that stands, as sent: left, right, tie or both_bad.")
    recorded: bool = Field(description="Whether this call stored it: false when the caller's earlier vote stands "
                                       "(a vote stands once the versions are shown), `side` then being that one.")
    left_version: str | None
    right_version: str | None


def _person(user, request) -> bool:
    return not is_automatic(user)


PEOPLE = only(_person, "an automatic account's votes are a judge's: start the set with its judge (POST /jobs/compare "
                       "with judge), which stores them as the judge's")


def _open_set(job_id: int) -> CompareJob:
    job = found(CompareJob, job_id, "comparison set")
    refused = services.set_refusal(job)  # as a vote on one of its comparisons is refused
    if refused:
        kind, why = refused
        raise HttpError(400 if kind == "side_by_side" else 409, why)
    if not job.comparisons.exists():
        raise HttpError(409, f"comparison set {job.pk} is {job.status}: it has no comparisons to vote on")
    return job


class SetOut(Schema):
    set: int
    comparisons: int
    voted: int = Field(description="The caller's votes on it.")
    created: datetime


@router.get("/sets", auth=PEOPLE, response=list[SetOut], summary="Blind sets open to votes (newest first, 50 at most)")
def open_sets(request: HttpRequest):
    """The answered blind sets, newest first, with the caller's votes on each: where a front end finds the sets to
    serve (GET /jobs is staff's). No version is named, as on the sets' own pages before a vote."""
    sets = services.sets_with_counts(request.user).filter(blind=True, n__gt=0).exclude(status__in=ACTIVE)[:50]
    return [{"set": job.pk, "comparisons": job.n, "voted": job.mine, "created": job.created} for job in sets]


@router.get("/sets/{job_id}/next", auth=PEOPLE, response=ComparisonOut,
            summary="The next comparison of a blind set to vote on")
def next_comparison(request: HttpRequest, job_id: Id):
    """The set's first comparison the caller has not voted on and can vote on blind, its sides as stored (random),
    naming no version; `comparison` null when none is left for the caller."""
    job = _open_set(job_id)
    progress = services.blind_progress(job, request.user)
    comparison = progress["comparison"]
    shown: dict[str, Any] = {"comparison": None, "prompt": [], "left": "", "right": ""}
    if comparison is not None:
        left, right = ((comparison.response_a, comparison.response_b) if comparison.left_is_a
                       else (comparison.response_b, comparison.response_a))
        shown = {"comparison": comparison.pk, "prompt": comparison.prompt.chat, "left": left.text, "right": right.text}
    return {"set": job.pk, "voted": progress["voted"], "count": progress["count"], "left_out": progress["left_out"],
            **shown}


@router.post("/comparisons/{comparison_id}/vote", auth=PEOPLE, response=VoteOut,
             summary="Vote on a comparison (left, right, tie, both_bad)")
def vote(request: HttpRequest, comparison_id: Id, payload: VoteIn):
    """The caller's vote, as the set's page takes a key: then which version was on which side. A second vote on
    the same comparison changes nothing (`recorded` false, the first one's side)."""
    comparison = found(Comparison.objects.select_related("job", "response_a__version", "response_b__version"),
                       comparison_id, "comparison")
    refused = services.refusal_to_vote(comparison, request.user)  # the set page's refusals (compare.views.vote)
    if refused:
        kind, why = refused
        raise HttpError({"side_by_side": 400, "automatic": 403}.get(kind, 409), f"comparison {comparison.pk}: {why}")
    outcome = services.outcome_for_side(comparison, payload.side)
    try:
        services.record_vote(comparison, request.user, outcome)
        recorded = True
    except services.AlreadyVoted:
        recorded = False  # the first vote stands
    stands = comparison.votes.get(voter=request.user).outcome
    left, right = ((comparison.response_a, comparison.response_b) if comparison.left_is_a
                   else (comparison.response_b, comparison.response_a))
    # an answer of no version (an imported one, in a comparison made in the admin): null, as the page shows none
    return {"comparison": comparison.pk, "side": outcomes.side_for_outcome(stands, comparison.left_is_a),
            "recorded": recorded, "left_version": left.version.name if left.version else None,
            "right_version": right.version.name if right.version else None}
