"""Long work through the API (staff): start, watch and cancel generation, training, comparison, loop, import and
export jobs, and download a finished export's file.

Starting and cancelling call each app's services, exactly as its page does; watching reads the job's row. Every job
is described in one shape: kind, id, status, progress (0 to 1), error, times, and the kind's own details."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

from django.http import FileResponse, HttpRequest
from ninja import File, Form, Query, Router, Schema, Status, UploadedFile
from ninja.errors import HttpError, ValidationError
from pydantic import Field, model_validator

from annotate import export_jobs, import_jobs
from annotate.forms import ExportForm, ImportForm
from annotate.models import ExportJob, ImportJob
from compare import services as compare_services
from compare.models import CompareJob
from generation import services as generation_services
from generation.backends.base import SamplingConfig
from generation.models import GenerationJob, ModelVersion
from jobs import lifecycle
from loop import services as loop_services
from loop.models import LoopRun
from prefcore.errors import SettingError
from prefloop.access import change_perm
from training import services as training_services
from training.models import TrainingRun

from .auth import STAFF, staff
from .fields import Body, Count, Fraction, Id, Name, NoBody, Number, Text, fields_error, found

router = Router(tags=["jobs"])
Kind = Literal["generation", "training", "compare", "loop", "import", "export"]
MODELS = {"generation": GenerationJob, "training": TrainingRun, "compare": CompareJob, "loop": LoopRun,
          "import": ImportJob, "export": ExportJob}
ACTIVE = ("queued", "running", "cancelling")  # cancelling: the worker is stopping it


def kind_of(job) -> str:
    """The API's name for a job's kind ("compare" for a CompareJob)."""
    return next(kind for kind, model in MODELS.items() if isinstance(job, model))


class JobOut(Schema):
    kind: str
    id: int
    status: str = Field(description="queued, running, cancelling (stopping), succeeded, failed or cancelled")
    active: bool
    progress: float = Field(description="0 to 1, as the job's page shows it")
    stage: str = Field(description="what the job is doing now, as its page says; how it ended once it has")
    error: str
    created: datetime
    started: datetime | None
    finished: datetime | None
    details: dict[str, Any]
    silent_seconds: float | None = Field(
        None, description="while active: seconds without a word from its worker, once over 5 minutes (is its worker "
                          "running?); null otherwise, as its page says")
    runner_gone: bool = Field(
        False, description="while active: the command running it in the foreground has ended without finishing it "
                           "(killed); Cancel ends it at once")


def _progress(job) -> float:
    """The fraction the job's page shows: within a unit too (a generation's tokens so far), where done / total moved
    only when a whole chunk of prompts was stored (0 for a whole one-chunk run, then 1). Below 1 while the job is
    active, as the page's 99% is: a run measuring its trained version said 1.0 with "active": true."""
    return min(1.0 if not job.is_active else 0.99, max(0.0, float(job.progress or 0.0)))


def _details(kind: str, job) -> dict[str, Any]:
    # each version by name and by id: the operations that take a version (compare, promote, gate) take its id, and
    # a script had to list every version to find a round's candidate by its name
    if kind == "generation":
        return {"version": job.version.name, "version_id": job.version_id, "done": job.done, "total": job.total,
                "pairs_made": job.pairs_made}
    if kind == "training":
        return {"input_version": job.input_version.name, "input_version_id": job.input_version_id,
                "output_version": job.output_version.name if job.output_version else None,
                "output_version_id": job.output_version_id,
                "step": job.step, "total_steps": job.total_steps, "pairs": job.pairs, "metrics_url":
                f"/api/v1/training/{job.pk}/metrics"}
    if kind == "compare":
        return {"version_a": job.version_a.name, "version_a_id": job.version_a_id, "version_b": job.version_b.name,
                "version_b_id": job.version_b_id, "done": job.done,
                "total": job.total, "blind": job.blind,
                # people's votes, as the set's page counts them; judges' apart (they count for the gate)
                "summary": compare_services.job_summary(job),
                "judges_summary": compare_services.job_summary(job, automatic_only=True)}
    if kind == "import":
        return {"file_name": job.file_name, "import_kind": job.kind, "options": job.options, "done": job.done,
                "total": job.total, "added": job.added, "skipped": job.skipped, "set_aside": job.set_aside,
                "disagreeing": job.disagreeing, "same_answers": job.same_answers, "held_back": job.held_back, "problems": job.problems, "problem_count": job.problem_count,
                "summary": job.summary}
    if kind == "export":
        return {"format": job.format, "round": job.round_number, "min_agreement": job.min_agreement,
                "include_automatic": job.include_automatic, "soft_labels": job.soft_labels, "license": job.license,
                "file_name": job.file_name, "done": job.done, "total": job.total,
                # the file once it is written (its page's download link); null before, and for one that failed
                "download_url": f"/api/v1/jobs/export/{job.pk}/file" if job.status == ExportJob.SUCCEEDED else None}
    return {"rounds": job.rounds, "rounds_done": job.rounds_done, "stage": job.stage, "judge": job.judge,
            "results": job.results}


