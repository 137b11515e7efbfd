"""Model versions and how they compare: the versions with their lineage, promotion (staff), the leaderboard and
one round's metrics."""
from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.http import Http404, HttpRequest
from ninja import Query, Router, Schema, Status
from ninja.errors import HttpError, ValidationError
from pydantic import Field

from compare import leaderboard
from generation.length import VersionLength, version_length, version_lengths
from generation.models import ModelVersion
from generation.services import GenerationError, given_folder, register_version, version_folder_problem
from prefloop.access import may, refusal
from training import dashboard, promotion
from training.models import TrainingRun

from .auth import STAFF, staff
from .fields import Body, Id, Name, NoBody, Number, Reason, found

router = Router(tags=["versions"])


class VersionOut(Schema):
    id: int
    name: str
    round: int
    kind: str
    parent: str | None
    lineage: list[str] = Field(description="Names from the base to this version.")
    is_current: bool
    size_bytes: int
    mean_response_tokens: float | None = Field(description="Mean tokens over every answer of the version stored, as the "
                                                            "pages show it (generation, comparison and loop answers)")
    made_by_run: int | None
    created: datetime


def _version(v: ModelVersion, runs: dict[int, int], lengths: dict[int, VersionLength] | None = None) -> dict:
    """`lengths`: version_lengths of the versions listed (one query for a list); None: this version's is measured.
    Never the stored ModelVersion.mean_response_tokens: only a generation job or a round's measuring writes it, so
    answers of comparisons and loop evaluations left it stale or empty where the pages measured them."""
    length = lengths[v.pk] if lengths is not None else version_length(v)
    return {
        "id": v.pk, "name": v.name, "round": v.round, "kind": v.kind, "parent": v.parent.name if v.parent else None,
        "lineage": [node.name for node in v.lineage()], "is_current": v.is_current, "size_bytes": v.size_bytes,
        "mean_response_tokens": length.mean, "made_by_run": runs.get(v.pk), "created": v.created,
    }


def _runs_by_output() -> dict[int, int]:
    return dict(TrainingRun.objects.filter(output_version__isnull=False).values_list("output_version_id", "pk"))


@router.get("/versions", response=list[VersionOut], summary="Model versions with their lineage")
def list_versions(request: HttpRequest):
    versions = list(ModelVersion.objects.select_related("parent").order_by("round", "created"))
    runs, lengths = _runs_by_output(), version_lengths([v.pk for v in versions])
    return [_version(v, runs, lengths) for v in versions]


@router.get("/versions/{version_id}", response=VersionOut, summary="One model version")
def get_version(request: HttpRequest, version_id: Id):
    version = found(ModelVersion.objects.select_related("parent"), version_id, "model version")
    return _version(version, _runs_by_output())


class VersionIn(Body):
    name: Name = Field(description="A name no version has (1 to 100 characters).")
    path: Name = Field(description="The folder on the server holding the checkpoint (config.json and its weights) "
                                   "or, for kind \"lora\", the adapter (adapter_config.json and its weights); "
                                   "stored absolute.")
    kind: Literal["full", "lora"] = Field("full", description="\"full\" checkpoint or \"lora\" adapter.")
    parent: Id | None = Field(None, description="The version it was trained from, if any (its round is one more).")
    base: Id | None = Field(None, description="For an adapter: the full checkpoint it applies to.")
    make_current: bool = Field(False, description="Make it the current version at once (recorded, as a rollback "
                                                  "from the Train page is; needs generation.change_modelversion, "
                                                  "as a rollback does).")


@router.post("/versions", auth=staff("generation.add_modelversion"), response={201: VersionOut},
             summary="Register a model folder as a version (staff)")
