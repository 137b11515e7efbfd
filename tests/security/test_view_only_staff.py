"""Staff an administrator let only look (view permissions in the admin) did through the pages and the API what the
admin refused them: switched the current version, cancelled a run, made a labelling round, started jobs. The attack,
performed: each write is refused (403) and changes nothing; a staff member given the permission still does it, and
one given none at all (who once could do everything) does nothing (tests/security/test_staff_status_alone.py)."""
from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from annotate.models import LabellingRound
from api.tokens import create_token
from generation.models import ModelVersion
from jobs.models import Status
from tests.annotate.factories import make_user
from training.models import TrainingRun

pytestmark = pytest.mark.django_db
LOOKS = ["view_modelversion", "view_labellinground", "view_trainingrun", "view_looprun", "view_label"]


def _staff(name: str, *codenames: str):
    person = make_user(name, is_staff=True)
    person.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return person


@pytest.fixture
def rows():
    base = ModelVersion.objects.create(name="base", path="/nowhere/base", is_current=True)
    other = ModelVersion.objects.create(name="other", path="/nowhere/other")
    run = TrainingRun.objects.create(input_version=ModelVersion.objects.create(name="t", path="/x"),
                                     status=Status.QUEUED)
    return base, other, run


def _page_writes(client, other, run):
    return {
        "rollback": client.post(f"/training/versions/{other.pk}/rollback/", {"reason": "looked"}).status_code,
        "cancel": client.post(f"/training/runs/{run.pk}/cancel/").status_code,
        "round": client.post("/annotate/rounds/", {"number": 77, "guidelines": "x", "labels_per_pair": 1,
                                                   "gold_rate": 0, "queue_order": "random", "route_threshold": 0.8,
                                                   "audit_share": 0.1}).status_code,
    }


def test_staff_who_may_only_look_change_nothing_through_the_pages(client, rows):
    base, other, run = rows
    client.force_login(_staff("looker", *LOOKS))
    assert set(_page_writes(client, other, run).values()) == {403}
    assert ModelVersion.objects.current() == base
    assert TrainingRun.objects.get(pk=run.pk).status == Status.QUEUED
    assert not LabellingRound.objects.filter(number=77).exists()
    # looking is theirs: the pages that show things answer
    assert client.get("/training/").status_code == 200 and client.get("/annotate/rounds/").status_code == 200
    refused = client.post(f"/training/versions/{other.pk}/rollback/", {"reason": "looked"})
    assert "generation.change_modelversion" in refused.content.decode()


def test_staff_who_may_only_look_change_nothing_through_the_api(rows):
    base, other, run = rows
    api = Client(HTTP_AUTHORIZATION=f"Bearer {create_token(_staff('looker', *LOOKS), 'look')[1]}")

    def post(path, body=None):
        return api.post("/api/v1" + path, data=json.dumps(body or {}), content_type="application/json")

    answers = [post(f"/versions/{other.pk}/promote", {"reason": "looked"}), post(f"/jobs/training/{run.pk}/cancel"),
               post("/labelling-rounds", {"number": 78}), post("/preferences", {"rows": []}),
               post("/jobs/training", {})]
    assert [a.status_code for a in answers] == [403] * 5, [a.content for a in answers]
    assert "needs the permission 'generation.change_modelversion'" in answers[0].json()["detail"]
    assert ModelVersion.objects.current() == base and TrainingRun.objects.get(pk=run.pk).status == Status.QUEUED
    assert not LabellingRound.objects.exists()
    assert api.get("/api/v1/versions").status_code == 200  # looking is theirs


def test_staff_given_the_permission_act_and_staff_given_none_do_not(client, rows):
    base, other, run = rows
    client.force_login(_staff("lead", *LOOKS, "change_modelversion", "change_trainingrun", "add_labellinground"))
    assert set(_page_writes(client, other, run).values()) == {302}
    assert ModelVersion.objects.current() == other and TrainingRun.objects.get(pk=run.pk).status == Status.CANCELLED
    client.force_login(make_user("plain", is_staff=True))  # no permission set: staff status alone grants nothing
    refused = client.post(f"/training/versions/{base.pk}/rollback/", {"reason": "back"})
    assert refused.status_code == 403 and "generation.change_modelversion" in refused.content.decode()
    assert ModelVersion.objects.current() == other


def test_pages_show_staff_who_may_only_look_no_control_they_would_be_refused(client, rows):
    """The pages showed staff who may only look every start form, Cancel button and promote or roll-back button,
    each answering 403 when pressed (found by an outside review): now each is shown only to those who may use it,
    with a line saying what the account lacks where a start form was."""
    from compare.models import CompareJob
    from generation.models import GenerationJob
    from loop.models import LoopRun

    base, other, run = rows
    TrainingRun.objects.filter(pk=run.pk).update(status=Status.RUNNING)
    other_run = TrainingRun.objects.create(input_version=base, reference_version=base, output_version=other,
                                           status=Status.SUCCEEDED, decision=TrainingRun.Decision.CANDIDATE)
    ModelVersion.objects.filter(pk=other.pk).update(parent=base)
    loop = LoopRun.objects.create(rounds=1, pairs=1, judge="judges.rules:length_target", status=Status.RUNNING)
    compare = CompareJob.objects.create(version_a=base, version_b=other, prompt_ids=[1], total=2, status=Status.RUNNING)
    generation = GenerationJob.objects.create(version=base, status=Status.RUNNING)
    LabellingRound.objects.create(number=5)
    pages = {
        "/compare/": ('class="compare-form"', "compare.add_comparejob"),
        "/loop/": ('id="start-loop"', "loop.add_looprun"),
        "/generation/": ('<form method="post" class="grid-form">', "generation.add_generationjob"),
        "/training/": ('<form method="post" class="grid-form">', "training.add_trainingrun"),
        "/annotate/import/": ('enctype="multipart/form-data"', "annotate.add_importjob"),
        "/annotate/rounds/": ('id="new-round"', "annotate.add_labellinground"),
        "/annotate/rounds/5/": ('id="round-settings"', "annotate.change_labellinground"),
    }
    cancels = [f"/training/runs/{run.pk}/", f"/loop/runs/{loop.pk}/", f"/compare/sets/{compare.pk}/", "/generation/"]
    for who, shown in ((_staff("looker", *LOOKS, "view_comparejob", "view_generationjob", "view_importjob"), False),
                       (make_user("plain", is_staff=True), False),
                       (_staff("lead", *Permission.objects.values_list("codename", flat=True)), True)):
        client.force_login(who)
        for url, (control, perm) in pages.items():
            page = client.get(url).content.decode()
            assert (control in page) is shown, (who.username, url)
            assert (f"needs the permission <code>{perm}</code>" in page) is not shown, (who.username, url)
        for url in cancels:
            page = client.get(url).content.decode()
            assert ('class="cancel"' in page) is shown, (who.username, url)
        versions = client.get("/training/").content.decode()
        assert ('class="promote"' in versions and 'class="check-gate"' in versions) is shown, who.username
    assert other_run.decision == TrainingRun.Decision.CANDIDATE and generation.status == Status.RUNNING
