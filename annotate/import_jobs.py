"""Imports from the web page as jobs: the upload is kept in settings.IMPORTS_DIR, a worker on the default queue
imports it with progress and a Cancel button (annotate.importers), and the file is removed when the job ends.

A large file took minutes inside the upload's request: no progress, no cancel, and past gunicorn's 120 s timeout
the request was killed. The job's rows are checked whole before any is written (one bad row stores nothing), then
written CHUNK_ROWS rows a transaction, so a cancelled import keeps the chunks it wrote and says so; importing the
file again adds the rest. The bar moves while the file is read and checked too (READ_SHARE of it), and a Cancel
then stops the job with nothing stored. A job whose worker was lost starts again from the first row, and the rows
its first attempt stored count as already present.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from kombu.exceptions import OperationalError as KombuOperationalError

from jobs import lifecycle
from jobs.lifecycle import Tracker
from jobs.models import ENDED
from prefcore import rows as formats
from prefloop.access import may, refusal
from prefloop.private_files import PRIVATE, private_dir

from . import importers
from .models import ImportJob

log = logging.getLogger(__name__)

MAX_PROBLEMS_SHOWN = 50
# The broker refused the task (down, unreachable): the job is marked failed and its file removed (see `start`).
QUEUE_ERRORS = (KombuOperationalError,)
QUEUE_DOWN = ("the task queue could not be reached, so the file was not queued and nothing was imported: "
              "try again in a moment")
SWEEP_AFTER_S = 3600.0
# The bar's share for reading and checking the file (parsing its lines, then checking its rows: half each), before any
# row is written. Reading and checking take about 17 µs a row (3.4 s for 200,000 rows), writing about 0.7 ms (a chunk
# of CHUNK_ROWS in about a third of a second, and the pause after it): a few percent of the job. A guess at the ratio,
# as generation's JUDGE_SHARE is, that moves the bar from the start and keeps the time left near the truth.
READ_SHARE = 0.03


def start(upload: UploadedFile, *, kind: str, options: dict, user) -> ImportJob:
    """Keep the upload (0600, under a name of our own) and queue its import; returns the job."""
    # as the form reads it (a file named ".jsonl" is JSON Lines there, and has no suffix to pathlib)
    suffix = "." + upload.name.rsplit(".", 1)[-1].lower() if "." in upload.name else ""
    private_dir(settings.IMPORTS_DIR)
    path = Path(settings.IMPORTS_DIR) / f"{uuid.uuid4().hex}{suffix}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    job = None
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        with transaction.atomic():
            job = ImportJob.objects.create(kind=kind, file_name=importers.printable(upload.name, 255), path=str(path),
                                           options=options, created_by=user, stage="waiting for a worker")
            lifecycle.enqueue(job)  # sent once the row is committed
    except BaseException as exc:
        path.unlink(missing_ok=True)
        if job is not None and ImportJob.objects.filter(pk=job.pk).exists():  # stored, but its task was not sent
            lifecycle.fail(job, f"the task queue could not be reached ({type(exc).__name__}); nothing was imported: "
                                "upload the file again")
        raise
    return job


# what each kind of import writes needs the permission that writing those rows through the API needs: an import job
# is a way to write them, and a staff member allowed only to import had stored labels the push refused them
KIND_PERMISSIONS = {ImportJob.PROMPTS: "generation.add_prompt", ImportJob.PAIRS: "annotate.add_pair",
                    ImportJob.PREFERENCES: "annotate.add_label"}


class ImportNotAllowed(Exception):
    """The account may start import jobs, but not write the rows of this kind. Its text names the kind for the page
    and the API; `reason` is the refusal alone, for a job that reads the permission again as it runs."""

    def __init__(self, kind: str, needed: str):
        self.reason = refusal(needed)
        super().__init__(f"kind {kind!r}: {self.reason}")


def check_kind_permission(user, kind: str) -> None:
    """ImportNotAllowed unless the account may write the rows of this kind of import; a KeyError for a kind that is
    none of KIND_PERMISSIONS' (the page's form and the API take those alone), so a job row with another kind imports
    nothing rather than importing unchecked."""
    needed = KIND_PERMISSIONS[kind]
    if not may(user, needed):
        raise ImportNotAllowed(kind, needed)


def start_form(data: dict, user) -> ImportJob:
    """`start` with a valid ImportForm's cleaned data (the Import page and POST /api/v1/jobs/import); ImportNotAllowed
    when the account may not write the kind's rows."""
    check_kind_permission(user, data["kind"])
    options = {"split": data["split"], "tag": data["tag"], "format": data["format"], "round": data["round"]}
    return start(data["file"], kind=data["kind"], options=options, user=user)


