"""Promotion through the API follows the gate as the Train page does: a candidate a round made becomes current only
by passing the gate or by hand with a reason, and every change of the current version is recorded."""
from __future__ import annotations

import pytest

from generation.models import ModelVersion, VersionChange
from prefloop_client import APIError
from training.models import TrainingRun

from .conftest import http

pytestmark = pytest.mark.django_db(transaction=True)


def _candidate(decision=TrainingRun.Decision.CANDIDATE):
    base = ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)
    child = ModelVersion.objects.create(name="round-1", path="/nonexistent-1", parent=base, round=1)
    run = TrainingRun.objects.create(input_version=base, reference_version=base, output_version=child,
                                     status=TrainingRun.SUCCEEDED, decision=decision)
    return base, child, run


@pytest.mark.parametrize("decision", [TrainingRun.Decision.CANDIDATE, TrainingRun.Decision.KEPT])
def test_a_candidate_is_not_made_current_past_the_gate_without_a_reason(live_server, staff, token_for, decision):
    """The attack: a script promotes a round's candidate (one the gate kept out, or never checked) with a bare POST,
    as the endpoint allowed before: no gate, no reason, no record."""
    base, child, run = _candidate(decision)
    url = f"{live_server.url}/api/v1/versions/{child.pk}/promote"
    auth = {"Authorization": f"Bearer {token_for(staff)}"}
    for body in (None, {}, {"reason": "   "}):
        refused = http("POST", url, body, headers=auth)
        assert refused.status == 409, refused.body
        assert "gate" in refused.body["detail"] and "reason" in refused.body["detail"]
    assert ModelVersion.objects.get(is_current=True) == base
    assert not VersionChange.objects.exists()
    run.refresh_from_db()
    assert run.decision == decision


def test_promoting_a_candidate_by_hand_records_who_and_why(staff_api, staff):
    base, child, run = _candidate(TrainingRun.Decision.KEPT)
    out = staff_api.promote(child.pk, reason="read 30 answers myself: better")
    assert out["is_current"] is True and ModelVersion.objects.get(is_current=True) == child
    change = VersionChange.objects.get()
    assert (change.version, change.previous, change.action, change.user, change.reason) == (
        child, base, VersionChange.Action.BY_HAND, staff, "read 30 answers myself: better")
    run.refresh_from_db()
    assert (run.decision, run.decided_by, run.decision_note) == (
        TrainingRun.Decision.BY_HAND, staff, "read 30 answers myself: better")
    with pytest.raises(APIError) as again:
        staff_api.promote(child.pk, reason="twice")
    assert again.value.status == 409 and "already the current one" in again.value.detail
    assert VersionChange.objects.count() == 1


def test_a_version_outside_the_gate_is_a_recorded_rollback(staff_api, staff):
    base, child, run = _candidate(TrainingRun.Decision.KEPT)
    staff_api.promote(child.pk, reason="by hand")
    staff_api.promote(base.pk)  # base was made by no round: a rollback, reason optional
    assert ModelVersion.objects.get(is_current=True) == base
    last = VersionChange.objects.order_by("-pk").first()
    assert (last.version, last.previous, last.action, last.user) == (base, child, VersionChange.Action.ROLLBACK, staff)


def test_checking_the_gate_records_the_decision_and_promotes_only_a_pass(staff_api):
    base, child, run = _candidate()
    out = staff_api.check_gate(child.pk)  # no blind votes against base yet: kept out
    assert out["passed"] is False and "blind votes" in out["reason"] and out["current"]["name"] == "base"
    run.refresh_from_db()
    assert run.decision == TrainingRun.Decision.KEPT and run.gate["passed"] is False
    assert ModelVersion.objects.get(is_current=True) == base and not VersionChange.objects.exists()
    with pytest.raises(APIError) as no_gate:
        staff_api.check_gate(base.pk)
    assert no_gate.value.status == 409 and "not made by a training round" in no_gate.value.detail


def test_an_overlong_reason_is_refused_before_anything_changes(staff_api):
    base, child, run = _candidate()
    with pytest.raises(APIError) as refused:
        staff_api.promote(child.pk, reason="x" * 2001)
    assert refused.value.status in (400, 422) and "reason" in str(refused.value.errors) + refused.value.detail
    assert ModelVersion.objects.get(is_current=True) == base and not VersionChange.objects.exists()


def test_an_annotator_can_neither_promote_nor_check_the_gate(annotator_api):
    base, child, run = _candidate()
    for attempt in (lambda: annotator_api.promote(child.pk, reason="me"), lambda: annotator_api.check_gate(child.pk)):
        with pytest.raises(APIError) as refused:
            attempt()
        assert refused.value.status == 403
    assert ModelVersion.objects.get(is_current=True) == base
    run.refresh_from_db()
    assert run.decision == TrainingRun.Decision.CANDIDATE


