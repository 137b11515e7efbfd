"""Every API operation refuses a query parameter it does not declare, by name (docs/api.md): most operations never
looked, so `GET /labelling-rounds?roud=1` answered every round and `POST /labelling-rounds?number=5 {}` made round 1
as if the number had not been given. The operations are read from the API's own schema, so a new one is covered
the day it is added."""
from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from annotate.models import LabellingRound
from api.main import api
from api.tokens import create_token

STRAY = "stray_param"
# What a path's parameters and an operation's required query parameters are filled with.
SAMPLE_VALUES = {"kind": "training"}
# A body each operation takes (the refusal must be for the query, not for a missing body); left out: {} (a GET: none).
BODIES = {
    ("post", "/api/v1/prompts"): {"rows": []},
    ("post", "/api/v1/pairs"): {"rows": []},
    ("post", "/api/v1/preferences"): {"rows": []},
    ("post", "/api/v1/jobs/generation"): {"n_prompts": 1},
    ("post", "/api/v1/jobs/training"): {},
    ("post", "/api/v1/jobs/compare"): {"version_a": 1, "version_b": 2},
    ("post", "/api/v1/jobs/loop"): {"rounds": 1, "pairs": 1, "judge": "judges.rules:length_target"},
    ("post", "/api/v1/label/lease"): {"pair": 1},
    ("post", "/api/v1/label/submit"): {"lease": 1, "side": "left"},
    ("post", "/api/v1/label/skip"): {"lease": 1},
    ("post", "/api/v1/labelling-rounds"): {},
    ("post", "/api/v1/versions"): {"name": "x", "path": "/nowhere"},
    ("patch", "/api/v1/labelling-rounds/{number}"): {},
    ("post", "/api/v1/compare/comparisons/{comparison_id}/vote"): {"side": "left"},
}
MULTIPART = {("post", "/api/v1/jobs/import")}


def _operations() -> list[tuple[str, str, dict]]:
    schema = api.get_openapi_schema(path_prefix="/api/v1")
    return [(method, path, operation) for path, methods in schema["paths"].items()
            for method, operation in methods.items()]


OPERATIONS = _operations()


def test_the_schema_lists_the_operations_the_audit_found_unchecked():
    listed = {(m, p) for m, p, _ in OPERATIONS}
    assert {("get", "/api/v1/labelling-rounds"), ("post", "/api/v1/labelling-rounds"),
            ("patch", "/api/v1/labelling-rounds/{number}"), ("get", "/api/v1/jobs/{kind}/{job_id}"),
            ("post", "/api/v1/jobs/training"), ("post", "/api/v1/label/submit")} <= listed, sorted(listed)


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=[f"{m.upper()} {p}" for m, p, _ in OPERATIONS])
def test_every_operation_refuses_a_query_parameter_it_does_not_take(staff, method, path, operation):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {create_token(staff, 'query check')[1]}")
    url = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_VALUES.get(m.group(1), "1"), path)
    query = {p["name"]: SAMPLE_VALUES[p["name"]] for p in operation.get("parameters", [])
             if p["in"] == "query" and p.get("required")}
    query[STRAY] = "1"
    url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    if (method, path) in MULTIPART:
        upload = SimpleUploadedFile("prompts.jsonl", b'{"prompt": "q"}\n', content_type="application/json")
        response = client.post(url, {"file": upload, "kind": "prompts"})
    elif method == "get":
        response = client.get(url)
    else:
        response = getattr(client, method)(url, data=BODIES.get((method, path), {}), content_type="application/json")
    assert response.status_code == 400, (response.status_code, response.content[:300])
    assert response.json()["detail"].startswith(f"{STRAY}: not a query parameter of this operation"), response.json()


@pytest.mark.django_db
def test_a_stray_query_parameter_changes_nothing_and_declared_ones_still_work(staff):
    """The audit's case: `POST /labelling-rounds?number=5 {}` made round 1; now it is refused and makes none."""
    client = Client(HTTP_AUTHORIZATION=f"Bearer {create_token(staff, 'query check')[1]}")
    refused = client.post("/api/v1/labelling-rounds?number=5", data={}, content_type="application/json")
    assert refused.status_code == 400 and refused.json()["detail"] == (
        "number: not a query parameter of this operation (it takes none)")
    assert not LabellingRound.objects.exists()
    listed = client.get("/api/v1/jobs?kind=training&limit=5")
    assert listed.status_code == 400 and listed.json()["detail"] == (
        "limit: not a query parameter of this operation (it takes active, before, kind)")
    assert client.get("/api/v1/jobs?kind=training").status_code == 200
    LabellingRound.objects.create(number=1)
    assert client.get("/api/v1/preferences?round=1&page_size=5").status_code == 200
