"""A whole file through the API, over real HTTP: uploaded as an import job (multipart), watched, refused, cancelled."""
from __future__ import annotations

import json

import pytest

from annotate.models import ImportJob, Label, Pair
from generation.models import Prompt
from prefloop_client import APIError

pytestmark = pytest.mark.django_db(transaction=True)


def _file(tmp_path, rows, name="prefs.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_pipeline_uploads_a_file_as_an_import_job_and_waits_for_it(staff_api, tmp_path, eager_tasks):
    path = _file(tmp_path, [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(3)], "naïve \"x\".jsonl")
    job = staff_api.import_file(path, "preferences", round=4)
    assert job["kind"] == "import" and job["details"]["import_kind"] == "preferences"
    done = staff_api.wait(job, timeout=60, poll=0.2)
    assert done["status"] == "succeeded" and done["progress"] == 1.0
    assert done["details"]["summary"] == "3 added, 0 already present" and done["details"]["file_name"] == "naïve _x_.jsonl"
    assert Pair.objects.filter(round__number=4).count() == 3 and Label.objects.count() == 3
    assert staff_api.jobs("import")[0]["id"] == job["id"]


def test_a_bad_row_fails_the_job_with_its_line_and_stores_nothing(staff_api, tmp_path, eager_tasks):
    path = _file(tmp_path, [{"prompt": "fine"}, {"prompt": ""}], "p.jsonl")
    done = staff_api.wait(staff_api.import_file(path, "prompts"), timeout=60, poll=0.2, check=False)
    assert done["status"] == "failed" and "nothing was stored" in done["error"]
    assert done["details"]["problems"] == ["p.jsonl: line 2: field 'prompt': empty"] and not Prompt.objects.exists()


def test_a_file_of_the_wrong_type_is_refused_before_it_is_queued(staff_api, annotator_api, tmp_path):
    path = tmp_path / "x.exe"
    path.write_bytes(b"MZ")
    with pytest.raises(APIError) as refused:
        staff_api.import_file(path, "prompts")
    assert refused.value.status == 400 and "expected a .jsonl, .csv or .parquet file" in refused.value.detail
    with pytest.raises(APIError) as refused:
        staff_api.import_file(_file(tmp_path, [{"prompt": "q"}]), "everything")
    assert refused.value.status == 400 and refused.value.errors[0]["field"] == "kind"  # was "form.kind"
    assert "kind: " in refused.value.detail and "form.kind" not in refused.value.detail
    with pytest.raises(APIError) as refused:
        annotator_api.import_file(_file(tmp_path, [{"prompt": "q"}]), "prompts")
    assert refused.value.status == 403
    assert not ImportJob.objects.exists()


def test_a_field_the_upload_does_not_take_is_refused_by_name_not_dropped(staff_api, tmp_path):
    """A typo ("rund" for "round") was dropped without a word: the job ran, and its pairs went into no round."""
    from prefloop_client.client import _multipart

    data = _file(tmp_path, [{"prompt": "q", "response_a": "a", "response_b": "b"}]).read_bytes()
    for fields in ({"kind": "pairs", "rund": "3"}, {"kind": "pairs", "tags": "x"}):
        with pytest.raises(APIError) as refused:
            staff_api.request("POST", "/jobs/import", content=_multipart(fields, "file", "p.jsonl", data))
        stray = next(name for name in fields if name != "kind")
        assert refused.value.status == 400 and refused.value.detail.startswith(f"{stray}: not a field of this upload")
    assert not ImportJob.objects.exists()


def test_a_field_another_kind_reads_is_refused_by_name_not_dropped(staff_api, tmp_path):
    """A pairs file sent with split=eval and a tag was stored as train and untagged (the loop picks prompts by tag),
    and the job's record listed both as its options; a round on a prompts file went nowhere the same way."""
    pairs = _file(tmp_path, [{"prompt": "q", "response_a": "a", "response_b": "b"}], "pairs.jsonl")
    prompts = _file(tmp_path, [{"prompt": "q"}], "prompts.jsonl")
    for path, kind, given, field in ((pairs, "pairs", {"split": "eval"}, "split"), (pairs, "pairs", {"tag": "x"}, "tag"),
                                     (prompts, "prompts", {"round": 2}, "round"),
                                     (prompts, "prompts", {"format": "ultrafeedback"}, "format")):
        with pytest.raises(APIError) as refused:
            staff_api.import_file(path, kind, **given)
        assert refused.value.status == 400 and refused.value.errors[0]["field"] == field
        assert f"{field} is read for " in refused.value.detail and f"not for {kind}" in refused.value.detail
    assert not ImportJob.objects.exists()
    # each kind's own fields, and another kind's left at their defaults, are taken
    assert staff_api.import_file(prompts, "prompts", split="eval", tag="x")["status"] == "queued"
    assert staff_api.import_file(pairs, "pairs", round=2)["status"] == "queued"


def test_a_queued_import_is_cancelled_and_a_second_cancel_is_refused(staff_api, tmp_path):
    job = staff_api.import_file(_file(tmp_path, [{"prompt": "q"}]), "prompts")
    assert staff_api.cancel(job)["status"] == "cancelled"
    with pytest.raises(APIError) as refused:
        staff_api.cancel(job)
    assert refused.value.status == 409


def test_a_signed_in_browser_uploads_with_its_csrf_token_as_a_form_field(staff, tmp_path):
    """Django's own forms send the CSRF token as the field csrfmiddlewaretoken: refusing unknown fields refused it."""
    from django.test import Client as PageClient

    page = PageClient(enforce_csrf_checks=True)
    page.force_login(staff)
    page.get("/account/tokens/")  # sets the CSRF cookie
    with _file(tmp_path, [{"prompt": "q"}], "p.jsonl").open("rb") as upload:
        answer = page.post("/api/v1/jobs/import", {"kind": "prompts", "file": upload,
                                                   "csrfmiddlewaretoken": page.cookies["csrftoken"].value})
    assert answer.status_code == 201, answer.content
    assert ImportJob.objects.count() == 1
