"""The Python client against mistakes a script makes (an outside probe, 7 December 2026): `wait` overran a short
timeout by a whole poll and said it had waited the timeout; a base URL without its http:// failed only at the first
request, and `wait` tried it again until its deadline (an hour by default); `download_export` to "downloads/" wrote
a file named downloads; a job dict without its kind was a KeyError traceback."""
from __future__ import annotations

import time

import pytest

from annotate import export_jobs
from annotate.services import label_pair
from generation.models import ModelVersion
from prefloop_client import APIError, Client
from tests.annotate.factories import make_pair, make_user
from training.models import TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def finished_export(staff_api, monkeypatch):
    from annotate.models import ExportJob
    from jobs import lifecycle

    monkeypatch.setattr(lifecycle.task_named(ExportJob.task_name), "apply_async", lambda *a, **k: None)
    label_pair(make_pair(text_a="good", text_b="bad").pk, make_user(), "left")
    job = staff_api.start_export()
    export_jobs.run(job["id"])  # the worker's side, here
    return staff_api.job("export", job["id"])


def test_wait_ends_at_its_timeout_when_the_poll_is_longer(staff_api):
    base = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    run = TrainingRun.objects.create(input_version=base, reference_version=base)  # queued: no worker takes it
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=f"^training job {run.pk} still queued after 0.5 s$"):
        staff_api.wait("training", run.pk, timeout=0.5, poll=30)
    assert time.monotonic() - started < 5  # not the 30 s poll


@pytest.mark.parametrize("url", ["localhost:8000", "127.0.0.1:8000", "ftp://host", "http://", "prefloop.example.org",
                                 "http://host:abc", "http://:8000", "http://ho\nst:1", "http://ho st", "http://[::1",
                                 "http://host:99999"])
def test_a_url_no_request_can_use_is_refused_when_the_client_is_made(url):
    with pytest.raises(ValueError, match=r"expected where PrefLoop is served, as http://host:port or https://host"):
        Client(url, "pfl_token")


def test_a_url_with_spaces_around_it_is_taken(live_server, staff, token_for):
    assert Client(f"  {live_server.url}/ \n", token_for(staff)).versions() == []
    for url in ("HTTP://host:8000/prefix/", "https://[::1]:8443", "http://host"):
        assert Client(url, "pfl_token").base == url.rstrip("/") + "/api/v1"


def test_wait_refuses_a_negative_poll_or_timeout(staff_api):
    for timeout, poll in ((1, -1), (-1, 1)):
        with pytest.raises(ValueError, match=r"both are seconds, 0 or more"):
            staff_api.wait("training", 1, timeout=timeout, poll=poll)


def test_a_download_to_a_folder_path_that_is_not_there_is_refused_and_one_that_is_there_is_written_inside(
        staff_api, finished_export, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def asked(*args, **kwargs):
        raise AssertionError("the server was asked before the path was checked")

    with monkeypatch.context() as patched:
        patched.setattr(staff_api, "_open", asked)
        patched.setattr(staff_api, "job", asked)
        with pytest.raises(FileNotFoundError, match=r"^no such folder downloads/ \(a path ending in / names a folder\)"):
            staff_api.download_export(finished_export, "downloads/")
        with pytest.raises(FileNotFoundError, match=r"the folder missing does not exist"):
            staff_api.download_export(finished_export, "missing/x.jsonl")
        (tmp_path / "afile").write_text("kept")
        with pytest.raises(FileExistsError, match=r"^afile is a file, not a folder"):
            staff_api.download_export(finished_export, "afile/")
    assert not (tmp_path / "downloads").exists() and not (tmp_path / "missing").exists()
    assert (tmp_path / "afile").read_text() == "kept"
    (tmp_path / "downloads").mkdir()
    written = staff_api.download_export(finished_export, "downloads/")
    assert written.resolve().parent == tmp_path / "downloads" and written.read_text().startswith("{")


def test_a_job_dict_without_its_kind_or_id_is_a_clear_error(staff_api, tmp_path):
    for call in (lambda job: staff_api.download_export(job, tmp_path / "a.jsonl"),
                 lambda job: staff_api.wait(job, timeout=1),
                 lambda job: staff_api.cancel(job)):
        with pytest.raises(ValueError, match=r"this one has no kind \(give the kind and the id instead\)"):
            call({"id": 1})
        with pytest.raises(ValueError, match=r"this one has no kind and no id"):
            call({})


def test_getting_an_exports_file_as_json_points_to_download_export(staff_api, finished_export):
    """It said the server was not PrefLoop's API (an outside probe): the address answers the export's file."""
    with pytest.raises(APIError, match=r"answered a file, not JSON: fetch an export's file with download_export"):
        staff_api.get(finished_export["details"]["download_url"])
