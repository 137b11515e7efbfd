"""The export page starts a job: a worker writes the file with progress and a Cancel button (a cancelled or failed
export leaves nothing), the job's page offers the finished file to staff alone, and only the job's own file in the
exports folder is ever served or removed."""
from __future__ import annotations

import io
import json
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
import pytest
from django.urls import reverse

from annotate import export_jobs, hf_dataset
from annotate.exporters import export_preferences
from annotate.models import ExportJob
from annotate.services import label_pair
from jobs import lifecycle
from jobs.lifecycle import Tracker

from . import exporting
from .factories import make_pair, make_round, make_user

pytestmark = pytest.mark.django_db


def _decided(n: int, round_=None) -> None:
    person = make_user()
    for i in range(n):
        label_pair(make_pair(text_a=f"good {i}", text_b=f"bad {i}", round=round_).pk, person, "left")


def _recording_reports(monkeypatch, *fields: str) -> list[tuple]:
    """The export job's `fields`, as stored after each of its progress reports (what a page polling it reads)."""
    seen, report = [], Tracker.report

    def recording(self, **kwargs):
        written = report(self, **kwargs)
        seen.append(ExportJob.objects.values_list(*fields).get(pk=self.job.pk))
        return written

    monkeypatch.setattr(Tracker, "report", recording)
    return seen


def _rows(fmt: str, path: Path) -> list[dict]:
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return pq.read_table(path).to_pylist()


def test_the_export_button_starts_a_job_with_the_forms_options_and_shows_its_page(client, staff):
    make_round(3)
    client.force_login(staff)
    response = exporting.post(client, format="parquet", round=3, min_agreement="0.6", soft_labels="on",
                              include_automatic=None, license="mit")
    assert response.status_code == 302
    job = ExportJob.objects.get()
    assert response.url == reverse("annotate:export_job", args=[job.pk])
    assert (job.status, job.format, job.round_number, job.min_agreement, job.include_automatic, job.soft_labels,
            job.license, job.created_by) == ("queued", "parquet", 3, 0.6, False, True, "mit", staff)
    path = Path(job.path)
    assert path.parent.parent == Path(export_jobs.settings.EXPORTS_DIR) and path.name.endswith(".parquet")
    page = client.get(response.url).content.decode()
    assert "queued" in page and 'hx-trigger="every 1s"' in page, "the page polls while the job waits"
    assert f'hx-post="{reverse("annotate:export_cancel", args=[job.pk])}"' in page
    assert "people's labels only" in page and "round 3" in page
    listing = client.get(reverse("annotate:export")).content.decode()
    assert "Recent exports" in listing and reverse("annotate:export_job", args=[job.pk]) in listing


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_job_writes_the_rows_export_preferences_writes_and_its_count_reaches_the_total(
        client, staff, tmp_path, monkeypatch, fmt):
    monkeypatch.setattr(hf_dataset, "WRITE_ROWS", 2)
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 0.0)  # every report written, as the page would poll it
    _decided(5)
    seen = _recording_reports(monkeypatch, "done", "total", "stage")
    client.force_login(staff)
    job, response = exporting.export(client, format=fmt)
    assert job.status == "succeeded" and (job.done, job.total, job.progress) == (5, 5, 1.0)
    # (a Parquet file's table is built first, under a stage of its own: test_export_progress.py)
    written = [done for done, _, stage in seen if stage == "writing 5 rows"]
    assert written == [0, 2, 4, 5], "rows written, chunk by chunk"
    stages = [stage for _, _, stage in seen]
    assert "reading 5 labelled pairs" in stages and "writing 5 rows" in stages
    direct = export_preferences(tmp_path / f"direct.{fmt}", fmt=fmt)
    downloaded = tmp_path / f"downloaded.{fmt}"
    downloaded.write_bytes(exporting.content(response))
    assert _rows(fmt, downloaded) == _rows(fmt, direct.path) and len(_rows(fmt, downloaded)) == 5
    assert response["Content-Disposition"].endswith(f'{job.file_name}"') and job.file_name.startswith("preferences-")
    page = client.get(reverse("annotate:export_job", args=[job.pk])).content.decode()
    assert "Written: 5 rows. The file is kept until the export is deleted" in page