def test_a_model_folder_made_elsewhere_is_registered_as_a_version_from_code(staff_api, staff, tiny_model_dir,
                                                                          tmp_path):
    """No page or operation registered a version: a model trained by another tool could be compared or trained
    from only after an administrator added it in the admin."""
    base = ModelVersion.objects.create(name="base", path=str(tiny_model_dir), is_current=True)
    out = staff_api.register_version("external-dpo", str(tiny_model_dir), parent=base.pk)
    version = ModelVersion.objects.get(pk=out["id"])
    assert (out["name"], out["round"], out["parent"], out["is_current"]) == ("external-dpo", 1, "base", False)
    assert version.path == str(tiny_model_dir.resolve()) and version.size_bytes > 0
    assert not VersionChange.objects.exists()
    current = staff_api.register_version("external-2", str(tiny_model_dir), make_current=True)
    assert current["is_current"] is True and ModelVersion.objects.get(is_current=True).name == "external-2"
    change = VersionChange.objects.get()
    assert (change.action, change.user, change.previous) == (VersionChange.Action.ROLLBACK, staff, base)


@pytest.mark.parametrize("body, status, said", [
    ({"name": "x", "path": "relative/folder"}, 400, "path: 'relative/folder' is relative"),
    ({"name": "x", "path": "EMPTY"}, 400, "path: /"),
    ({"name": "x", "path": "CONFIG_ONLY"}, 400, "path: /"),
    ({"name": "x", "path": "~no-such-account-here/model"}, 400, "path: '~no-such-account-here/model' names no home"),
    ({"name": "x", "path": "MODEL", "kind": "lora"}, 400, "path: /"),
    ({"name": "base", "path": "MODEL"}, 409, "a version named 'base' exists already"),
    ({"name": "   ", "path": "MODEL"}, 400, "name: 1 to 100 characters"),
    ({"name": "x", "path": "MODEL", "base": "BASE"}, 400, "base: only a LoRA adapter has a base"),
    ({"name": "x", "path": "MODEL", "parent": 999999}, 400, "parent: no model version with id 999999"),
])
def test_a_refused_registration_names_the_field_and_stores_nothing(staff_api, tiny_model_dir, tmp_path, body, status,
                                                                   said):
    base = ModelVersion.objects.create(name="base", path=str(tiny_model_dir), is_current=True)
    (tmp_path / "empty").mkdir()
    (tmp_path / "config-only").mkdir()
    (tmp_path / "config-only" / "config.json").write_text("{}")
    sent = {k: {"MODEL": str(tiny_model_dir), "EMPTY": str(tmp_path / "empty"), "BASE": base.pk,
                "CONFIG_ONLY": str(tmp_path / "config-only")}.get(v, v)
            for k, v in body.items()}
    with pytest.raises(APIError) as refused:
        staff_api.post("/versions", sent)
    assert refused.value.status == status and said in refused.value.detail
    marker = "adapter_config.json" if body.get("kind") == "lora" else "config.json"
    if said == "path: /":  # a folder without the kind's model file, or without its weights
        assert (f"holds no {marker}" if body["path"] != "CONFIG_ONLY" else "holds no weights") in refused.value.detail
    if status == 400:  # the field named for a program too
        assert [e["field"] for e in refused.value.errors] == [said.split(":")[0]]
    assert list(ModelVersion.objects.values_list("name", flat=True)) == ["base"]


def test_registering_needs_the_permission_to_add_versions(live_server, tiny_model_dir, token_for, annotator):
    from django.contrib.auth.models import Permission

    from prefloop_client import Client
    from tests.annotate.factories import make_user

    looker = make_user("looker", is_staff=True)
    looker.user_permissions.set(Permission.objects.filter(codename="view_modelversion"))
    for who in (annotator, looker):
        with pytest.raises(APIError) as refused:
            Client(live_server.url, token_for(who)).register_version("x", str(tiny_model_dir))
        assert refused.value.status == 403
    assert not ModelVersion.objects.exists()


def test_making_a_registered_version_current_needs_the_permission_to_change_versions(live_server, tiny_model_dir,
                                                                                    token_for):
    """From an outside probe: staff who may only add versions made one current through make_current, switching the
    model every job uses past the gate; a rollback or promotion needs generation.change_modelversion."""
    from django.contrib.auth.models import Permission

    from prefloop_client import Client
    from tests.annotate.factories import make_user

    base = ModelVersion.objects.create(name="base", path=str(tiny_model_dir), is_current=True)
    adder = make_user("adder", is_staff=True)
    adder.user_permissions.set(Permission.objects.filter(codename="add_modelversion"))
    client = Client(live_server.url, token_for(adder))
    with pytest.raises(APIError) as refused:
        client.register_version("evil", str(tiny_model_dir), make_current=True)
    assert refused.value.status == 403 and "generation.change_modelversion" in refused.value.detail
    assert list(ModelVersion.objects.values_list("name", "is_current")) == [("base", True)]
    assert client.register_version("added", str(tiny_model_dir))["is_current"] is False  # adding alone: allowed
    assert ModelVersion.objects.current() == base


@pytest.mark.parametrize("path", ["/" + "a" * 256, "/tmp/" + "b" * 256 + "/x"])
def test_a_path_the_file_system_cannot_take_is_refused_not_a_500(staff_api, tiny_model_dir, path):
    ModelVersion.objects.create(name="base", path=str(tiny_model_dir), is_current=True)
    with pytest.raises(APIError) as refused:
        staff_api.post("/versions", {"name": "x", "path": path})
    assert refused.value.status == 400 and "cannot be read on the server" in refused.value.detail
    assert [e["field"] for e in refused.value.errors] == ["path"]
    assert list(ModelVersion.objects.values_list("name", flat=True)) == ["base"]