def describe(kind: str, job) -> dict[str, Any]:
    return {"kind": kind, "id": job.pk, "status": job.status, "active": job.status in ACTIVE,
            "progress": _progress(job), "stage": job.stage, "error": job.error, "created": job.created, "started": job.started,
            "finished": job.finished, "details": _details(kind, job),
            "silent_seconds": round(job.silent_seconds) if job.silent_seconds is not None else None,
            "runner_gone": job.runner_gone}


def _version(pk: int | None, what: str) -> ModelVersion | None:
    if pk is None:
        return None
    version = ModelVersion.objects.filter(pk=pk).first()
    if version is None:
        raise HttpError(400, f"{what}: no model version with id {pk}")
    return version


def _sampling(data: dict | None, what: str = "sampling") -> SamplingConfig | None:
    if data is None:
        return None
    try:
        return SamplingConfig.from_dict(data)
    except SettingError as exc:  # its field named in errors[], as a body's own fields are
        raise setting_refused(what, exc.name, str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise HttpError(400, f"{what}: {exc}") from None


def form_refused(form, where: str) -> ValidationError:
    """A page's form that refused what the API was given, each of its errors under `where` and the field's name (the
    form's own errors under `where` alone), as a refused JSON body's fields are."""
    return ValidationError([{"loc": (where,) if name == "__all__" else (where, name), "msg": " ".join(errors)}
                            for name, errors in form.errors.items()])


def setting_refused(where: str, name: str, message: str) -> ValidationError:
    """A 400 naming the setting in errors[].field ("sampling.temprature", "params.epoch"), as a body's own fields
    are named: the sentence alone left a program nothing to point at."""
    return ValidationError([{"loc": ("body", where, name), "msg": message, "type": "value_error"}])


@contextmanager
def _named_setting(where: str) -> Iterator[None]:
    """A training setting refused by name (TrainingError.setting) is reported under `where`.name."""
    try:
        yield
    except training_services.TrainingError as exc:
        if exc.setting is None:
            raise
        raise setting_refused(where, exc.setting, str(exc)) from None


@contextmanager
def _queued() -> Iterator[None]:
    """A start whose task the queue refused (the broker down): 503 with what lifecycle.enqueue said. The job it made
    is ended failed, not left queued, so the same request again starts it once the queue is back."""
    try:
        yield
    except import_jobs.QUEUE_ERRORS as exc:
        raise HttpError(503, str(exc)) from None


class GenerationStart(Body):
    version: Id | None = Field(None, description="Model version id; the current version if left out.")
    n_prompts: Count(1, generation_services.MAX_PROMPTS_PER_JOB)
    sampling: dict[str, Any] | None = Field(None, description="SamplingConfig fields: n, temperature, top_p, ...")
    split: Literal["train", "eval"] = "train"
    tag: Name = ""
    pairing: Name = "random"
    judge: Name = ""
    with_reference: bool = Field(False, description="Only prompts with a reference answer (self-play's sampling).")


class TrainingStart(Body):
    input_version: Id | None = Field(None, description="The version to train from; the current one if left out.")
    reference: Literal["base", "start"] = "base"
    data: Literal["all", "new", "replay", "spin"] = "all"
    params: dict[str, Any] = Field(default_factory=dict, description="DPOConfig fields; missing ones take defaults.")


class CompareStart(Body):
    version_a: Id
    version_b: Id
    prompt_ids: list[Id] | None = Field(None, min_length=1, max_length=compare_services.MAX_PROMPTS)
    text: Text = ""
    limit: Count(1, compare_services.MAX_PROMPTS) = 8
    blind: bool = True
    seed: Number = 0
    sampling: dict[str, Any] | None = None
    judge: Name = Field("", description="An allowed judge (package.module:name) that votes on every comparison once "
                                        "the set is answered; its votes count for the promotion gate")

    @model_validator(mode="after")
    def _one_source(self):
        """The prompts come from one of prompt_ids, text or the eval split (limit): given two, the service took the
        first and dropped the other without a word (prompt_ids and a typed text compared on the ids alone). A blank
        text is no text, as the service reads it; `limit` counts when sent, as it says how many eval prompts."""
        given = [name for name, sent in (("prompt_ids", self.prompt_ids is not None), ("text", bool(self.text.strip())),
                                         ("limit", "limit" in self.model_fields_set)) if sent]
        if len(given) > 1:
            raise fields_error(given, f"{' and '.join(given)} are given: give one of prompt_ids (those prompts), text "
                                      "(one typed prompt) or limit (that many eval prompts)")
        return self


class LoopStart(Body):
    rounds: Count(1, loop_services.MAX_ROUNDS)
    pairs: Count(1, loop_services.MAX_PAIRS)
    judge: Name
    tag: Name = ""
    eval_limit: Count(1, loop_services.MAX_EVAL_PROMPTS) = 64
    seed: Number = 0
    preset: Name | None = Field(None, description="Named round settings (loop.presets): default, all, quick, replay, spin; "
                                "left out: the settings' own preset, else default")
    params: dict[str, Any] = Field(default_factory=dict)


@router.post("/generation", auth=staff("generation.add_generationjob"), response={201: JobOut}, summary="Start a generation job")
def start_generation(request: HttpRequest, payload: GenerationStart):
    with _queued():
        job = generation_services.start_generation_job(
            _version(payload.version, "version"), n_prompts=payload.n_prompts, config=_sampling(payload.sampling),
            split=payload.split, tag=payload.tag, pairing=payload.pairing, judge=payload.judge, user=request.user,
            with_reference=payload.with_reference,
        )
    return Status(201, describe("generation", job))


@router.post("/training", auth=staff("training.add_trainingrun"), response={201: JobOut}, summary="Start a training round")
def start_training(request: HttpRequest, payload: TrainingStart):
    with _queued(), _named_setting("params"):
        run = training_services.start_training_run(
            input_version=_version(payload.input_version, "input_version"), reference_choice=payload.reference,
            data_choice=payload.data, params=payload.params, user=request.user,
        )
    return Status(201, describe("training", run))


@router.post("/compare", auth=staff("compare.add_comparejob"), response={201: JobOut}, summary="Start a comparison of two versions")
def start_compare(request: HttpRequest, payload: CompareStart):
    _sampling(payload.sampling)
    with _queued():
        job = compare_services.start_compare_job(
            _version(payload.version_a, "version_a"), _version(payload.version_b, "version_b"),
            prompt_ids=payload.prompt_ids, text=payload.text, limit=payload.limit, blind=payload.blind,
            seed=payload.seed, sampling=payload.sampling, user=request.user, judge=payload.judge,
        )
    return Status(201, describe("compare", job))


@router.post("/loop", auth=staff("loop.add_looprun"), response={201: JobOut}, summary="Start an unattended loop run")
def start_loop(request: HttpRequest, payload: LoopStart):
    with _queued():
        run = loop_services.start_loop_run(
            rounds=payload.rounds, pairs=payload.pairs, judge=payload.judge, tag=payload.tag,
            eval_limit=payload.eval_limit, seed=payload.seed, params=payload.params, user=request.user,
            preset=payload.preset,
        )
    return Status(201, describe("loop", run))


IMPORT_FIELDS = {"kind", "format", "split", "tag", "round"}


@router.post("/import", auth=staff("annotate.add_importjob"), response={201: JobOut}, summary="Upload a file to import (multipart/form-data)")
def start_import(request: HttpRequest, file: File[UploadedFile], kind: Form[Literal["prompts", "pairs", "preferences"]],
                 format: Form[str] = "auto", split: Form[Literal["train", "eval"]] = "train", tag: Form[str] = "",
                 round: Form[str] = ""):
    """The Import page's upload, as a job: the same checks of the file (size, type) before it is queued, then its
    rows checked and written by a worker; watch it at /jobs/import/{id}."""
    # (a signed-in browser's form sends its CSRF token as a field, as Django's {% csrf_token %} writes it)
    stray = sorted(set(request.POST) - IMPORT_FIELDS - {"csrfmiddlewaretoken"}) + sorted(set(request.FILES) - {"file"})
    if stray:  # as a JSON body's unknown field is: a typo ("rund") dropped without a word sent rows elsewhere
        raise HttpError(400, f"{stray[0]}: not a field of this upload (it takes file, {', '.join(sorted(IMPORT_FIELDS))})")
    # A field or file given twice was read last-wins (kind=prompts then kind=pairs imported pairs): refused as a
    # query parameter given twice is (api.fields.known_query).
    twice = sorted(name for parts in (request.POST, request.FILES) for name in parts if len(parts.getlist(name)) > 1)
    if twice:
        count = len(request.POST.getlist(twice[0]) or request.FILES.getlist(twice[0]))
        raise HttpError(400, f"{twice[0]}: given {count} times; give it once")
    try:  # refused before the file is looked at, as an operation's own permission is (api.auth.staff)
        import_jobs.check_kind_permission(request.user, kind)
    except import_jobs.ImportNotAllowed as exc:
        raise HttpError(403, str(exc)) from None
    form = ImportForm({"kind": kind, "format": format, "split": split, "tag": tag, "round": round}, {"file": file})
    if not form.is_valid():  # named field by field in `errors`, as a refused JSON body's fields are
        raise form_refused(form, "form")
    try:
        job = import_jobs.start_form(form.cleaned_data, request.user)
    except import_jobs.ImportNotAllowed as exc:
        raise HttpError(403, str(exc)) from None
    except import_jobs.QUEUE_ERRORS:
        raise HttpError(503, import_jobs.QUEUE_DOWN) from None
    return Status(201, describe("import", job))


class ExportStart(Body):
    format: Literal["jsonl", "parquet", "hf"] = Field(
        "jsonl", description="jsonl (TRL rows), parquet, or hf (a Hugging Face data set folder, zipped)")
    round: Number | None = Field(None, description="Only this labelling round's pairs; all rounds if left out.")
    min_agreement: Fraction | None = Field(None, description="Leave out pairs whose majority has a smaller vote "
                                                             "share (0 to 1); gold pairs stay in.")
    include_automatic: bool = Field(True, description="Judges' labels counted beside people's, as in training.")
    soft_labels: bool = False
    license: Name = Field("", description="For hf: the dataset card's licence field (the page's default if empty).")


@router.post("/export", auth=staff("annotate.add_exportjob"), response={201: JobOut},
             summary="Start an export of the decided pairs")
def start_export(request: HttpRequest, payload: ExportStart):
    """The Export page's form, as a job: a worker writes the file with progress; once the job has succeeded its
    details give `download_url`."""
    # checked by the page's own form (an unknown round, a licence that is no text), refused under each field's name
    fields = {"format": payload.format, "round": "" if payload.round is None else payload.round,
              "min_agreement": "" if payload.min_agreement is None else payload.min_agreement,
              "license": payload.license, ExportForm.BOX_SHOWN: "1",
              **({"include_automatic": "on"} if payload.include_automatic else {}),
              **({"soft_labels": "on"} if payload.soft_labels else {})}
    form = ExportForm(fields)
    if not form.is_valid():
        raise form_refused(form, "body")
    try:
        job = export_jobs.start_form(form.cleaned_data, request.user)
    except export_jobs.NothingToExport as exc:
        raise HttpError(400, str(exc)) from None
    except export_jobs.QUEUE_ERRORS:
        raise HttpError(503, export_jobs.QUEUE_DOWN) from None
    return Status(201, describe("export", job))


@router.get("/export/{job_id}/file", auth=STAFF, summary="Download a finished export's file",
            openapi_extra={"responses": {200: {"description": "The file, as an attachment.",
                                               "content": {"application/octet-stream": {}}}}})
def export_file(request: HttpRequest, job_id: Id):
    """The file the job wrote (for hf, the zipped data set folder), as its page offers it: 409 until the job has
    succeeded, 404 when its file is no longer in the exports folder."""
    job = found(ExportJob, job_id, "export job")
    try:
        return FileResponse(export_jobs.open_file(job), as_attachment=True, filename=job.file_name)
    except export_jobs.NoFile as exc:
        raise HttpError(exc.status, str(exc)) from None


class JobFilter(Schema):
    kind: Kind
    active: bool | None = Field(None, description="true: only jobs queued or at work; false: only ended ones")
    before: Id | None = Field(None, description="only jobs with a smaller id: the next page, after the last id seen")


@router.get("", auth=STAFF, response=list[JobOut], summary="Recent jobs of one kind (newest first, 50 at most)")
def list_jobs(request: HttpRequest, filters: Query[JobFilter]):
    """Newest first (by id), 50 at most: `before` the last id of a page gives the next one, `active` only the jobs
    at work (or only the ended ones). A script that lost track of its jobs found them among the 50 newest alone."""
    kind, jobs = filters.kind, MODELS[filters.kind].objects.all()
    if filters.active is not None:
        jobs = jobs.filter(status__in=ACTIVE) if filters.active else jobs.exclude(status__in=ACTIVE)
    if filters.before is not None:
        jobs = jobs.filter(pk__lt=filters.before)
    return [describe(kind, job) for job in jobs.order_by("-pk")[:50]]


@router.get("/{kind}/{job_id}", auth=STAFF, response=JobOut, summary="Watch a job")
def get_job(request: HttpRequest, kind: Kind, job_id: Id):
    return describe(kind, found(MODELS[kind], job_id, f"{kind} job"))


def _cancel_perm(request: HttpRequest) -> str | None:
    """The admin's change permission on the path's kind of job (None for a kind there is not: the path's check
    refuses it), asked before the body is read."""
    match = request.resolver_match
    model = MODELS.get((match.kwargs if match else {}).get("kind", ""))
    return change_perm(model) if model is not None else None


@router.post("/{kind}/{job_id}/cancel", auth=staff(_cancel_perm), response=JobOut, summary="Cancel a job")
def cancel_job(request: HttpRequest, kind: Kind, job_id: Id, payload: NoBody | None = None):
    """Takes no body (`{}` or nothing): a field sent is refused by name, not ignored, as on every operation."""
    job = found(MODELS[kind], job_id, f"{kind} job")
    if job.status not in ACTIVE:
        raise HttpError(409, f"{kind} job {job.pk} has already ended ({job.status}): there is nothing to cancel")
    if kind == "generation":
        generation_services.cancel_generation_job(job)
    elif kind == "training":
        training_services.cancel_training_run(job)
    elif kind == "loop":
        loop_services.cancel_loop_run(job)
    elif kind in ("import", "export"):  # a cancelled export removes what it had written (export_jobs.run)
        lifecycle.cancel(job)
    else:
        compare_services.cancel_compare_job(job)
    job.refresh_from_db()
    return describe(kind, job)