def test_an_hf_exports_bar_moves_while_its_folder_is_zipped(client, staff, tmp_path, monkeypatch):
    """Its rows are counted as jsonl's and parquet's are; then its bar stood at 99% (full, but running) through
    "zipping the data set folder", which deflates every shard. Zipping has the bar's last share, by bytes zipped."""
    import zipfile

    monkeypatch.setattr(hf_dataset, "WRITE_ROWS", 2)
    monkeypatch.setattr(export_jobs, "ZIP_BLOCK", 512)
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 0.0)  # every report written, as the page would poll it
    _decided(5)
    seen = _recording_reports(monkeypatch, "done", "total", "progress", "stage")
    client.force_login(staff)
    job, response = exporting.export(client, format="hf")
    assert job.status == "succeeded" and (job.done, job.total, job.progress) == (5, 5, 1.0)
    writing = [(done, progress) for done, _, progress, stage in seen if stage == "writing 5 rows"]
    assert [done for done, _ in writing] == [0, 2, 4, 5], "rows written, chunk by chunk"
    assert writing[-1][1] == pytest.approx(1 - export_jobs.ZIP_SHARE)
    zipping = [progress for done, _, progress, stage in seen if stage == "zipping the data set folder"]
    assert len(zipping) > 5 and zipping == sorted(set(zipping)), "the bar moves on as the bytes are zipped"
    assert zipping[0] == pytest.approx(1 - export_jobs.ZIP_SHARE) and zipping[-1] == pytest.approx(1.0)
    zipfile.ZipFile(io.BytesIO(exporting.content(response))).extractall(tmp_path / "unzipped")
    (folder,) = (tmp_path / "unzipped").iterdir()
    assert len(pq.read_table(next((folder / "data").iterdir())).to_pylist()) == 5


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_a_cancel_while_the_rows_are_written_stops_the_job_and_removes_its_partial_file(
        client, staff, monkeypatch, settings, fmt):
    """It removes its partial file and says "nothing was kept", and its bar ends at what it kept, nothing: left where
    the pairs read and the rows written had taken it (86% of a JSONL export stopped after 2 of 6 rows), it was a
    full-looking bar over an export with no file."""
    monkeypatch.setattr(hf_dataset, "WRITE_ROWS", 2)
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)  # the Cancel click is read at the next chunk
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 0.0)  # every report written: the page's bar follows the rows
    _decided(6)
    client.force_login(staff)
    response = exporting.post(client, format=fmt)
    job = ExportJob.objects.get()
    report, partial, bars = Tracker.report, [], []

    def cancelling(self, **kwargs):  # the first chunk is written: the person clicks Cancel
        written = report(self, **kwargs)
        if kwargs.get("done") == 2 and not partial:
            partial.extend(p for p in Path(job.path).parent.rglob("*") if p.is_file())
            bars.append(ExportJob.objects.values_list("progress", flat=True).get(pk=job.pk))
            page = client.get(response.url).content.decode()
            assert "running" in page and "writing 6 rows" in page
            answer = client.post(reverse("annotate:export_cancel", args=[job.pk]), HTTP_HX_REQUEST="true")
            assert answer.status_code == 200
        return written

    monkeypatch.setattr(Tracker, "report", cancelling)
    stopped, left_when_said = lifecycle.stopped, []

    def saying_stopped(job_, kept, **kwargs):  # what a reader finds on disk the moment the job says "nothing was kept"
        folder = Path(job.path).parent
        left_when_said.extend([folder, *folder.rglob("*")] if folder.exists() else [])
        return stopped(job_, kept, **kwargs)

    monkeypatch.setattr(lifecycle, "stopped", saying_stopped)
    export_jobs.run(job.pk)
    job.refresh_from_db()
    assert partial, "a part of the export was on disk when the Cancel came"
    assert bars[0] > export_jobs.READ_SHARE, "the bar had moved past the reading when the Cancel came"
    assert left_when_said == [], "the job said nothing was kept while its folder was still there"
    assert job.status == "cancelled" and job.stage.startswith("cancelled after 2 of 6 rows: nothing was kept")
    assert not Path(job.path).parent.exists() and list(Path(settings.EXPORTS_DIR).iterdir()) == []
    assert (job.progress, job.percent) == (0.0, 0), "nothing was kept, and the bar says so"
    page = client.get(response.url).content.decode()
    assert 'value="0"' in page and "Nothing was kept" in page
    assert reverse("annotate:export_download", args=[job.pk]) not in page
    gone = client.get(reverse("annotate:export_download", args=[job.pk]))
    assert gone.status_code == 409 and f"Export job {job.pk} ended cancelled and kept no file: start the export " \
                                       "again." in gone.content.decode()


