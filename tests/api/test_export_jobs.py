"""An export from code, over real HTTP: started as a job with the export page's options, watched until its file is
written, downloaded, listed and cancelled; refused, by field or by permission, as the page refuses it."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.test import Client as PageClient
from kombu.exceptions import OperationalError

from annotate import export_jobs
from annotate.models import ExportJob
from annotate.services import label_pair
from jobs import lifecycle
from prefloop_client import APIError, Client
from tests.annotate import exporting
from tests.annotate.factories import make_pair, make_round, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _not_sent(request, monkeypatch) -> list:
    """The export task's messages, kept here where a test runs the job itself (eager_tasks aside): sent, they waited
    in the checkout's broker folder for its next worker, which ran them on its own database."""
    sent = []
    if "eager_tasks" not in request.fixturenames:
        monkeypatch.setattr(lifecycle.task_named(ExportJob.task_name), "apply_async",
                            lambda *args, **kwargs: sent.append(args))
    return sent


def _decided(n: int, round_=None) -> None:
    person = make_user()
    for i in range(n):
        label_pair(make_pair(text_a=f"good {i}", text_b=f"bad {i}", round=round_).pk, person, "left")


def _rows(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


def _get(client: Client, path: str) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET with the client's token, the body as bytes (a file is no JSON)."""
    url = client.base[:-len("/api/v1")] + path if path.startswith("/api/v1/") else client.base + path
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {client.token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _page_rows(user, **fields) -> list[dict]:
    """The rows the export page's job writes for these form fields, downloaded from its page."""
    page = PageClient()
    page.force_login(user)
    job, response = exporting.export(page, **fields)
    assert job is not None and job.status == "succeeded"
    return _rows(exporting.content(response))


def test_an_export_started_through_the_api_is_watched_to_its_file_with_the_pages_rows(staff_api, staff):
    _decided(3, make_round(2))
    _decided(2)  # in no round: left out by round=2
    job = staff_api.start_export(format="jsonl", round=2, soft_labels=True, include_automatic=False)
    assert (job["kind"], job["status"], job["details"]["round"], job["details"]["soft_labels"],
            job["details"]["include_automatic"], job["details"]["download_url"]) == (
        "export", "queued", 2, True, False, None)
    export_jobs.run(job["id"])  # the worker's side
    done = staff_api.job("export", job["id"])
    assert (done["status"], done["progress"], done["details"]["done"], done["details"]["total"]) == (
        "succeeded", 1.0, 3, 3)
    url = done["details"]["download_url"]
    assert url == f"/api/v1/jobs/export/{job['id']}/file"
    status, headers, body = _get(staff_api, url)
    assert status == 200 and f'filename="{done["details"]["file_name"]}"' in headers["Content-Disposition"]
    assert "attachment" in headers["Content-Disposition"]
    rows = _rows(body)
    assert len(rows) == 3
    assert rows == _page_rows(staff, format="jsonl", round="2", soft_labels="on", include_automatic=None)
    assert [listed["id"] for listed in staff_api.jobs("export")][-1] == job["id"]  # after the page's own, newest
    assert staff_api.jobs("export", active=True) == []


def test_the_client_starts_waits_for_and_downloads_an_export_and_never_overwrites_a_file(
        staff_api, tmp_path, eager_tasks):
    _decided(2)
    job = staff_api.wait(staff_api.start_export(format="parquet", min_agreement=0.5), timeout=60, poll=0.2)
    assert job["status"] == "succeeded" and job["details"]["min_agreement"] == 0.5
    written = staff_api.download_export(job, tmp_path / "prefs.parquet")
    assert written == tmp_path / "prefs.parquet"
    exported = Path(ExportJob.objects.get(pk=job["id"]).path).read_bytes()
    assert written.read_bytes() == exported and exported.startswith(b"PAR1")
    written.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        staff_api.download_export(job["id"], written)
    assert written.read_bytes() == b"mine"
    folder = tmp_path / "out"
    folder.mkdir()
    inside = staff_api.download_export(job["id"], folder)  # a folder: the file inside, under the job's own name
    assert inside == folder / job["details"]["file_name"] and inside.read_bytes() == exported


def test_a_file_is_refused_until_the_export_has_succeeded_and_once_it_is_gone(staff_api, tmp_path):
    _decided(1)
    job = staff_api.start_export()
    with pytest.raises(APIError) as refused:
        staff_api.download_export(job, tmp_path / "early.jsonl")
    assert refused.value.status == 409 and "still queued" in refused.value.detail
    assert not (tmp_path / "early.jsonl").exists(), "a refused download leaves no file behind"
    export_jobs.run(job["id"])
    Path(ExportJob.objects.get(pk=job["id"]).path).unlink()
    status, _, body = _get(staff_api, f"/jobs/export/{job['id']}/file")
    assert status == 404 and "not in the exports folder any more" in json.loads(body)["detail"]
    status, _, body = _get(staff_api, "/jobs/export/999999/file")
    assert status == 404 and json.loads(body)["detail"] == "no export job with id 999999"


def test_bad_fields_are_refused_by_name_and_start_nothing(staff_api):
    make_round(1)
    for body, field, words in (({"format": "csv"}, "format", "jsonl"), ({"min_agreement": 1.5}, "min_agreement", ""),
                               ({"round": 7}, "round", "no labelling round 7"), ({"licence": "mit"}, "licence", ""),
                               ({"license": "cc\x07by"}, "license", "printable")):
        with pytest.raises(APIError) as refused:
            staff_api.post("/jobs/export", body)
        assert refused.value.status == 400, body
        assert [e["field"] for e in refused.value.errors] == [field], refused.value.errors
        assert words in refused.value.detail
    with pytest.raises(APIError) as refused:  # an hf data set of no rows cannot be loaded: refused before a job
        staff_api.start_export(format="hf", round=1)
    assert refused.value.status == 400 and "no decided pairs to export" in refused.value.detail
    assert not ExportJob.objects.exists()


def test_an_export_needs_staff_and_the_permission_to_add_export_jobs(live_server, annotator, token_for,
                                                                     django_user_model):
    looker = django_user_model.objects.create_user("looker", is_staff=True)
    looker.user_permissions.add(Permission.objects.get(codename="view_exportjob"))
    job = ExportJob.objects.create(format="jsonl", license="", path="", status=ExportJob.SUCCEEDED)
    refused = []
    for user in (annotator, looker):
        client = Client(live_server.url, token_for(user))
        with pytest.raises(APIError) as caught:
            client.start_export()
        refused.append((caught.value.status, caught.value.detail))
    assert refused[0][0] == 403 and refused[1][0] == 403
    assert "annotate.add_exportjob" in refused[1][1]
    assert not ExportJob.objects.exclude(pk=job.pk).exists()
    annotator_client = Client(live_server.url, token_for(annotator))
    for path in (f"/jobs/export/{job.pk}/file", f"/jobs/export/{job.pk}"):
        assert _get(annotator_client, path)[0] == 403, path
    looker_client = Client(live_server.url, token_for(looker))
    assert looker_client.job("export", job.pk)["status"] == "succeeded"  # it may still look


def test_an_export_is_cancelled_through_the_api_and_writes_nothing(staff_api, tmp_path):
    _decided(2)
    job = staff_api.start_export()
    cancelled = staff_api.cancel(job)
    assert cancelled["status"] == "cancelled" and cancelled["details"]["download_url"] is None
    export_jobs.run(job["id"])  # the worker picks it up after the cancel: it writes nothing
    row = ExportJob.objects.get(pk=job["id"])
    assert row.status == "cancelled" and not Path(row.path).exists()
    with pytest.raises(APIError) as refused:
        staff_api.cancel(job)
    assert refused.value.status == 409
    with pytest.raises(APIError) as refused:
        staff_api.download_export(job, tmp_path / "cancelled.jsonl")
    assert refused.value.status == 409 and "ended cancelled and kept no file" in refused.value.detail
    running = staff_api.start_export()
    ExportJob.objects.filter(pk=running["id"]).update(status=ExportJob.RUNNING)
    assert staff_api.cancel(running)["status"] == "cancelling"  # its worker stops at its next check
    assert [j["id"] for j in staff_api.jobs("export", active=True)] == [running["id"]]


def test_an_export_started_with_the_task_queue_down_is_a_503(staff_api, monkeypatch):
    def down(*args, **kwargs):
        raise OperationalError("[Errno 111] Connection refused")

    monkeypatch.setattr(lifecycle.task_named(ExportJob.task_name), "apply_async", down)
    with pytest.raises(APIError) as refused:
        staff_api.start_export()
    assert refused.value.status == 503 and refused.value.detail == export_jobs.QUEUE_DOWN
    assert ExportJob.objects.get().status == "failed"
