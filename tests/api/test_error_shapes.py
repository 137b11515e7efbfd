"""Every error under /api/ is JSON with a 4xx status, whatever the body's encoding, the method or the path."""
from __future__ import annotations

import pytest

from generation.models import Prompt
from prefloop_client import APIError

from .conftest import http

pytestmark = pytest.mark.django_db(transaction=True)

BOUNDARY = "----prefloop-test"
MULTIPART = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"rows\"\r\n\r\n"
             f"[{{\"prompt\": \"x\"}}]\r\n--{BOUNDARY}--\r\n")


@pytest.mark.parametrize("path,who", [("/prompts", "staff"), ("/label/submit", "annotator"), ("/label/skip", "annotator")])
def test_a_form_posted_to_a_json_operation_is_a_400_not_a_500(live_server, staff, annotator, token_for, path, who):
    """The attack: `curl -F rows=...` (multipart) to any operation with a JSON body; the size-limit middleware read
    the form, which consumed the body the API's parser then read: a 500 for any signed-in user."""
    user = staff if who == "staff" else annotator
    got = http("POST", f"{live_server.url}/api/v1{path}", MULTIPART, headers={
        "Authorization": f"Bearer {token_for(user)}", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert got.status == 400 and "JSON" in got.body["detail"]
    assert not Prompt.objects.exists()


def test_a_method_no_operation_takes_is_a_json_405_naming_the_allowed_ones(live_server, staff, token_for):
    auth = {"Authorization": f"Bearer {token_for(staff)}"}
    for method in ("PUT", "DELETE", "PATCH"):
        got = http(method, f"{live_server.url}/api/v1/leaderboard", headers=auth)
        assert got.status == 405 and got.headers.get("Allow") == "GET"
        assert got.body == {"detail": f"{method} is not allowed on /api/v1/leaderboard (allowed: GET)"}


def test_a_path_no_operation_serves_is_a_json_404(live_server, staff, token_for):
    for headers in ({"Authorization": f"Bearer {token_for(staff)}"}, {}):
        got = http("GET", f"{live_server.url}/api/v1/no-such-thing", headers=headers)
        assert got.status == 404 and "no API operation at /api/v1/no-such-thing" in got.body["detail"]


def test_pages_keep_their_html_errors(live_server, staff, client):
    """Only the API's answers change: a page's 404 stays a page."""
    client.force_login(staff)
    got = client.get("/no-such-page/")
    assert got.status_code == 404 and "json" not in got["Content-Type"]


def test_a_mistyped_body_field_is_refused_by_name_not_dropped(staff_api):
    """`{"rows": [...], "splt": "eval"}` stored eval prompts in the train split, and a training round started with
    `param` instead of `params` ran a full default round: the misspelled field was dropped without a word."""
    with pytest.raises(APIError) as refused:
        staff_api.post("/prompts", {"rows": [{"prompt": "Typo test"}], "splt": "eval"})
    assert refused.value.status == 400 and refused.value.errors[0]["field"] == "splt"
    assert "not a field of this operation" in refused.value.detail
    assert not Prompt.objects.exists()
    with pytest.raises(APIError) as training:
        staff_api.post("/jobs/training", {"param": {"epochs": 1}})
    assert training.value.status == 400 and training.value.errors[0]["field"] == "param"


def test_a_missing_row_is_named_with_its_id(staff_api):
    """Django's own 404 said "No TrainingRun matches the given query." and a lease of a pair that does not exist
    answered 409, though the docs give 404 to anything that does not exist."""
    for path, expected in (("/jobs/training/999", "no training job with id 999"),
                           ("/versions/999", "no model version with id 999"),
                           ("/training/999/metrics", "no training run with id 999")):
        with pytest.raises(APIError) as missing:
            staff_api.get(path)
        assert missing.value.status == 404 and missing.value.detail == expected, path
    with pytest.raises(APIError) as lease:
        staff_api.lease(999999)
    assert lease.value.status == 404 and lease.value.detail == "no pair with id 999999"


def test_an_address_the_api_gives_can_be_followed_by_the_client(staff_api):
    from generation.models import ModelVersion
    from training.models import TrainingRun

    base = ModelVersion.objects.create(name="base", path="/x", is_current=True)
    run = TrainingRun.objects.create(input_version=base, reference_version=base)
    job = staff_api.job("training", run.pk)
    assert staff_api.get(job["details"]["metrics_url"])["run"] == run.pk  # was /api/v1/api/v1/... : 404


def test_a_body_refused_as_a_whole_names_the_fields_it_is_about(staff, annotator):
    """Two fields that exclude each other (or neither of two given) were reported under the field `body`: a program
    reading errors[].field could not tell which to change (docs/api.md: each field named as it was sent). Found by an
    outside review."""
    from django.test import Client

    from api.tokens import create_token

    staff_api = Client(HTTP_AUTHORIZATION=f"Bearer {create_token(staff, 'shapes')[1]}")
    answer = staff_api.post("/api/v1/jobs/compare", {"version_a": 1, "version_b": 2, "text": "hi", "limit": 3},
                            content_type="application/json")
    assert answer.status_code == 400
    assert [e["field"] for e in answer.json()["errors"]] == ["text", "limit"], answer.json()
    assert "text and limit are given" in answer.json()["errors"][0]["message"]
    assert "text: text and limit are given" in answer.json()["detail"]
    api = Client(HTTP_AUTHORIZATION=f"Bearer {create_token(annotator, 'shapes')[1]}")
    for body, fields in (({"lease": 1, "pair": 1, "side": "left"}, ["lease", "pair"]), ({"side": "left"}, ["lease"])):
        answer = api.post("/api/v1/label/submit", body, content_type="application/json")
        assert answer.status_code == 400 and [e["field"] for e in answer.json()["errors"]] == fields, answer.json()


def test_a_refused_setting_is_named_in_errors(staff):
    """A typo in sampling or training settings (`temprature`, `epoch`) or a value out of range was refused with a
    sentence and an empty errors[]: a program could not tell which field to change (found by an outside review)."""
    from django.test import Client

    from api.tokens import create_token
    from generation.models import ModelVersion

    ModelVersion.objects.create(name="base", path="/x", is_current=True)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {create_token(staff, 'shapes')[1]}")
    for path, body, field in (
            ("/api/v1/jobs/generation", {"n_prompts": 1, "sampling": {"temprature": 0.5}}, "sampling.temprature"),
            ("/api/v1/jobs/generation", {"n_prompts": 1, "sampling": {"top_p": "high"}}, "sampling.top_p"),
            ("/api/v1/jobs/compare", {"version_a": 1, "version_b": 1, "sampling": {"n": 0}}, "sampling.n"),
            ("/api/v1/jobs/training", {"params": {"epoch": 1}}, "params.epoch"),
            ("/api/v1/jobs/training", {"params": {"beta": -1}}, "params.beta")):
        answer = api.post(path, body, content_type="application/json")
        assert answer.status_code == 400, (path, body, answer.content)
        errors = answer.json()["errors"]
        assert [e["field"] for e in errors] == [field], (body, answer.json())
        assert field.split(".")[1] in errors[0]["message"]