def test_a_job_cancelled_while_queued_writes_nothing(client, staff):
    _decided(1)
    client.force_login(staff)
    exporting.post(client)
    job = ExportJob.objects.get()
    client.post(reverse("annotate:export_cancel", args=[job.pk]))
    export_jobs.run(job.pk)  # the task arrives late
    job.refresh_from_db()
    assert job.status == "cancelled" and job.stage == "cancelled before it started"
    assert not Path(job.path).parent.exists()


def test_after_a_lost_worker_the_export_is_written_again_from_the_start(client, staff):
    _decided(2)
    client.force_login(staff)
    exporting.post(client)
    job = ExportJob.objects.get()
    lifecycle.claim(ExportJob, job.pk, restart=True)  # the first worker took it ...
    folder = Path(job.path).parent
    folder.mkdir(parents=True)
    Path(job.path).write_text("half a line")  # ... and was killed while it wrote
    export_jobs.run(job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.attempts == 2 and len(Path(job.path).read_text().splitlines()) == 2


def test_the_file_is_for_staff_alone_and_only_once_the_job_has_finished(client, staff, annotator):
    _decided(1)
    client.force_login(staff)
    exporting.post(client)
    job = ExportJob.objects.get()
    link = reverse("annotate:export_download", args=[job.pk])
    waiting = client.get(link)
    # as the API answers it (409, the same sentence): it said "once it has finished" of a cancelled job too
    assert waiting.status_code == 409 and f"Export job {job.pk} is still queued: its file can be downloaded once " \
                                          "it has succeeded." in waiting.content.decode()
    export_jobs.run(job.pk)
    assert exporting.content(client.get(link)).count(b"\n") == 1
    client.force_login(annotator)
    for url in (link, reverse("annotate:export_job", args=[job.pk]), reverse("annotate:export")):
        assert client.get(url).status_code == 403
    assert client.post(reverse("annotate:export"), {"format": "jsonl"}).status_code == 403
    assert ExportJob.objects.count() == 1


@pytest.mark.parametrize("where", ["outside", "dotdot", "symlink", "the folder itself"])
def test_a_job_row_whose_path_leaves_its_folder_in_the_exports_folder_is_refused(client, staff, tmp_path, settings,
                                                                                 where):
    _decided(1)
    client.force_login(staff)
    exporting.post(client)
    job = ExportJob.objects.get()
    export_jobs.run(job.pk)
    secret = tmp_path / "secret.txt"
    secret.write_text("not an export")
    folder = Path(job.path).parent
    tampered = {"outside": str(secret), "dotdot": str(folder / ".." / ".." / "secret.txt"),
                "symlink": str(folder / "link.jsonl"), "the folder itself": str(folder)}[where]
    if where == "symlink":
        (folder / "link.jsonl").symlink_to(secret)
    ExportJob.objects.filter(pk=job.pk).update(path=tampered)
    response = client.get(reverse("annotate:export_download", args=[job.pk]))
    assert response.status_code == 404 and not response.streaming
    assert "not in the exports folder" in response.content.decode()
    job.refresh_from_db()
    export_jobs.remove_files(job)  # as deleting it does: nothing outside its own folder goes
    assert secret.read_text() == "not an export" and Path(settings.EXPORTS_DIR).is_dir()


@pytest.mark.parametrize("fields, named", [
    ({"format": "xml"}, "Format: Select a valid choice"),
    ({"min_agreement": "2"}, "Min agreement: Ensure this value is less than or equal to 1"),
    ({"min_agreement": "nan"}, "Min agreement:"),
    ({"round": "abc"}, "Round: Enter a whole number"),
    ({"round": "99999999999999999999"}, "The form parameter 'round' is a whole number beyond 64 bits"),
    ({"license": "a\u200bb"}, "License: expected printable characters"),
])
def test_bad_form_input_is_refused_naming_the_field_and_starts_nothing(client, staff, fields, named):
    client.force_login(staff)
    response = exporting.post(client, **fields)
    assert response.status_code == 400 and named in response.content.decode()
    assert not ExportJob.objects.exists()


@pytest.mark.parametrize("query, status", [("format=xml&download=1", 400), ("round=abc&download=1", 400),
                                           ("format=jsonl&download=1", 200)])
def test_an_old_download_link_shows_the_form_filled_in_and_starts_nothing(client, staff, query, status):
    client.force_login(staff)
    response = client.get(f"{reverse('annotate:export')}?{query}")
    assert response.status_code == status and not response.streaming
    assert not ExportJob.objects.exists()
    if status == 200:
        assert "press Export to start this one" in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_export_page_says_when_the_task_queue_is_down(client, staff):
    from kombu.exceptions import OperationalError

    _decided(1)
    client.force_login(staff)
    with mock.patch("annotate.tasks.run_export_job.apply_async", side_effect=OperationalError("broker down")):
        response = exporting.post(client)
    assert response.status_code == 503
    assert "The task queue could not be reached, so the export was not started" in response.content.decode()
    assert ExportJob.objects.get().status == "failed"


def test_deleting_an_ended_export_in_the_admin_removes_its_file(admin_client, client, staff, django_capture_on_commit_callbacks):
    _decided(1)
    client.force_login(staff)
    exporting.post(client)
    job = ExportJob.objects.get()
    refused = admin_client.post(f"/admin/annotate/exportjob/{job.pk}/delete/", {"post": "yes"}, follow=True)
    assert "Not deleted: export job" in refused.content.decode() and "is queued" in refused.content.decode()
    assert ExportJob.objects.filter(pk=job.pk).exists(), "not while queued"
    export_jobs.run(job.pk)
    assert Path(job.path).is_file()
    assert admin_client.get(f"/admin/annotate/exportjob/{job.pk}/change/").status_code == 200  # a read-only view
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"/admin/annotate/exportjob/{job.pk}/delete/", {"post": "yes"})
    assert not ExportJob.objects.exists() and not Path(job.path).parent.exists()


