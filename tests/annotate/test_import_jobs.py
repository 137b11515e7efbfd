"""Imports are written a chunk of rows a transaction (annotate.importers.CHUNK_ROWS), so the write lock is never held
for a whole file, and an import from the page is a job: it shows progress, can be cancelled between chunks (keeping
what it wrote, and saying so), starts again after a lost worker without duplicates, and is resumed only by a worker
of its own queue."""
from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
from django.urls import reverse

from annotate import import_jobs, importers
from annotate.importers import ImportStopped, import_preferences, import_prompts
from annotate.models import ImportJob, Label, Pair
from generation.models import Prompt, normalised_hash
from jobs import lifecycle
from tests.annotate.importing import post, queue, upload
from tests.threads import run_at_once

pytestmark = pytest.mark.django_db


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _prompts(n: int) -> bytes:
    return "".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(n)).encode()


def test_chunks_share_one_imports_bookkeeping(tmp_path, monkeypatch):
    """Rows 3 and 4 meet row 1's pair, written by an earlier chunk: present, and disagreeing."""
    monkeypatch.setattr(importers, "CHUNK_ROWS", 2)
    path = _jsonl(tmp_path / "p.jsonl", [
        {"prompt": "q1", "chosen": "a", "rejected": "b"},
        {"prompt": "q2", "chosen": "c", "rejected": "d"},
        {"prompt": "q1", "chosen": "a", "rejected": "b"},
        {"prompt": "q1", "chosen": "b", "rejected": "a"},
        {"prompt": "q3", "chosen": "e", "rejected": "f"},
    ])
    result = import_preferences(path)
    assert (result.created, result.skipped, result.disagreeing) == (3, 1, (4,))
    assert Pair.objects.count() == 3 and Label.objects.count() == 3


def test_an_import_asked_to_stop_keeps_the_chunks_it_wrote_and_a_second_run_adds_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(importers, "CHUNK_ROWS", 2)
    path = tmp_path / "p.jsonl"
    path.write_bytes(_prompts(5))
    chunks = []  # asked while the file is read too: a stop once two chunks are written
    with pytest.raises(ImportStopped) as stopped:
        import_prompts(path, should_stop=lambda: len(chunks) == 2, on_chunk=lambda result, rows: chunks.append(rows))
    assert (stopped.value.rows, stopped.value.total, stopped.value.why) == (4, 5, "cancelled")
    assert stopped.value.result.created == 4 and Prompt.objects.count() == 4
    assert "cancelled after 4 of 5 rows; those are stored (4 added" in str(stopped.value)
    again = import_prompts(path)
    assert (again.created, again.skipped, Prompt.objects.count()) == (1, 4, 5)


def test_ctrl_c_inside_a_chunk_rolls_that_chunk_back_and_says_how_far_it_got(tmp_path, monkeypatch):
    monkeypatch.setattr(importers, "CHUNK_ROWS", 2)
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(5)])
    seen = []

    def progress(n):
        seen.append(n)
        if len(seen) == 3:  # the first row of the second chunk
            raise KeyboardInterrupt

    with pytest.raises(ImportStopped) as stopped:
        import_preferences(path, progress=progress)
    assert (stopped.value.rows, stopped.value.why) == (2, "interrupted")
    assert Pair.objects.count() == 2 and Label.objects.count() == 2 and Prompt.objects.count() == 2


def test_cancelling_an_import_job_from_its_page_stops_it_between_chunks(client, staff, monkeypatch):
    monkeypatch.setattr(importers, "CHUNK_ROWS", 2)
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)  # the Cancel click is read at the next chunk
    client.force_login(staff)
    job, url = queue(client, "six.jsonl", _prompts(6))
    real, calls = importers._prompts_by_hash, []

    def writing(*args, **kwargs):  # the second chunk: the person clicks Cancel while it is written
        calls.append(1)
        if len(calls) == 2:
            page = client.get(url).content.decode()
            assert "running" in page and "writing 6 checked rows" in page and f'hx-post="{reverse("annotate:import_cancel", args=[job.pk])}"' in page
            assert client.post(reverse("annotate:import_cancel", args=[job.pk]), HTTP_HX_REQUEST="true").status_code == 200
        return real(*args, **kwargs)

    monkeypatch.setattr(importers, "_prompts_by_hash", writing)
    import_jobs.run(job.pk)
    job.refresh_from_db()
    assert job.status == "cancelled" and (job.done, job.total, job.added) == (4, 6, 4)
    assert job.stage.startswith("cancelled after 4 of 6 rows: 4 added, 0 already present")
    assert Prompt.objects.count() == 4 and not Path(job.path).exists()
    page = client.get(url).content.decode()
    assert "Stored before it stopped: 4 added, 0 already present. Upload the same file again to add the rest." in page
    monkeypatch.setattr(importers, "_prompts_by_hash", real)
    again, _ = upload(client, "six.jsonl", _prompts(6))
    assert again.status == "succeeded" and (again.added, again.skipped) == (2, 4) and Prompt.objects.count() == 6


