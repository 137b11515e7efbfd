"""A caller who is not staff is refused a staff operation (403) whatever the body: the staff check ran inside the
operation, after ninja had read the body, so an annotator got 400 "rows: Field required" for `{}` and 403 for a
good body, learning the operation's schema instead of being refused (docs/api.md: a non-staff caller gets 403).
Found by an outside review. Which operations are staff's is read from how the API answers an annotator sending
the body each takes, so a new staff operation is covered the day it is added."""
from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from api.tokens import create_token

from .test_query_params import BODIES, MULTIPART, OPERATIONS, SAMPLE_VALUES

pytestmark = pytest.mark.django_db


def _url(path: str, operation: dict) -> str:
    url = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_VALUES.get(m.group(1), "1"), path)
    query = {p["name"]: SAMPLE_VALUES[p["name"]] for p in operation.get("parameters", [])
             if p["in"] == "query" and p.get("required")}
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def _send(client, method, path, url, body):
    if (method, path) in MULTIPART:
        if body is None:
            upload = SimpleUploadedFile("prompts.jsonl", b'{"prompt": "q"}\n', content_type="application/json")
            return client.post(url, {"file": upload, "kind": "prompts"})
        return client.post(url, {"kind": "everything"})  # no file, a kind that is none
    if method == "get":
        return client.get(url)
    return getattr(client, method)(url, data=BODIES.get((method, path), {}) if body is None else body,
                                   content_type="application/json")


def test_every_staff_operation_refuses_a_non_staff_caller_before_reading_the_body(annotator):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {create_token(annotator, 'staff check')[1]}")
    staff_operations = []
    for method, path, operation in OPERATIONS:
        url = _url(path, operation)
        answer = _send(client, method, path, url, None)
        if answer.status_code == 403:
            staff_operations.append((method, path, url, answer.json()["detail"]))
    assert {("post", "/api/v1/prompts"), ("post", "/api/v1/label/lease")} <= {(m, p) for m, p, _, _ in staff_operations}
    assert len(staff_operations) >= 15  # pushes, jobs, rounds, versions, metrics
    for method, path, url, refusal in staff_operations:
        if method == "get":
            continue
        for body in ({}, [], {"not_a_field": 1}, "text"):
            answer = _send(client, method, path, url, body)
            assert answer.status_code == 403, (method, path, body, answer.status_code, answer.content[:200])
            assert answer.json()["detail"] == refusal


def test_a_staff_member_without_the_permission_is_refused_before_the_body_too(django_user_model):
    """A staff account the admin lets only look was refused a write after ninja had read its body: 400 naming
    `rows` for `{}`, 403 for a good body (found by a review of the fix above)."""
    from django.contrib.auth.models import Permission

    looker = django_user_model.objects.create_user("looker", is_staff=True)
    looker.user_permissions.add(Permission.objects.get(codename="view_prompt"))
    client = Client(HTTP_AUTHORIZATION=f"Bearer {create_token(looker, 'staff check')[1]}")
    for body in ({"rows": [{"prompt": "q"}]}, {}, [], {"not_a_field": 1}):
        answer = client.post("/api/v1/prompts", data=body, content_type="application/json")
        assert answer.status_code == 403 and "generation.add_prompt" in answer.json()["detail"], body
    assert client.get("/api/v1/preferences").status_code == 200  # it may still look
    # a cancel, whose permission is the path's kind of job's
    for body in ({}, [], {"not_a_field": 1}):
        answer = client.post("/api/v1/jobs/training/1/cancel", data=body, content_type="application/json")
        assert answer.status_code == 403 and "training.change_trainingrun" in answer.json()["detail"], body


def test_a_staff_operation_still_checks_the_body_for_staff(staff):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {create_token(staff, 'staff check')[1]}")
    answer = client.post("/api/v1/prompts", data={}, content_type="application/json")
    assert answer.status_code == 400 and answer.json()["errors"][0]["field"] == "rows"


def test_every_staff_write_refuses_a_staff_member_who_may_only_look(annotator, django_user_model):
    """Each write names the admin permission it needs in its auth, the one check it has (api.auth.staff): a write
    whose auth were STAFF alone would let a staff account the admin lets only look change things."""
    from django.contrib.auth.models import Permission

    looker = django_user_model.objects.create_user("looker", is_staff=True)
    looker.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    annotator_client = Client(HTTP_AUTHORIZATION=f"Bearer {create_token(annotator, 'staff check')[1]}")
    looker_client = Client(HTTP_AUTHORIZATION=f"Bearer {create_token(looker, 'staff check')[1]}")
    writes = []
    for method, path, operation in OPERATIONS:
        url = _url(path, operation)
        if method != "get" and not path.startswith("/api/v1/label/") and (
                _send(annotator_client, method, path, url, None).status_code == 403):
            writes.append((method, path, url))
    assert len(writes) >= 10, writes
    for method, path, url in writes:
        answer = _send(looker_client, method, path, url, None)
        assert answer.status_code == 403, (method, path, answer.status_code, answer.content[:200])
        assert "permission" in answer.json()["detail"], (method, path, answer.json())