def remove_upload_of(job) -> None:
    """The upload of `job`, an import the life cycle ended for a process that is gone (lifecycle.AFTER_PROCESS_GONE:
    its worker lost while it stopped, or once too often): no attempt will read it again, and a job's file goes when
    the job ends. Jobs of other kinds are left alone."""
    if isinstance(job, ImportJob):
        Path(job.path).unlink(missing_ok=True)


def sweep(older_than_s: float = SWEEP_AFTER_S) -> int:
    """Remove uploads no import will read: their job ended without running (a worker lost while it was being
    cancelled ends it so) or is gone. Only files older than `older_than_s`: an upload is written before its job's
    row is committed. Returns how many."""
    folder = Path(settings.IMPORTS_DIR)
    if not folder.is_dir():
        return 0
    wanted = set(ImportJob.objects.exclude(status__in=ENDED).values_list("path", flat=True))
    removed, before = 0, time.time() - older_than_s
    for path in folder.iterdir():
        try:
            if path.is_file() and str(path) not in wanted and path.stat().st_mtime < before:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # another worker's sweep
            continue
    return removed


def _import(job: ImportJob, tracker: Tracker) -> importers.ImportResult:
    options, path = job.options, job.path
    rows = {"n": 0}

    reading = f"reading and checking {job.file_name}"

    def on_reading(done: int, total: int, what: str) -> None:
        # Told about a hundred times a pass (prefcore.rows.Watch). The stage says the count: named `reading`, a count
        # that alone changed is written as progress is, at most every WRITE_EVERY_S (Tracker.report's stage_name)
        part = (0.5 if what == formats.ROWS_CHECKED else 0.0) + 0.5 * done / max(1, total)
        tracker.report(progress=READ_SHARE * part, stage=f"{reading}: {done:,} of {total:,} {what}",
                       stage_name=reading)

    def on_read(total: int) -> None:
        rows["n"] = total
        # the time-left estimate goes on at the rate measured from the reading's first report (Tracker.report)
        tracker.report(done=0, total=total, progress=READ_SHARE, stage=f"writing {total:,} checked rows", force=True)

    def on_chunk(stored: importers.ImportResult, done: int) -> None:
        # Reported once a chunk's rows are written, in its transaction: the rows done and what they stored are
        # committed with the chunk, so a page read mid-import says how many were added so far, and never counts a
        # row its chunk did not store. Reported row by row (inside a chunk), `added` and the rest stayed 0 until the
        # job ended, though the bar moved. Throttled as any report: one left out is made up by the next chunk's.
        tracker.report(done=done, progress=READ_SHARE + (1 - READ_SHARE) * done / max(1, rows["n"]),
                       **_counts(stored))

    hooks = dict(name=job.file_name, should_stop=tracker.should_stop, on_read=on_read, on_chunk=on_chunk,
                 on_reading=on_reading)
    # the kind's permission again, as the job runs: one taken away (or its account deleted) since the upload counts
    lost = f"the account that queued this import may no longer write {job.kind}: "
    if job.created_by is None:
        raise importers.ImportProblem([lost + "it was deleted"])
    try:
        check_kind_permission(job.created_by, job.kind)
    except ImportNotAllowed as exc:
        raise importers.ImportProblem([lost + exc.reason]) from None
    if job.kind == ImportJob.PROMPTS:
        return importers.import_prompts(path, split=options.get("split", "train"), tag=options.get("tag", ""),
                                        **hooks)
    # rounds the file names that are not there are made only for an account that may add rounds (read when the
    # job runs: a permission taken away meanwhile counts)
    new_rounds = job.created_by is not None and may(job.created_by, importers.NEW_ROUND_PERMISSION)
    if job.kind == ImportJob.PAIRS:
        return importers.import_pairs(path, round_number=options.get("round"), new_rounds=new_rounds, **hooks)
    return importers.import_preferences(path, fmt=options.get("format", "auto"), round_number=options.get("round"),
                                        new_rounds=new_rounds, **hooks)