def test_an_import_jobs_counts_follow_the_chunks_it_has_stored(client, staff, monkeypatch):
    """Its `added` and `skipped` were written only when the job ended: a page (or the API) read while the chunks
    were written said "0 added" under a moving bar. They are written with each chunk, in its transaction."""
    monkeypatch.setattr(importers, "CHUNK_ROWS", 2)
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 0.0)  # every report written, as the page would poll it
    client.force_login(staff)
    Prompt.objects.create(text="question 1", hash=normalised_hash("question 1"), source="before")
    job, url = queue(client, "six.jsonl", _prompts(6))
    real, seen = importers._prompts_by_hash, []

    def writing(*args, **kwargs):  # each chunk as it begins: what the row and the page say of those before it
        seen.append((ImportJob.objects.values_list("done", "added", "skipped").get(pk=job.pk),
                     client.get(url).content.decode()))
        return real(*args, **kwargs)

    monkeypatch.setattr(importers, "_prompts_by_hash", writing)
    import_jobs.run(job.pk)
    assert [counts for counts, _ in seen] == [(0, 0, 0), (2, 1, 1), (4, 3, 1)]
    assert "Stored so far: 3 added, 1 already present." in seen[2][1]
    assert "Stored before it stopped" not in seen[2][1] and "Stored so far" not in seen[0][1]
    job.refresh_from_db()
    assert job.status == "succeeded" and (job.done, job.added, job.skipped) == (6, 5, 1)


def test_a_retried_import_does_not_show_the_counts_its_lost_attempt_stored(client, staff, monkeypatch):
    """Its rows are counted again from the first (those the lost attempt stored as already present): the counts
    that attempt's last chunk wrote stood beside "reading and checking" as this attempt's until it had written."""
    client.force_login(staff)
    job, url = queue(client, "a.jsonl", _prompts(3))
    lifecycle.claim(ImportJob, job.pk, restart=True)  # the first worker took it ...
    import_prompts(job.path, name=job.file_name)  # ... stored every row, said so, and was killed
    ImportJob.objects.filter(pk=job.pk).update(done=3, added=3)
    real, reading = importers.formats.read_prompts, []

    def read(*args, **kwargs):
        reading.append(ImportJob.objects.values_list("done", "added", "skipped").get(pk=job.pk))
        return real(*args, **kwargs)

    monkeypatch.setattr(importers.formats, "read_prompts", read)
    import_jobs.run(job.pk)
    job.refresh_from_db()
    assert reading == [(0, 0, 0)]
    assert job.status == "succeeded" and (job.added, job.skipped) == (0, 3)


def _upload_file(name, content):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content)


def test_a_job_cancelled_while_queued_stores_nothing_and_its_file_goes(client, staff):
    client.force_login(staff)
    job, url = queue(client, "a.jsonl", _prompts(3))
    client.post(reverse("annotate:import_cancel", args=[job.pk]))
    import_jobs.run(job.pk)  # the task arrives late
    job.refresh_from_db()
    assert job.status == "cancelled" and not Prompt.objects.exists() and not Path(job.path).exists()


