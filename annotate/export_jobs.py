"""Exports from the web page as jobs: a worker on the default queue writes the decided pairs (annotate.exporters)
with progress and a Cancel button, into a folder of the job's own under settings.EXPORTS_DIR, and the job's page
offers the file for download once it is written. The file is kept until the job is deleted (the admin).

A large export took minutes inside the page's request: no progress, no cancel, and past gunicorn's 120 s timeout
the request was killed. A cancelled or failed export leaves nothing behind; a job whose worker was lost starts again
from the first pair (an export stores nothing in the database).
"""
from __future__ import annotations

import logging
import re
import shutil
import time
import uuid
import zipfile
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from jobs import lifecycle
from jobs.lifecycle import Tracker
from jobs.models import ENDED
from prefloop.errors import sentence
from prefloop.private_files import private_dir

from . import exporters
from .dataset import candidate_pairs
from .models import ExportJob

log = logging.getLogger(__name__)

# The broker refused the task (down, unreachable): the job is marked failed (lifecycle.enqueue).
QUEUE_ERRORS = (KombuOperationalError,)
QUEUE_DOWN = "the task queue could not be reached, so the export was not started: try again in a moment"
# The bar's share for reading and deciding the pairs (most of an export's time); writing the rows has the rest, less
# an hf export's ZIP_SHARE for zipping its folder (a deflated copy of every shard: written at 100%, the bar stood still
# at 99% while it ran).
READ_SHARE = 0.8
ZIP_SHARE = 0.1
# Of writing a Parquet or hf export's rows, the share for building its Arrow table from the rows (hf_dataset.table_of):
# about three quarters, the Parquet writer's encoding the rest (0.12 s against 0.04 s for 20,000 short rows). JSONL
# builds no table: its writing has all of it.
BUILD_SHARE = 0.75
ZIP_BLOCK = 1 << 20  # bytes zipped at a time: the bar moves, and a Cancel is heard, inside a shard of tens of MB
KEPT = "kept until the export is deleted (in the admin, Export jobs)"
JOB_FOLDER = re.compile(r"[0-9a-f]{32}")  # a job's own folder's name (uuid4().hex): the sweep removes no other
SWEEP_AFTER_S = 3600.0  # an orphaned job folder is removed once this old (a job's folder is made as it runs)


class NothingToExport(Exception):
    """The form's filters leave no labelled pair, and the format needs at least one row (hf): said before a job
    is started."""


def start_form(data: dict, user) -> ExportJob:
    """Queue an export with a valid ExportForm's cleaned data; returns the job. NothingToExport when it can tell
    cheaply that an hf export would have no row; kombu's OperationalError when the queue is down (the job is then
    recorded failed)."""
    fmt, number = data["format"], data["round"]
    rounds = [number] if number is not None else None
    if fmt == "hf" and not candidate_pairs(rounds=rounds).exists():
        raise NothingToExport("no decided pairs to export with these filters: a Hugging Face data set needs at "
                              "least one row (`datasets` cannot load an empty one)")
    stamp = f"{timezone.now():%Y%m%d-%H%M%S}"
    name = f"preferences-{stamp}.{'zip' if fmt == 'hf' else fmt}"
    path = Path(settings.EXPORTS_DIR) / uuid.uuid4().hex / name  # a folder of its own: nothing else is in it
    with transaction.atomic():
        job = ExportJob.objects.create(
            format=fmt, round_number=number, min_agreement=data["min_agreement"],
            include_automatic=data["include_automatic"], soft_labels=data["soft_labels"], license=data["license"],
            path=str(path), created_by=user, stage="waiting for a worker")
        lifecycle.enqueue(job)  # sent once the row is committed
    return job


def own_folder(job: ExportJob) -> Path | None:
    """The job's own folder: the folder of its path, named as start_form names one (JOB_FOLDER) and directly inside
    the exports folder (both resolved); None for a path anywhere else (a row edited by hand), which nothing here
    writes, serves or removes: a row naming a folder someone keeps there (exports/team-notes/x) removed it whole."""
    root = Path(settings.EXPORTS_DIR).resolve()
    if not job.path:
        return None
    folder = Path(job.path).resolve().parent
    return folder if folder.parent == root and JOB_FOLDER.fullmatch(folder.name) else None


def served_file(job: ExportJob) -> Path | None:
    """The finished export's file to download, or None: not finished, gone, or not in the job's own folder."""
    folder = own_folder(job)
    if job.status != ExportJob.SUCCEEDED or folder is None:
        return None
    path = Path(job.path).resolve()
    return path if path.is_file() else None