def test_a_job_folder_no_export_names_any_more_is_swept_and_nothing_else(client, staff, settings):
    """A job row deleted other than in the admin (the shell, a script) left its folder and file in the exports folder
    for good: nothing named it, so nothing would ever remove it."""
    import os
    import time

    _decided(1)
    client.force_login(staff)
    root = Path(settings.EXPORTS_DIR)
    old = time.time() - 2 * export_jobs.SWEEP_AFTER_S
    orphan, mine, fresh = root / ("a" * 32), root / ("b" * 32), root / ("c" * 32)
    kept = [root / "team-notes", root / "copy.jsonl"]  # put there by hand: not a job's folder by its name
    for folder in (orphan, mine, fresh, kept[0]):
        folder.mkdir(parents=True)
        (folder / "preferences.jsonl").write_text("{}\n")
    kept[1].write_text("{}\n")
    for path in (orphan, mine, *kept):
        os.utime(path, (old, old))
    ExportJob.objects.create(format="jsonl", license="", path=str(mine / "preferences.jsonl"), status="succeeded")
    exporting.post(client)
    export_jobs.run(ExportJob.objects.latest("pk").pk)
    assert not orphan.exists()
    assert mine.is_dir() and fresh.is_dir() and all(p.exists() for p in kept)  # a job's, too new, not a job folder