def test_after_a_lost_worker_the_import_starts_again_and_what_it_stored_counts_as_present(client, staff):
    client.force_login(staff)
    job, url = queue(client, "a.jsonl", _prompts(3))
    lifecycle.claim(ImportJob, job.pk, restart=True)  # the first worker took it ...
    import_prompts(job.path, name=job.file_name)  # ... stored every row, and was killed before it said so
    import_jobs.run(job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.attempts == 2 and (job.added, job.skipped) == (0, 3)
    assert "count as already present" in job.log and Prompt.objects.count() == 3


@pytest.mark.parametrize("how", ["stopping", "out of attempts"])
def test_an_import_whose_worker_was_lost_reads_ended_only_once_its_upload_is_gone(client, staff, how):
    """An import whose worker was lost while it was being cancelled was ended by the next worker's start
    (requeue_interrupted) with its upload left in the imports folder until the next import's sweep, an hour on; one
    lost once too often was ended failed by its task's claim, which returned with the upload still there (run
    removed it only afterwards). Another import's upload stays."""
    client.force_login(staff)
    job, url = queue(client, "a.jsonl", _prompts(3))
    other, url = queue(client, "b.jsonl", _prompts(2))
    lifecycle.claim(ImportJob, job.pk, restart=True)  # a worker took it, and was lost
    if how == "stopping":
        client.post(reverse("annotate:import_cancel", args=[job.pk]))  # a Cancel its worker never heard
        assert ImportJob.objects.get(pk=job.pk).status == "cancelling"
        assert lifecycle.requeue_interrupted() == {}  # a worker starts, and ends it
    else:
        ImportJob.objects.filter(pk=job.pk).update(attempts=job.max_attempts)
        assert lifecycle.claim(ImportJob, job.pk, restart=True) is None  # as import_jobs.run claims it again
    job.refresh_from_db()
    assert job.status == ("cancelled" if how == "stopping" else "failed")
    assert not Path(job.path).exists(), "the ended import's upload was left in the imports folder"
    assert Path(other.path).is_file(), "another import's upload was removed"


def test_a_starting_worker_resumes_only_the_jobs_of_its_own_queues(client, staff, settings):
    client.force_login(staff)
    job, url = queue(client, "a.jsonl", _prompts(3))
    lifecycle.claim(ImportJob, job.pk, restart=True)  # running on the default queue's worker
    with mock.patch("annotate.tasks.run_import_job.apply_async") as send:
        # the GPU worker starting now must not send it again: the import worker may be running it this moment
        assert lifecycle.requeue_interrupted([settings.PREFLOOP_GPU_QUEUE]) == {}
        send.assert_not_called()
        assert lifecycle.requeue_interrupted([settings.CELERY_TASK_DEFAULT_QUEUE]) == {"ImportJob": [job.pk]}
        send.assert_called_once_with((job.pk,))


@pytest.mark.django_db(transaction=True)
def test_people_can_write_while_a_large_file_is_imported_on_sqlite(tmp_path, monkeypatch):
    """A label submission waiting on SQLite's write lock polls for it; between two chunks the import leaves the lock
    free long enough for such a writer to get in (before, one transaction held it for the whole file, and back to
    back chunks took it again before any poll came)."""
    import sqlite3
    import threading

    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("the write lock is SQLite's")
    monkeypatch.setattr(importers, "CHUNK_ROWS", 50)
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(1000)])
    writer = sqlite3.connect(connection.settings_dict["NAME"], timeout=30, isolation_level=None,
                             check_same_thread=False)
    writer.execute("CREATE TABLE IF NOT EXISTS probe_writes (at REAL)")
    importing, stop, written = threading.Event(), threading.Event(), []

    def write() -> None:
        while not stop.is_set():
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("INSERT INTO probe_writes VALUES (1)")
            writer.execute("COMMIT")
            if importing.is_set():
                written.append(1)
            stop.wait(0.01)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        result = import_preferences(path, on_read=lambda rows: importing.set())  # from the first chunk on
        importing.clear()
    finally:
        stop.set()
        thread.join()
        writer.execute("DROP TABLE probe_writes")
        writer.close()
    assert result.created == 1000
    assert len(written) >= 5, f"only {len(written)} writes got in during 20 chunks"