def register(request: HttpRequest, body: VersionIn):
    """A checkpoint or adapter made elsewhere (trained by another tool, or the same base under another name), for
    generation jobs, comparisons and rounds to use, as the admin's "add model version" does. The folder must hold
    its configuration and weights (looked for now, on the web server: workers read the same path; they are not
    loaded, so weights that do not fit the configuration fail the first job on the version); nothing is stored when
    a field is refused (400, naming it) or the name is taken (409)."""
    def refused(field: str, message: str) -> ValidationError:  # named in errors[].field, as a body's own fields are
        return ValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])

    # making it current changes the model every job uses, as a promotion or rollback does: their permission too
    if body.make_current and not may(request.user, "generation.change_modelversion"):
        raise HttpError(403, f"make_current: {refusal('generation.change_modelversion')}")
    name = body.name.strip()
    if not 1 <= len(name) <= 100:
        raise refused("name", "1 to 100 characters")
    if ModelVersion.objects.filter(name=name).exists():
        raise HttpError(409, f"name: a version named {name!r} exists already")
    try:
        folder = given_folder(body.path)
    except GenerationError as exc:
        raise refused("path", str(exc)) from None
    if problem := version_folder_problem(folder, body.kind):
        raise refused("path", problem)
    rows = {}
    for field in ("parent", "base"):
        pk = getattr(body, field)
        rows[field] = ModelVersion.objects.filter(pk=pk).first() if pk else None
        if pk and rows[field] is None:
            raise refused(field, f"no model version with id {pk}")
    candidate = ModelVersion(name=name, kind=body.kind, **rows)
    try:
        candidate.clean()  # the lineage and the adapter's base, as the admin checks them
    except DjangoValidationError as exc:
        raise ValidationError([{"loc": ("body", field), "msg": " ".join(messages), "type": "value_error"}
                               for field, messages in exc.message_dict.items()]) from None
    try:
        with transaction.atomic():
            version = register_version(name, folder, make_current=False, kind=body.kind, **rows)
            if body.make_current:
                promotion.rollback(version, user=request.user, reason="registered through the API and made current")
    except IntegrityError:  # the same name registered meanwhile
        raise HttpError(409, f"name: a version named {name!r} exists already") from None
    except (GenerationError, promotion.PromotionError) as exc:
        raise refused("path", str(exc)) from None
    version.refresh_from_db()
    return Status(201, _version(version, _runs_by_output()))


class PromoteIn(Body):
    reason: Reason = Field("", description="Why (recorded with the change). Required to promote a candidate that has "
                                         "not passed the gate (by hand); optional to roll back to any other version.")


class GateOut(Schema):
    passed: bool
    reason: str = Field(description="What it passed on, or each bound it missed with the measured figure.")
    current: VersionOut = Field(description="The current version after the check.")


def _made_by(version: ModelVersion) -> TrainingRun | None:
    return TrainingRun.objects.filter(output_version=version).first()


@router.post("/versions/{version_id}/promote", auth=staff("generation.change_modelversion"), response=VersionOut, summary="Make a version current (staff)")
def promote(request: HttpRequest, version_id: Id, body: PromoteIn | None = None):
    """As the Train page does it: a candidate a round made becomes current only by passing the gate
    (`POST /versions/{id}/gate`) or by hand with a reason; any other version (base, one that was current before) is
    a rollback. Every change is recorded with who made it and why; a refusal changes nothing (409)."""
    version = found(ModelVersion, version_id, "model version")
    reason = (body.reason if body else "").strip()
    if version.is_current:
        raise HttpError(409, f"version {version.name!r} is already the current one")
    run = _made_by(version)
    try:
        if promotion.awaits_gate(run):
            if not reason:
                raise HttpError(409, f"version {version.name!r} is a candidate that has not passed the promotion gate: "
                                     f"check the gate (POST /api/v1/versions/{version.pk}/gate), or promote it by "
                                     "hand with a \"reason\" (recorded)")
            promotion.promote_by_hand(run, user=request.user, reason=reason)
        else:
            promotion.rollback(version, user=request.user, reason=reason)
    except (promotion.PromotionError, GenerationError) as exc:
        raise HttpError(409, str(exc)) from None
    version.refresh_from_db()
    return _version(version, _runs_by_output())


