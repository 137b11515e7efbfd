"""Near-duplicate pairs held back from people are said wherever an import answers: a push's reply, an upload's job
(its page and the API's job details). Only the command said it; the others stored the pairs held back without a word."""
from __future__ import annotations

import json

import pytest

from .importing import upload

pytestmark = pytest.mark.django_db(transaction=True)
ROWS = [{"prompt": "What is the capital of France?", "response_a": "Paris is the capital of France.",
         "response_b": "paris is the capital of france"},
        {"prompt": "What is the capital of Spain?", "response_a": "Madrid.", "response_b": "It is Barcelona."}]


def test_a_push_says_which_rows_were_held_back(client, staff):
    client.force_login(staff)
    answer = client.post("/api/v1/pairs", {"rows": ROWS}, content_type="application/json")
    assert answer.status_code == 201 and answer.json()["held_back"] == [1]


def test_an_upload_job_says_which_lines_were_held_back(client, staff):
    client.force_login(staff)
    job, page = upload(client, "pairs.jsonl", "".join(json.dumps(r) + "\n" for r in ROWS).encode(), kind="pairs")
    assert job.status == "succeeded" and job.held_back == [1]
    assert "1 of those added held back from people" in job.summary
    assert "held back from people" in page.content.decode()
    (api,) = client.get("/api/v1/jobs?kind=import").json()
    assert api["details"]["held_back"] == [1]
