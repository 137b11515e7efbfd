"""The staff upload page: a worker imports the file as a job (progress, Cancel, the commands' checks and messages),
and the form refuses files over the size limit or of the wrong type before anything is queued."""
import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotate.forms import ImportForm
from annotate.models import ImportJob
from generation.models import Prompt
from tests.annotate.importing import upload

pytestmark = pytest.mark.django_db


def test_good_upload_imports_and_bad_row_shows_file_line_field(client, staff):
    client.force_login(staff)
    job, page = upload(client, "good.jsonl", b'{"prompt": "one"}\n{"prompt": "two"}\n')
    assert job.status == "succeeded" and (job.done, job.total, job.added) == (2, 2, 2)
    assert page.status_code == 200 and "Imported: 2 added, 0 already present." in page.content.decode()
    assert not Path(job.path).exists(), "the upload is removed once its import ended"
    job, page = upload(client, "bad.jsonl", b'{"prompt": "three"}\n{"prompt": ""}\n')
    html = page.content.decode()
    assert job.status == "failed" and "bad.jsonl cannot be imported (1 problem); nothing was stored" in html
    assert "bad.jsonl: line 2: field &#x27;prompt&#x27;: empty" in html
    assert Prompt.objects.count() == 2 and not Path(job.path).exists()
    # both are listed on the import page, newest first, each linking to its page
    listing = client.get(reverse("annotate:import")).content.decode()
    assert listing.index("bad.jsonl") < listing.index("good.jsonl")
    assert reverse("annotate:import_job", args=[job.pk]) in listing


def test_preferences_upload(client, staff):
    client.force_login(staff)
    row = {"prompt": "q", "chosen": "yes", "rejected": "no"}
    job, page = upload(client, "p.jsonl", json.dumps(row).encode(), kind="preferences")
    assert job.status == "succeeded" and "1 added" in page.content.decode()


def test_the_upload_is_kept_private_under_a_name_of_our_own_until_the_worker_runs(client, staff, settings):
    client.force_login(staff)
    name = "../../etc/passwd.jsonl"
    response = client.post(reverse("annotate:import"), {
        "kind": "prompts", "format": "auto", "split": "train", "tag": "",
        "file": SimpleUploadedFile(name, b'{"prompt": "one"}\n')})
    assert response.status_code == 302
    job = ImportJob.objects.get()
    kept = Path(job.path)
    assert kept.parent == Path(settings.IMPORTS_DIR) and kept.suffix == ".jsonl" and ".." not in kept.name
    assert kept.stat().st_mode & 0o077 == 0 and kept.read_bytes() == b'{"prompt": "one"}\n'
    page = client.get(response.url).content.decode()
    assert "queued" in page and 'hx-trigger="every 1s"' in page, "the page polls while the job waits"


def test_a_tag_the_importer_would_refuse_is_refused_by_the_form_before_a_job_is_queued(client, staff):
    client.force_login(staff)
    job, response = upload(client, "good.jsonl", b'{"prompt": "one"}\n', tag="a\u200bb")  # a zero-width space
    assert job is None and "expected up to 100 printable characters" in response.content.decode()
    assert not ImportJob.objects.exists() and not Prompt.objects.exists()


def test_upload_over_the_size_limit_is_refused(client, staff, settings):
    settings.PREFLOOP_MAX_UPLOAD_BYTES = 10
    client.force_login(staff)
    job, response = upload(client, "big.jsonl", b'{"prompt": "this is too long"}\n')
    assert job is None and response.status_code == 413  # the request ceiling (prefloop.request_limits) answers first
    assert not Prompt.objects.exists() and not ImportJob.objects.exists()
    # The form checks the file itself too, for requests that reach it (e.g. without a Content-Length).
    form = ImportForm({"kind": "prompts", "format": "auto", "split": "train"},
                      {"file": SimpleUploadedFile("big.jsonl", b'{"prompt": "this is too long"}\n')})
    assert not form.is_valid() and "over the limit" in form.errors["file"][0]


@pytest.mark.parametrize("name,content,message", [
    ("x.exe", b"MZ", "expected a .jsonl, .csv or .parquet file"),
    ("x.parquet", b'{"prompt": "a"}', "not a Parquet file"),
    ("x.jsonl", b"\x00\x01binary", "not a text file"),
    ("x.jsonl", b"prompt,a\n", "not JSON Lines"),
])
def test_upload_type_is_checked(client, staff, name, content, message):
    client.force_login(staff)
    job, response = upload(client, name, content)
    assert job is None and response.status_code == 400 and message in response.content.decode()
    assert not ImportJob.objects.exists()


def test_import_jobs_are_for_staff(client, staff, annotator):
    client.force_login(staff)
    job, _ = upload(client, "good.jsonl", b'{"prompt": "one"}\n')
    client.force_login(annotator)
    assert client.get(reverse("annotate:import_job", args=[job.pk])).status_code == 403
    assert client.post(reverse("annotate:import_cancel", args=[job.pk])).status_code == 403
    client.force_login(staff)
    assert client.get(reverse("annotate:import_job", args=[job.pk + 1])).status_code == 404
    assert client.get(reverse("annotate:import_cancel", args=[job.pk])).status_code == 405


def test_a_file_named_only_by_its_suffix_imports(client, staff):
    """The form reads ".jsonl" as JSON Lines; the kept copy must keep that suffix for the worker to read it so."""
    client.force_login(staff)
    job, page = upload(client, ".jsonl", b'{"prompt": "one"}\n')
    assert job.status == "succeeded" and job.added == 1, job.error


def test_a_json_lines_file_with_a_byte_order_mark_imports_from_the_page(client, staff):
    """Notepad saves UTF-8 with a byte-order mark: the importer and the command line read past it, and the upload
    form refused the file as "not JSON Lines"."""
    client.force_login(staff)
    job, page = upload(client, "bom.jsonl", b'\xef\xbb\xbf{"prompt": "one"}\n')
    assert job is not None and job.status == "succeeded" and job.added == 1, page.content.decode()[:500]