class NoFile(Exception):
    """Why a job's file cannot be downloaded: `status` 409 while the job runs or when it ended without one, 404 when
    its file is gone; the same for the page and the API."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def open_file(job: ExportJob) -> BinaryIO:
    """The finished job's own file, opened for reading, or NoFile."""
    if job.status != ExportJob.SUCCEEDED:
        if job.status not in ENDED:
            raise NoFile(409, f"export job {job.pk} is still {job.status}: its file can be downloaded once it has "
                              "succeeded")
        raise NoFile(409, f"export job {job.pk} ended {job.status} and kept no file: start the export again")
    path = served_file(job)
    try:
        if path is not None:
            return path.open("rb")
    except OSError:  # removed (a delete in the admin) since served_file looked
        pass
    raise NoFile(404, f"export job {job.pk}'s file is not in the exports folder any more: start the export again")


def remove_files(job: ExportJob) -> None:
    """Remove the job's own folder (its file, and anything a stopped or lost attempt left)."""
    folder = own_folder(job)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def remove_files_of(job) -> None:
    """The folder of `job`, an export the life cycle ended for a process that is gone (lifecycle.AFTER_PROCESS_GONE:
    its worker lost while it stopped, or once too often): what that process wrote is a partial file no one will
    finish, and a job ended so is read as having kept nothing. Jobs of other kinds are left alone."""
    if isinstance(job, ExportJob):
        remove_files(job)


def sweep(older_than_s: float = SWEEP_AFTER_S) -> int:
    """Remove the exports folder's job folders that no export job names (its row deleted other than in the admin,
    which removes the folder itself), or that a job ended without a file names (cancelled after its worker was lost
    while it wrote: no worker came back to remove what it left): a uuid-named folder, older than `older_than_s`,
    that is no job's own. Anything else there (a file or folder someone put there by hand) is left. Returns how
    many."""
    root = Path(settings.EXPORTS_DIR)
    if not root.is_dir():
        return 0
    kept = ExportJob.objects.exclude(status__in=[ExportJob.CANCELLED, ExportJob.FAILED])
    named = {Path(path).parent.name for path in kept.values_list("path", flat=True)}
    removed, before = 0, time.time() - older_than_s
    for folder in root.iterdir():
        try:
            if (JOB_FOLDER.fullmatch(folder.name) and folder.name not in named and folder.is_dir()
                    and not folder.is_symlink() and folder.stat().st_mtime < before):
                shutil.rmtree(folder)
                removed += 1
        except FileNotFoundError:  # another worker's sweep
            continue
        except OSError:  # one it may not remove (its permissions, a mount): left, and said, not every export stuck
            log.warning("the exports folder's %s could not be removed", folder, exc_info=True)
    return removed


def _zip(folder: Path, archive: Path, tracker: Tracker, start: float) -> None:
    """The hf export's folder as one zip (its top folder named like the download), its bytes ZIP_BLOCK at a time:
    the bar moves from `start` to full with the bytes zipped, and a Cancel is heard between blocks."""
    paths = sorted(folder.rglob("*"))
    size, zipped = sum(path.stat().st_size for path in paths if path.is_file()), 0
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for path in paths:
            if tracker.should_stop():
                raise exporters.ExportStopped("the export was asked to stop")
            name = Path(folder.name) / path.relative_to(folder)
            if not path.is_file():  # data/: an entry of its own, as ZipFile.write makes it
                out.write(path, name)
                continue
            entry = zipfile.ZipInfo.from_file(path, name)
            entry.compress_type = zipfile.ZIP_DEFLATED
            with path.open("rb") as source, out.open(entry, "w") as target:
                while block := source.read(ZIP_BLOCK):
                    target.write(block)
                    zipped += len(block)
                    tracker.report(progress=start + (1 - start) * zipped / max(1, size))
                    if tracker.should_stop():
                        raise exporters.ExportStopped("the export was asked to stop")


