"""Staff status alone grants nothing, as in Django's admin: a colleague an administrator marked staff so they could
look at the pages switched the current version, started training, cancelled runs, imported and exported, from the
pages and the API, because a staff member given no permission at all could do everything. The attack, performed:
each write is refused (403) naming the permission it needs, and nothing changes; the pages show such a colleague
the line naming what they lack where a control would be, never a 500."""
from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from annotate.models import ExportJob, ImportJob, Label, Pair
from annotate.services import label_pair
from api.tokens import create_token
from generation.models import ModelVersion, VersionChange
from jobs.models import Status
from tests.annotate.factories import make_pair, make_round, make_user
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows():
    base = ModelVersion.objects.create(name="base", path="/nowhere/base", is_current=True)
    older = ModelVersion.objects.create(name="older", path="/nowhere/older")
    run = TrainingRun.objects.create(input_version=base, status=Status.QUEUED)
    pair = make_pair()
    label_pair(pair.pk, make_user("anna"), "left")
    return base, older, run


@pytest.fixture
def newcomer():
    """Marked staff in the admin, nothing else ticked."""
    return make_user("newcomer", is_staff=True)


def _unchanged(base, run) -> None:
    assert ModelVersion.objects.current() == base and not VersionChange.objects.exists()
    assert list(TrainingRun.objects.values_list("pk", "status")) == [(run.pk, Status.QUEUED)]
    assert not ExportJob.objects.exists() and not ImportJob.objects.exists()
    assert Pair.objects.count() == 1 and Label.objects.count() == 1


def test_staff_status_alone_changes_nothing_through_the_pages(client, rows, newcomer):
    base, older, run = rows
    client.force_login(newcomer)
    upload = SimpleUploadedFile("p.jsonl", b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    refused = {
        "generation.change_modelversion": client.post(f"/training/versions/{older.pk}/rollback/", {"reason": "x"}),
        "training.change_trainingrun": client.post(f"/training/runs/{run.pk}/cancel/"),
        "annotate.add_exportjob": client.post("/annotate/export/", {"format": "jsonl"}),
        "annotate.add_importjob": client.post("/annotate/import/", {"kind": "preferences", "file": upload,
                                                                    "format": "auto", "split": "train"}),
    }
    for perm, answer in refused.items():
        assert answer.status_code == 403 and f"needs the permission &#x27;{perm}&#x27;" in answer.content.decode(), perm
    _unchanged(base, run)


def test_staff_status_alone_changes_nothing_through_the_api(rows, newcomer):
    base, older, run = rows
    api = Client(HTTP_AUTHORIZATION=f"Bearer {create_token(newcomer, 'looking')[1]}")

    def post(path, body):
        return api.post("/api/v1" + path, data=json.dumps(body), content_type="application/json")

    refused = {
        "generation.change_modelversion": post(f"/versions/{older.pk}/promote", {"reason": "x"}),
        "training.add_trainingrun": post("/jobs/training", {"input_version": base.pk}),
        "training.change_trainingrun": post(f"/jobs/training/{run.pk}/cancel", {}),
        "annotate.add_label": post("/preferences", {"rows": [{"prompt": "q", "chosen": "a", "rejected": "b"}]}),
    }
    for perm, answer in refused.items():
        assert answer.status_code == 403 and f"needs the permission '{perm}'" in answer.json()["detail"], perm
    _unchanged(base, run)
    assert api.get("/api/v1/versions").status_code == 200  # looking is theirs


def test_the_pages_show_staff_status_alone_what_it_lacks_instead_of_the_controls(client, rows, newcomer):
    base, older, run = rows
    make_round(5)
    client.force_login(newcomer)
    for url, perm in [("/training/", "training.add_trainingrun"), ("/generation/", "generation.add_generationjob"),
                      ("/compare/", "compare.add_comparejob"), ("/loop/", "loop.add_looprun"),
                      ("/annotate/import/", "annotate.add_importjob"), ("/annotate/export/", "annotate.add_exportjob"),
                      ("/annotate/rounds/", "annotate.add_labellinground"),
                      ("/annotate/rounds/5/", "annotate.change_labellinground")]:
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert f"needs the permission <code>{perm}</code>" in answer.content.decode(), url
    versions = client.get("/training/").content.decode()
    assert 'class="rollback"' not in versions and 'class="promote"' not in versions
    assert 'class="cancel"' not in client.get(f"/training/runs/{run.pk}/").content.decode()


def test_staff_status_alone_cannot_pick_a_pair_to_label(newcomer):
    """From a review: choosing which pair to label (a gold pair among them, which decides it as a gold answer does)
    was allowed to any staff account through the API, and a label on a gold pair the newcomer picked was stored."""
    from annotate.models import Assignment

    gold = make_pair(is_gold=True, gold_choice="a")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {create_token(newcomer, 'looking')[1]}")
    answer = api.post("/api/v1/label/lease", data=json.dumps({"pair": gold.pk}), content_type="application/json")
    assert answer.status_code == 403 and "'annotate.add_label'" in answer.json()["detail"]
    assert not Assignment.objects.filter(annotator=newcomer).exists() and not Label.objects.exists()
    newcomer.user_permissions.add(Permission.objects.get(codename="add_label"))
    answer = api.post("/api/v1/label/lease", data=json.dumps({"pair": gold.pk}), content_type="application/json")
    assert answer.status_code == 200 and answer.json()["pair"] == gold.pk  # with the permission, as before