def _counts(result: importers.ImportResult) -> dict:
    return {"added": result.created, "skipped": result.skipped, "set_aside": list(result.set_aside),
            "disagreeing": list(result.disagreeing), "same_answers": list(result.same_answers),
            "held_back": list(result.held_back)}


def run(job_id: int) -> ImportJob:
    """The worker's side: read and check the file, then write it chunk by chunk, with progress through both, and stop
    when cancelled (while reading too: nothing is stored then)."""
    job = lifecycle.claim(ImportJob, job_id, restart=True)
    sweep()
    if job is None:  # cancelled while queued, or out of attempts: nothing will read its file
        job = ImportJob.objects.get(pk=job_id)
        if job.status in ENDED:
            Path(job.path).unlink(missing_ok=True)
        return job
    if job.attempts > 1:
        lifecycle.append_log(job, "the rows the lost attempt stored count as already present")
    tracker = Tracker(job)
    # a lost attempt's counts (of the chunks it stored) start again with its rows: this attempt counts every row
    # again, those that attempt stored as already present
    tracker.report(stage=f"reading and checking {job.file_name}", force=True, **_counts(importers.ImportResult(0, 0)))
    try:
        result = _import(job, tracker)
    except importers.ImportProblem as problem:
        ImportJob.objects.filter(pk=job.pk).update(problems=problem.problems[:MAX_PROBLEMS_SHOWN],
                                                   problem_count=len(problem.problems), stage="")
        count = len(problem.problems)
        lifecycle.fail(job, f"{job.file_name} cannot be imported ({count} problem{'s' if count != 1 else ''}); "
                            "nothing was stored. Fix the file and upload it again.")
    except importers.ImportStopped as stopped:
        # the bar at the rows of the chunks stored: left to the tracker, a chunk's report it held back (written at most
        # once a second) left it at 3% with 1,000 of 1,200 rows stored, and flushed, one made inside a chunk then
        # rolled back (Ctrl-C, a failed commit) put it at 100% with 1,000 of 1,500
        bar = {} if stopped.reading else {"progress": READ_SHARE + (1 - READ_SHARE) * stopped.rows / max(1, stopped.total)}
        ImportJob.objects.filter(pk=job.pk).update(done=stopped.rows, **bar, **_counts(stopped.result))
        if stopped.error is not None:  # the database failed part-way: what was stored stays, and is said
            log.error("import job %s failed part-way", job.pk, exc_info=stopped.error)
            lifecycle.fail(job, str(stopped))
        elif stopped.reading:
            lifecycle.stopped(job, "nothing was stored; importing the file again reads it from the start")
        else:
            lifecycle.stopped(job, f"{stopped.result}; importing the file again adds the rest")
    except OSError as exc:
        lifecycle.fail(job, f"{job.file_name}: the uploaded file could not be read ({exc.strerror or exc})")
    except Exception as exc:  # shown on the page; the worker log has the traceback
        log.exception("import job %s failed", job.pk)
        lifecycle.fail(job, f"{type(exc).__name__}: {exc}")
        raise
    else:
        lifecycle.finish(job, done=job.total, **_counts(result))
    finally:
        job.refresh_from_db()
        if job.status in ENDED:
            Path(job.path).unlink(missing_ok=True)
    return job