def _export(job: ExportJob, tracker: Tracker, counts: dict[str, int]) -> int:
    """Write the export with progress (`counts`: pairs and rows, so far); returns the rows written."""
    path = Path(job.path)
    private_dir(path.parent)

    def counted(n: int) -> None:
        counts["pairs"] = n
        tracker.report(stage=f"reading {n:,} labelled pair{'s' if n != 1 else ''}", force=True)

    def read(n: int) -> None:
        counts["read"] += n
        tracker.report(progress=READ_SHARE * counts["read"] / max(1, counts["pairs"]))

    said = {"writing": ""}

    def writing(n: int) -> None:
        counts["rows"] = n
        said["writing"] = f"writing {n:,} row{'s' if n != 1 else ''}"
        tracker.report(done=0, total=n, progress=READ_SHARE, stage=said["writing"], force=True)

    zipped_from = 1 - ZIP_SHARE if job.format == "hf" else 1.0  # where the rows are written and zipping begins
    build_share = BUILD_SHARE if job.format in ("parquet", "hf") else 0.0

    def writing_progress() -> float:
        rows = max(1, counts["rows"])
        share = build_share * counts["built"] / rows + (1 - build_share) * counts["written"] / rows
        return READ_SHARE + (zipped_from - READ_SHARE) * share

    def built(n: int) -> None:
        counts["built"] += n
        # the count in the stage is written as progress is, at most every WRITE_EVERY_S (Tracker.report's
        # stage_name); the last at once, so the page says the table is whole while its first rows are written
        building = f"{said['writing']}: building the Parquet table"
        tracker.report(progress=writing_progress(), stage=f"{building}, {counts['built']:,} of {counts['rows']:,} rows",
                       stage_name=building, force=counts["built"] == counts["rows"])

    def written(n: int) -> None:
        counts["written"] += n
        tracker.report(done=counts["written"], progress=writing_progress(), stage=said["writing"])

    hooks = exporters.ExportHooks(counted=counted, read=read, writing=writing, written=written, built=built,
                                  should_stop=tracker.should_stop)
    options = dict(fmt=job.format, rounds=[job.round_number] if job.round_number is not None else None,
                   min_agreement=job.min_agreement, include_automatic=job.include_automatic,
                   soft_labels=job.soft_labels, license=job.license, hooks=hooks)
    if job.format != "hf":
        return exporters.export_preferences(path, **options).rows
    export = exporters.export_preferences(path.with_suffix(""), **options)
    tracker.report(done=export.rows, progress=zipped_from, stage="zipping the data set folder", force=True)
    _zip(export.path, path, tracker, zipped_from)
    shutil.rmtree(export.path)
    return export.rows


def run(job_id: int) -> ExportJob:
    """The worker's side: read the pairs and write the rows with progress, stop when cancelled."""
    job = lifecycle.claim(ExportJob, job_id, restart=True)
    try:
        sweep()
    except Exception:  # (the database, say) a sweep that fails is tried again by the next export; this one goes on
        log.warning("the exports folder could not be swept", exc_info=True)
    if job is None:  # cancelled while queued, or out of attempts
        job = ExportJob.objects.get(pk=job_id)
        if job.status in ENDED and job.status != ExportJob.SUCCEEDED:
            remove_files(job)
        return job
    if own_folder(job) is None:  # a row edited by hand: nothing is written where it points
        lifecycle.fail(job, f"its path {job.path!r} is not a folder of its own in the exports folder: start the "
                            "export again from the Export page")
        return job
    remove_files(job)  # what a lost attempt left: the export is written again from the start
    if job.total:  # the rows a lost attempt was writing: this one counts them again (the pairs may have changed)
        job.total = 0
        ExportJob.objects.filter(pk=job.pk).update(total=0)
    tracker = Tracker(job)
    tracker.report(stage="counting the labelled pairs", force=True)
    counts = {"pairs": 0, "read": 0, "rows": 0, "built": 0, "written": 0}
    # An export that ends without its file removes what it wrote before it says so ("nothing was kept"): removed
    # after, a reader of the ended job found its partial file still in the exports folder.
    try:
        rows = _export(job, tracker, counts)
        # The file is in place, and the job offers it once it ends succeeded. A Cancel pressed since the last check
        # (asked at most every CHECK_EVERY_S, and not at all while the file was renamed into place or the hf folder
        # removed) is honoured as one pressed a moment earlier, with nothing kept: the job ended "succeeded" under
        # a page that had just answered "cancelling". Asked afresh with the job's row locked until it has ended, so
        # a Cancel arriving meanwhile waits and finds the job ended, with nothing to cancel.
        with transaction.atomic():
            ExportJob.objects.select_for_update().values_list("pk").get(pk=job.pk)
            if tracker.should_stop(fresh=True):
                raise exporters.ExportStopped("the export was asked to stop")
            lifecycle.finish(job, done=rows, total=rows)
    except exporters.ExportStopped:
        # the rows it had written when it stopped (the last report may have been too soon after another to write)
        ExportJob.objects.filter(pk=job.pk).update(done=counts["written"])
        remove_files(job)
        # its bar at what it kept, nothing: left where the pairs read and the rows written had taken it (86% of an
        # export stopped after 2 of 6 rows), it looked nearly done over an export with no file. The stage still says
        # where it stopped ("cancelled after 2 of 6 rows: nothing was kept")
        lifecycle.stopped(job, "nothing was kept; start the export again for the file", progress=0.0)
    except exporters.ExportError as err:
        remove_files(job)
        lifecycle.fail(job, sentence(str(err)))
    except OSError as exc:
        log.warning("export job %s could not be written", job.pk, exc_info=True)
        remove_files(job)
        lifecycle.fail(job, f"the export could not be written in the exports folder ({exc.strerror or exc})")
    except Exception as exc:  # shown on the page; the worker log has the traceback
        log.exception("export job %s failed", job.pk)
        remove_files(job)
        lifecycle.fail(job, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        job.refresh_from_db()
        if job.status != ExportJob.SUCCEEDED:
            remove_files(job)
    return job
