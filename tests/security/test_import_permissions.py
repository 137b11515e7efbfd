"""From an outside probe: an import job wrote what its kind's push refuses (labels, with only the permission to
import), and a push or an import made labelling rounds for staff who may not add one. Each attack is made here as
the probe made it, through the page, the API and the worker, and refused before anything is stored."""
from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission

from annotate import import_jobs
from annotate.models import ImportJob, Label, LabellingRound, Pair
from generation.models import Prompt
from prefloop_client import APIError, Client
from tests.annotate.factories import make_user
from tests.annotate.importing import post, queue, upload

pytestmark = pytest.mark.django_db(transaction=True)

PREFERENCE = {"prompt": "Which is better?", "chosen": "A clear answer.", "rejected": "nope", "round": 7}


def _staff(name: str, *codenames: str):
    person = make_user(name, is_staff=True)
    person.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return person


def _nothing_stored():
    assert not Label.objects.exists() and not Pair.objects.exists() and not Prompt.objects.exists()
    assert not LabellingRound.objects.filter(number__in=[7, 42]).exists()


def test_an_import_job_needs_the_permission_to_write_its_rows(client, live_server, tmp_path):
    importer = _staff("importer", "add_importjob")
    row = json.dumps(PREFERENCE).encode() + b"\n"
    client.force_login(importer)
    response = post(client, "labels.jsonl", row, kind="preferences")
    assert response.status_code == 403 and "annotate.add_label" in response.content.decode()
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(row)
    with pytest.raises(APIError) as refused:
        Client(live_server.url, _token(importer)).import_file(labels, "preferences")
    assert refused.value.status == 403 and "annotate.add_label" in refused.value.detail
    assert not ImportJob.objects.exists()
    _nothing_stored()
    # prompts, with the permission to add prompts: queued
    importer.user_permissions.add(Permission.objects.get(codename="add_prompt"))
    job, _ = upload(client, "prompts.jsonl", b'{"prompt": "hello"}\n', kind="prompts")
    assert job is not None and job.status == "succeeded" and Prompt.objects.count() == 1


def _token(user) -> str:
    from api.tokens import create_token

    return create_token(user, "probe")[1]


def test_an_import_job_makes_no_round_for_an_account_that_may_not_add_one(client):
    labeller = _staff("labeller", "add_importjob", "add_label", "add_pair")
    client.force_login(labeller)
    job, page = upload(client, "labels.jsonl", json.dumps(PREFERENCE).encode() + b"\n", kind="preferences")
    assert job.status == "failed" and job.added == 0
    assert "line 1" in job.problems[0] and "labelling round 7 does not exist" in job.problems[0]
    _nothing_stored()
    pair = b'{"prompt": "q", "response_a": "one", "response_b": "two"}\n'
    job, _ = upload(client, "pairs.jsonl", pair, kind="pairs", round="42")  # the form's own round, likewise
    assert job.status == "failed" and "labelling round 42 does not exist" in job.problems[0]
    assert not LabellingRound.objects.filter(number=42).exists()
    # an account that may add rounds imports the same file, round and all
    labeller.user_permissions.add(Permission.objects.get(codename="add_labellinground"))
    job, _ = upload(client, "labels.jsonl", json.dumps(PREFERENCE).encode() + b"\n", kind="preferences")
    assert job.status == "succeeded" and LabellingRound.objects.filter(number=7).exists() and Label.objects.count() == 1


def test_a_push_makes_no_round_for_an_account_that_may_not_add_one(live_server):
    pusher = Client(live_server.url, _token(_staff("pusher", "add_pair", "add_label")))
    pair = {"prompt": "Which is better?", "response_a": "one", "response_b": "two"}
    with pytest.raises(APIError) as refused:
        pusher.post("/pairs", {"rows": [pair], "round": 42})
    assert refused.value.status == 400 and "labelling round 42 does not exist" in refused.value.detail
    with pytest.raises(APIError) as refused:
        pusher.post("/preferences", {"rows": [PREFERENCE]})
    assert refused.value.status == 400 and "line 1" in refused.value.detail
    assert "labelling round 7 does not exist" in refused.value.detail
    _nothing_stored()
    LabellingRound.objects.create(number=42)  # a round that is there takes pushed pairs
    assert pusher.post("/pairs", {"rows": [pair], "round": 42})["created"] == 1


def test_an_import_job_whose_account_lost_the_permission_or_was_deleted_writes_nothing(client):
    """The kind's permission is read again when the job runs: taken away (or the account deleted, which left the job
    with no account, read as one that may make rounds) after the upload, the job stores nothing."""
    row = json.dumps(PREFERENCE).encode() + b"\n"
    person = _staff("leaving", "add_importjob", "add_label", "add_labellinground")
    client.force_login(person)
    revoked, _ = queue(client, "labels.jsonl", row, kind="preferences")
    deleted, _ = queue(client, "labels.jsonl", row, kind="preferences")
    person.user_permissions.remove(Permission.objects.get(codename="add_label"))
    import_jobs.run(revoked.pk)
    revoked.refresh_from_db()
    assert revoked.status == "failed" and "annotate.add_label" in revoked.problems[0]
    client.logout()
    person.delete()
    import_jobs.run(deleted.pk)
    deleted.refresh_from_db()
    assert deleted.status == "failed" and "it was deleted" in deleted.problems[0]
    _nothing_stored()