@router.post("/versions/{version_id}/gate", auth=staff("generation.change_modelversion"), response=GateOut, summary="Check a candidate against the gate (staff)")
def check_gate(request: HttpRequest, version_id: Id, payload: NoBody | None = None):
    """Apply the promotion gate to a candidate a round made, against the current version, on the blind votes so far
    (as the Train page's "check the gate"): it becomes current when it passes; the decision is recorded either way."""
    version = found(ModelVersion, version_id, "model version")
    run = _made_by(version)
    if run is None:
        raise HttpError(409, f"version {version.name!r} was not made by a training round here: there is no gate "
                             "to check (promote it to make it current)")
    if not promotion.awaits_gate(run):
        raise HttpError(409, f"version {version.name!r} has had its gate decision ({run.decision}): promote it to "
                             "make it current again")
    try:
        result = promotion.check_gate(run)
    except (promotion.PromotionError, GenerationError) as exc:
        raise HttpError(409, str(exc)) from None
    current = ModelVersion.objects.select_related("parent").get(is_current=True)
    return {"passed": result.passed, "reason": result.reason, "current": _version(current, _runs_by_output())}


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a number is sent as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class BoardFilters(Schema):
    automatic: bool = Field(False, description="Count judges' votes too.")


@router.get("/leaderboard", summary="Bradley-Terry ratings of the versions")
def get_leaderboard(request: HttpRequest, filters: Query[BoardFilters]) -> dict:
    """The leaderboard page's figures: each version's rating with its interval, raw and length-controlled (null
    until the length-controlled fit has `lc_needs` votes among the rated versions, `votes` being those it has; 0 once
    it is shown), and `win_rates`: for each pair of rated versions that met, the share of pairs of answers the first
    won against the second (ties and "both bad" half), its 95% Wilson interval, the pairs of answers and the votes
    cast."""
    board = leaderboard.build_board(include_automatic=filters.automatic)
    rows = [_board_row(row) for row in board.rows]
    names = [name for name, _ in board.matrix]
    win_rates = [{"version": name, "against": against, "rate": cell.rate, "low": _finite(cell.low),
                  "high": _finite(cell.high), "pairs": cell.n, "votes": cell.votes}
                 for name, cells in board.matrix for against, cell in zip(names, cells, strict=True)
                 if cell.rate is not None]
    return {"anchor": board.anchor, "votes": board.votes, "length_coef": _finite(board.length_coef),
            "lc_needs": board.lc_needs, "unrated": board.unrated, "message": board.message, "rows": rows,
            "win_rates": win_rates}


def _board_row(row: leaderboard.Row) -> dict:
    """A leaderboard row as JSON: its figures, and its answers' length as counts (not the page's object)."""
    out = {k: _finite(v) for k, v in vars(row).items() if k != "length"}
    out["answers"] = row.length.answers if row.length else 0
    out["truncated_answers"] = row.length.truncated if row.length else 0
    return out


def _run_metrics(run: TrainingRun) -> dict:
    series = dashboard.step_series(run)
    return {
        "run": run.pk, "status": run.status, "input_version": run.input_version.name,
        "output_version": run.output_version.name if run.output_version else None,
        "summary": {k: _finite(v) for k, v in dashboard.numeric_items(run.metrics).items()},
        "steps": {k: [[s, _finite(v)] for s, v in points] for k, points in series.items()},
        "warnings": dashboard.run_warnings(run, series),
    }


@router.get("/rounds/{number}/metrics", auth=STAFF, summary="A round's training metrics (summary and per step)")
def round_metrics(request: HttpRequest, number: Number) -> dict:
    """The training run that made the version of this round (the latest, if several did). Staff only, like the
    training pages."""
    run = (TrainingRun.objects.select_related("input_version", "output_version")
           .filter(output_version__round=number).order_by("-created").first())
    if run is None:
        raise Http404(f"no training run has made a version of round {number}")
    return _run_metrics(run)


@router.get("/training/{run_id}/metrics", auth=STAFF, summary="One training run's metrics (summary and per step)")
def run_metrics(request: HttpRequest, run_id: Id) -> dict:
    return _run_metrics(found(TrainingRun.objects.select_related("input_version", "output_version"), run_id,
                              "training run"))
