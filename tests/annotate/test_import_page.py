"""The staff upload page: the same checks and messages as the commands, plus size and type limits."""
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotate.forms import ImportForm
from generation.models import Prompt

pytestmark = pytest.mark.django_db


def _upload(client, name: str, content: bytes, **fields):
    data = {"kind": "prompts", "format": "auto", "split": "train", "tag": "", **fields,
            "file": SimpleUploadedFile(name, content)}
    return client.post(reverse("annotate:import"), data)


def test_good_upload_imports_and_bad_row_shows_file_line_field(client, staff):
    client.force_login(staff)
    good = b'{"prompt": "one"}\n{"prompt": "two"}\n'
    response = _upload(client, "good.jsonl", good)
    assert response.status_code == 200 and "2 added" in response.content.decode()
    bad = b'{"prompt": "three"}\n{"prompt": ""}\n'
    response = _upload(client, "bad.jsonl", bad)
    assert response.status_code == 400
    assert "bad.jsonl: line 2: field &#x27;prompt&#x27;: empty" in response.content.decode()
    assert Prompt.objects.count() == 2


def test_preferences_upload(client, staff):
    client.force_login(staff)
    row = {"prompt": "q", "chosen": "yes", "rejected": "no"}
    response = _upload(client, "p.jsonl", json.dumps(row).encode(), kind="preferences")
    assert response.status_code == 200 and "1 added" in response.content.decode()


def test_upload_over_the_size_limit_is_refused(client, staff, settings):
    settings.PREFLOOP_MAX_UPLOAD_BYTES = 10
    client.force_login(staff)
    response = _upload(client, "big.jsonl", b'{"prompt": "this is too long"}\n')
    assert response.status_code == 413  # the request ceiling (prefloop.request_limits) answers first
    assert not Prompt.objects.exists()
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
    response = _upload(client, name, content)
    assert response.status_code == 400 and message in response.content.decode()