def test_a_database_failure_part_way_fails_the_job_saying_what_was_stored(client, staff, monkeypatch):
    from django.db import OperationalError

    monkeypatch.setattr(importers, "CHUNK_ROWS", 2)
    client.force_login(staff)
    job, url = queue(client, "a.jsonl", _prompts(5))
    real, calls = importers._prompts_by_hash, []

    def failing(*args, **kwargs):  # the disk fills up during the second chunk
        calls.append(1)
        if len(calls) == 2:
            raise OperationalError("database or disk is full")
        return real(*args, **kwargs)

    monkeypatch.setattr(importers, "_prompts_by_hash", failing)
    import_jobs.run(job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and (job.done, job.added) == (2, 2) and Prompt.objects.count() == 2
    assert job.error.startswith("failed (OperationalError: database or disk is full) after 2 of 5 rows; those are stored")
    page = client.get(url).content.decode()
    assert "Stored before it stopped: 2 added, 0 already present" in page and not Path(job.path).exists()


def test_uploads_no_import_will_read_are_swept_once_old(client, staff, settings, tmp_path):
    import os
    import time

    client.force_login(staff)
    job, _ = queue(client, "a.jsonl", _prompts(2))
    queued = Path(job.path)
    folder = Path(settings.IMPORTS_DIR)
    left, fresh = folder / "left-by-a-lost-worker.jsonl", folder / "being-uploaded.jsonl"
    for path in (left, fresh):
        path.write_bytes(b"{}\n")
    hour_ago = time.time() - 2 * import_jobs.SWEEP_AFTER_S
    for path in (left, queued):
        os.utime(path, (hour_ago, hour_ago))
    assert import_jobs.sweep() == 1
    assert not left.exists() and fresh.exists() and queued.exists(), "a queued job's file and a new upload stay"


@pytest.mark.django_db(transaction=True)
def test_an_upload_whose_task_cannot_be_sent_fails_its_job_and_keeps_no_file(staff, settings):
    """The task is sent when the job's row commits; with the broker down that raises, after the row is stored."""
    from kombu.exceptions import OperationalError

    with mock.patch("annotate.tasks.run_import_job.apply_async", side_effect=OperationalError("broker down")):
        with pytest.raises(OperationalError):
            import_jobs.start(_upload_file("a.jsonl", _prompts(2)), kind="prompts", options={}, user=staff)
    job = ImportJob.objects.get()
    assert job.status == "failed" and "the task queue could not be reached" in job.error
    assert not any(Path(settings.IMPORTS_DIR).iterdir())


@pytest.mark.django_db(transaction=True)
def test_the_import_page_says_when_the_task_queue_is_down(client, staff, settings):
    from kombu.exceptions import OperationalError

    client.force_login(staff)
    with mock.patch("annotate.tasks.run_import_job.apply_async", side_effect=OperationalError("broker down")):
        response = post(client, "a.jsonl", _prompts(2))
    assert response.status_code == 503
    assert "the task queue could not be reached, so the file was not queued" in response.content.decode()
    assert ImportJob.objects.get().status == "failed" and not Prompt.objects.exists()


@pytest.mark.parametrize("their_split", ["train", "eval"])
def test_a_prompt_another_import_stores_meanwhile_is_found_not_an_error(tmp_path, monkeypatch, their_split):
    """Two imports at once (the default queue's worker runs two): between this chunk's query of its prompts and its
    insert, the other commits one of them. It is taken as found, not counted as added; when it went in as an eval
    prompt, this file's pair on it is set aside, never attached to an eval prompt."""
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "shared question", "chosen": "a", "rejected": "b"},
                                         {"prompt": "mine alone", "chosen": "c", "rejected": "d"}])
    real, raced = importers._stored_prompts, []

    def stored(hashes):
        found = real(hashes)
        if not raced:  # the other import commits right after this chunk's query of its prompts
            raced.append(1)
            Prompt.objects.create(text="shared question", split=their_split, source="the other import")
        return found

    monkeypatch.setattr(importers, "_stored_prompts", stored)
    result = import_preferences(path)
    assert Prompt.objects.count() == 2 and raced
    if their_split == "eval":
        assert (result.created, result.set_aside) == (1, (1,))
        assert not Pair.objects.filter(prompt__text="shared question").exists()
    else:
        assert (result.created, result.set_aside) == (2, ())
        assert Pair.objects.filter(prompt__text="shared question").count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["pairs", "preferences"])