def test_an_export_cancelled_after_its_worker_was_lost_leaves_nothing_once_swept(client, staff, settings):
    """From an outside probe: an export whose worker was lost while it wrote, cancelled from its page (ended at once,
    as a silent job is), kept its half-written file in the exports folder for good: no worker came back to remove
    it, and the sweep spared its folder because a job row named it. "A cancelled or failed export leaves nothing
    behind": the next export's sweep removes it, as it does an orphan's (an hour on)."""
    import os
    import time
    from datetime import timedelta

    from django.utils import timezone

    _decided(1)
    client.force_login(staff)
    exporting.post(client)
    job = ExportJob.objects.get()
    lifecycle.claim(ExportJob, job.pk, restart=True)  # a worker took it ...
    folder = Path(job.path).parent
    folder.mkdir(parents=True)
    Path(job.path).write_text('{"prompt": "half a row"')  # ... and was lost while it wrote
    long_ago = timezone.now() - timedelta(hours=2)
    ExportJob.objects.filter(pk=job.pk).update(claimed=long_ago, updated=long_ago)
    client.post(reverse("annotate:export_cancel", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == "cancelled" and "without a word from its worker" in job.stage
    old = time.time() - 2 * export_jobs.SWEEP_AFTER_S
    os.utime(folder, (old, old))
    exporting.post(client)
    export_jobs.run(ExportJob.objects.latest("pk").pk)
    assert not folder.exists()
    assert client.get(reverse("annotate:export_download", args=[job.pk])).status_code == 409


def test_an_export_cancelled_after_its_worker_was_lost_says_nothing_was_kept(client, staff):
    """From an outside probe: such an export's page said "cancelled after 120 min without a word from its worker (it
    seems lost); what it stored before stays" above "Nothing was kept": an export stores nothing but its file, which
    is not kept. Other kinds (an import's rows) still say what they stored stays."""
    from datetime import timedelta

    from django.utils import timezone

    _decided(1)
    client.force_login(staff)
    exporting.post(client)
    job = ExportJob.objects.get()
    lifecycle.claim(ExportJob, job.pk, restart=True)  # a worker took it, and was lost
    long_ago = timezone.now() - timedelta(hours=2)
    ExportJob.objects.filter(pk=job.pk).update(claimed=long_ago, updated=long_ago)
    client.post(reverse("annotate:export_cancel", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert job.stage == "cancelled after 120 min without a word from its worker (it seems lost); nothing was kept; " \
                        "start the export again for the file"
    page = client.get(reverse("annotate:export_job", args=[job.pk])).content.decode()
    assert "what it stored before stays" not in page and "Nothing was kept" in page


def test_a_row_naming_a_folder_kept_in_the_exports_folder_neither_writes_there_nor_removes_it(
        client, staff, settings):
    """From the review: a job row edited by hand to point at a folder someone keeps in the exports folder
    (exports/team-notes/...) had the worker write its export there, and deleting the job removed the whole folder."""
    _decided(1)
    client.force_login(staff)
    exporting.post(client)
    job = ExportJob.objects.get()
    notes = Path(settings.EXPORTS_DIR) / "team-notes"
    notes.mkdir(parents=True)
    (notes / "plan.txt").write_text("keep me")
    ExportJob.objects.filter(pk=job.pk).update(path=str(notes / "preferences.jsonl"))
    job = export_jobs.run(job.pk)
    assert job.status == "failed" and "is not a folder of its own in the exports folder" in job.error
    assert sorted(p.name for p in notes.iterdir()) == ["plan.txt"], "nothing written where the row pointed"
    export_jobs.remove_files(job)  # as deleting the job does
    assert (notes / "plan.txt").read_text() == "keep me"


def test_a_sweep_that_cannot_remove_a_folder_leaves_the_export_to_run(client, staff, settings, monkeypatch):
    """From the review: a folder the sweep could not remove (its permissions, a busy mount) raised out of the job
    before it was tried, and left every export after it 'running' under 'waiting for a worker'."""
    import os
    import time

    _decided(1)
    client.force_login(staff)
    orphan = Path(settings.EXPORTS_DIR) / ("d" * 32)
    orphan.mkdir(parents=True)
    old = time.time() - 2 * export_jobs.SWEEP_AFTER_S
    os.utime(orphan, (old, old))

    real = export_jobs.shutil.rmtree

    def busy(path, *args, **kwargs):
        if Path(path) == orphan:
            raise OSError(16, "Device or resource busy", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(export_jobs.shutil, "rmtree", busy)
    exporting.post(client)
    job = export_jobs.run(ExportJob.objects.get().pk)
    assert job.status == "succeeded" and orphan.is_dir()


def test_a_worker_lost_again_and_again_ends_the_job_failed_and_removes_what_it_wrote(client, staff):
    _decided(1)
    client.force_login(staff)
    exporting.post(client)
    job = ExportJob.objects.get()
    ExportJob.objects.filter(pk=job.pk).update(status="running", attempts=job.max_attempts, total=7)
    Path(job.path).parent.mkdir(parents=True)
    Path(job.path).write_text("half a line")  # the last attempt was killed while it wrote
    job = export_jobs.run(job.pk)
    assert job.status == "failed" and "stopped during this job" in job.error
    assert not Path(job.path).parent.exists()


@pytest.mark.parametrize("how", ["stopping", "out of attempts"])
def test_an_export_whose_worker_was_lost_reads_ended_only_once_its_folder_is_gone(client, staff, how):
    """An export whose worker was lost while it was being cancelled was ended by the next worker's start
    (requeue_interrupted) with its half-written file left in the exports folder until the next export's sweep, an hour
    on; one lost once too often was ended failed by its task's claim, which returned with the folder still there (run
    removed it only afterwards). Another export's folder stays."""
    _decided(1)
    client.force_login(staff)
    exporting.post(client)
    exporting.post(client)
    job, done = ExportJob.objects.order_by("pk")
    ExportJob.objects.filter(pk=done.pk).update(status="succeeded")
    Path(done.path).parent.mkdir(parents=True)
    Path(done.path).write_text('{"prompt": "a row"}\n')
    lifecycle.claim(ExportJob, job.pk, restart=True)  # a worker took it ...
    folder = Path(job.path).parent
    folder.mkdir(parents=True)
    Path(job.path).write_text('{"prompt": "half a row"')  # ... and was lost while it wrote
    if how == "stopping":
        client.post(reverse("annotate:export_cancel", args=[job.pk]))  # a Cancel its worker never heard
        assert ExportJob.objects.get(pk=job.pk).status == "cancelling"
        assert lifecycle.requeue_interrupted() == {}  # a worker starts, and ends it
    else:
        ExportJob.objects.filter(pk=job.pk).update(attempts=job.max_attempts)
        assert lifecycle.claim(ExportJob, job.pk, restart=True) is None  # as export_jobs.run claims it again
    job.refresh_from_db()
    assert job.status == ("cancelled" if how == "stopping" else "failed")
    assert not folder.exists(), "the ended export's partial file was left in the exports folder"
    assert Path(done.path).is_file(), "another export's file was removed"


def test_a_restarted_export_counts_its_rows_again(client, staff, monkeypatch):
    """A lost attempt's total (the rows it was writing) stood on the new attempt's page as '0 / 7' while it read
    the pairs again, and a Cancel then said 'cancelled after 0 of 7 rows'."""
    _decided(2)
    client.force_login(staff)
    exporting.post(client)
    job = ExportJob.objects.get()
    ExportJob.objects.filter(pk=job.pk).update(status="running", attempts=1, total=7, done=3)
    seen = []
    real = export_jobs._export

    def watched(job, tracker, counts):
        seen.append(ExportJob.objects.values_list("done", "total").get(pk=job.pk))
        return real(job, tracker, counts)

    monkeypatch.setattr(export_jobs, "_export", watched)
    job = export_jobs.run(job.pk)
    assert seen == [(0, 0)] and (job.status, job.done, job.total) == ("succeeded", 2, 2)


@pytest.mark.parametrize("fmt", ["jsonl", "hf"])
def test_a_cancel_that_lands_once_the_file_is_written_but_before_the_job_ends_keeps_nothing(
        client, staff, monkeypatch, settings, fmt):
    """A Cancel pressed after the export's last check for one (its last chunk of rows, its last block zipped: asked
    at most every CHECK_EVERY_S) but before the job ended, while the file was renamed into place or the hf folder
    removed: the job ended "succeeded" with its file, under a page that had just answered "cancelling", and nothing
    said the Cancel had come too late. Before it ends, the job asks afresh (as a training run does before it
    registers its version): the Cancel is honoured as one a moment earlier is, with nothing kept. One that comes
    after the job ended finds nothing to cancel (the next test)."""
    _decided(5)
    client.force_login(staff)
    response = exporting.post(client, format=fmt)
    job = ExportJob.objects.get()
    real, answers = export_jobs._export, []

    def written_then_cancelled(job_, tracker, counts):
        rows = real(job_, tracker, counts)
        assert Path(job.path).is_file(), "the file is in place"
        answers.append(client.post(reverse("annotate:export_cancel", args=[job.pk]),
                                   HTTP_HX_REQUEST="true").content.decode())
        return rows

    monkeypatch.setattr(export_jobs, "_export", written_then_cancelled)
    export_jobs.run(job.pk)
    job.refresh_from_db()
    assert "cancelling" in answers[0]
    assert job.status == "cancelled" and job.stage.startswith("cancelled after 5 of 5 rows: nothing was kept")
    assert not Path(job.path).parent.exists() and list(Path(settings.EXPORTS_DIR).iterdir()) == []
    page = client.get(response.url).content.decode()
    assert "Nothing was kept" in page and reverse("annotate:export_download", args=[job.pk]) not in page
    assert client.get(reverse("annotate:export_download", args=[job.pk])).status_code == 409


def test_a_cancel_that_lands_after_the_export_finished_shows_how_long_the_file_is_kept(client, staff):
    """From the review: the Cancel button's answer (htmx) rendered the job's partial without the sentence of how long
    the file is kept: 'The file is .'"""
    _decided(1)
    client.force_login(staff)
    exporting.post(client)
    job = export_jobs.run(ExportJob.objects.get().pk)
    answer = client.post(reverse("annotate:export_cancel", args=[job.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert f"The file is {export_jobs.KEPT}." in answer


def test_the_admin_cancels_selected_exports_and_leaves_ended_ones(admin_client, client, staff):
    _decided(1)
    client.force_login(staff)
    exporting.post(client)
    exporting.post(client)
    queued, ended = ExportJob.objects.order_by("pk")
    export_jobs.run(ended.pk)
    answer = admin_client.post("/admin/annotate/exportjob/", {"action": "cancel_selected",
                                                              "_selected_action": [queued.pk, ended.pk]}, follow=True)
    queued.refresh_from_db(), ended.refresh_from_db()
    assert (queued.status, ended.status) == ("cancelled", "succeeded")
    assert "1 export job asked to stop" in answer.content.decode()
    assert Path(ended.path).is_file(), "the finished export's file is kept"


@pytest.mark.django_db(transaction=True)
def test_an_export_reading_its_pairs_on_sqlite_survives_another_process_writing(tmp_path):
    """An export reports its progress (a write) while it reads the pairs. It read them through one open cursor
    (QuerySet.iterator), which holds SQLite's read snapshot between its chunks: once another process had written
    (a Cancel from the page, a generation job's progress, a person's label), the export's next write was refused at
    once with "database is locked" (a stale snapshot cannot take the write lock; no busy timeout waits for it), and
    the export failed, or a cancelled one said it failed while stopping. The pairs are read a page at a time now."""
    import sqlite3

    from django.db import connection

    from annotate.importers import import_preferences

    if connection.vendor != "sqlite":
        pytest.skip("the read snapshot is SQLite's")
    rows = [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(1200)]  # more than a page
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    import_preferences(path)
    writer = sqlite3.connect(connection.settings_dict["NAME"], timeout=30, isolation_level=None)
    writer.execute("CREATE TABLE IF NOT EXISTS probe_writes (at REAL)")
    read = []

    def progress(n: int) -> None:  # another process writes, then the export reports its progress, every 100 pairs
        read.append(n)
        if len(read) % 100 == 0:
            writer.execute("INSERT INTO probe_writes VALUES (1)")
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO probe_writes VALUES (2)")

    try:
        export = export_preferences(tmp_path / "out.jsonl", fmt="jsonl", progress=progress)
    finally:
        writer.execute("DROP TABLE probe_writes")
        writer.close()
    assert export.rows == 1200 and len(read) == 1200