def test_two_imports_of_one_file_at_the_same_moment_add_its_pairs_once(tmp_path, kind, monkeypatch):
    """The default queue's worker runs two imports at once. The second read the pairs while the first had added
    them in its chunk but not yet committed: on PostgreSQL it read that they were not there and added them again.
    The chunk's prompts (stored before) are now locked by the first until it commits. (SQLite's write lock already
    kept the two apart.)"""
    import threading
    import time

    from django.db import connection

    rows = [{"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(30)]
    if kind == "pairs":
        rows = [{"prompt": r["prompt"], "response_a": r["chosen"], "response_b": r["rejected"]} for r in rows]
    path = _jsonl(tmp_path / "same.jsonl", rows)
    import_prompts(path)  # the prompts are there before either import
    run = importers.import_pairs if kind == "pairs" else import_preferences
    results, first_written = {}, threading.Event()
    flush = importers._NewPairs.flush

    def held_flush(self) -> None:
        flush(self)
        if threading.current_thread().name == "first" and not first_written.is_set():
            first_written.set()  # the first import's pairs are written; its chunk commits in 1.5 s
            time.sleep(1.5)

    monkeypatch.setattr(importers._NewPairs, "flush", held_flush)

    def first() -> None:
        try:
            results["first"] = run(path)
        finally:
            first_written.set()
            connection.close()

    def second() -> None:
        try:
            first_written.wait(60)
            results["second"] = run(path)
        finally:
            connection.close()

    threads = [threading.Thread(target=first, name="first"), threading.Thread(target=second, name="second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert (results["first"].created, results["second"].created) == (30, 0)
    assert results["second"].skipped == 30
    assert Pair.objects.count() == 30
    if kind == "preferences":
        assert Label.objects.count() == 30


@pytest.mark.django_db(transaction=True)
def test_deleting_a_prompt_in_the_admin_while_an_import_labels_its_pair_deadlocks_neither(tmp_path, monkeypatch,
                                                                                           staff):
    """An import locks its chunk's prompts, then the stored pairs it labels. Deleting the prompt in the admin
    deleted its pairs first and the prompt last: each side held what the other wanted next, and PostgreSQL ended
    one with a deadlock error (a 500 in the admin, or a failed import). The admin now locks the prompts first."""
    import threading
    import time

    from django.test import Client

    from .factories import make_pair

    pair = make_pair(text_a="good answer", text_b="bad answer")
    path = _jsonl(tmp_path / "prefs.jsonl", [{"prompt": pair.prompt.text, "chosen": "good answer",
                                              "rejected": "bad answer"}])
    importers.import_account()
    holding, answers = threading.Event(), []
    existing = importers._existing_pairs

    def held_existing(hashes):  # the import holds its prompts; the pairs it will label are not locked yet
        if threading.current_thread().name == "import" and not holding.is_set():
            holding.set()
            time.sleep(1.5)
        return existing(hashes)

    monkeypatch.setattr(importers, "_existing_pairs", held_existing)

    def delete() -> None:
        holding.wait(60)
        admin = Client()
        admin.force_login(staff)
        answers.append(admin.post(reverse("admin:generation_prompt_delete", args=[pair.prompt_id]),
                                  {"post": "yes"}).status_code)

    errors = run_at_once({"import": lambda: import_preferences(path), "admin": delete}, release=holding)
    assert errors == [] and answers == [302]
    assert not Prompt.objects.filter(pk=pair.prompt_id).exists() and not Pair.objects.exists()


def test_the_admin_lists_import_jobs_but_cannot_point_one_at_another_file(admin_client, staff, client):
    client.force_login(staff)
    job, _ = upload(client, "a.jsonl", _prompts(1))
    assert admin_client.get("/admin/annotate/importjob/").status_code == 200
    change = f"/admin/annotate/importjob/{job.pk}/change/"
    assert admin_client.get(change).status_code == 200  # a read-only view
    admin_client.post(change, {"path": "/etc/passwd", "kind": "prompts", "file_name": "x"})
    job.refresh_from_db()
    assert job.path != "/etc/passwd"
    assert admin_client.get("/admin/annotate/importjob/add/").status_code == 403
    # an ended job may be deleted; an active one may not (its worker would fail on the missing row)
    running, _ = queue(client, "b.jsonl", _prompts(1))
    refused = admin_client.post(f"/admin/annotate/importjob/{running.pk}/delete/", {"post": "yes"}, follow=True)
    assert f"Not deleted: import job {running.pk} is queued" in refused.content.decode()
    assert ImportJob.objects.filter(pk=running.pk).exists()
    assert admin_client.get(f"/admin/annotate/importjob/{job.pk}/delete/").status_code == 200
