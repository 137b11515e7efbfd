"""A version's lineage and base as the admin edits them: a parent that leads back to the version itself made
`lineage()` loop forever (GET /api/v1/versions, /generation/ and the admin's list never answered, and every job that
looks up its base hung), and a LoRA adapter saved without its full checkpoint failed in the worker as
"AttributeError: 'NoneType' object has no attribute 'path'"."""
from __future__ import annotations

import pytest

from generation.models import ModelVersion
from generation.services import GenerationError, backend_for
from tests.compare.conftest import make_version

pytestmark = pytest.mark.django_db


def _change(client, version: ModelVersion, **fields):
    """The admin's change form posted as it stands, with `fields` changed."""
    form = {"name": version.name, "parent": version.parent_id, "round": version.round, "path": version.path,
            "kind": version.kind, "base": version.base_id, **fields}
    return client.post(f"/admin/generation/modelversion/{version.pk}/change/",
                       {k: "" if v is None else str(v) for k, v in form.items()})


def test_the_admin_refuses_a_parent_that_makes_the_lineage_a_loop(client, staff):
    base = make_version("base")
    one = make_version("round-1", parent=base)
    two = make_version("round-2", parent=one)
    client.force_login(staff)
    for version, parent in [(base, base), (base, two), (one, two)]:
        response = _change(client, version, parent=parent.pk)
        assert response.status_code == 200, (version.name, parent.name)
        assert "the lineage cannot loop" in response.content.decode()
    assert [v.parent_id for v in ModelVersion.objects.order_by("pk")] == [None, base.pk, one.pk]
    assert _change(client, two, parent=base.pk).status_code == 302  # a parent that is earlier is fine


def test_a_lineage_saved_as_a_loop_before_the_check_still_answers(client, staff):
    base = make_version("base")
    one = make_version("round-1", parent=base)
    ModelVersion.objects.filter(pk=base.pk).update(parent=one)  # as a shell or an old admin could have saved it
    assert [v.name for v in ModelVersion.objects.get(pk=one.pk).lineage()] == ["base", "round-1"]
    client.force_login(staff)
    assert client.get("/api/v1/versions").status_code == 200
    assert client.get("/generation/").status_code == 200
    assert client.get("/admin/generation/modelversion/").status_code == 200


def test_the_admin_refuses_an_adapter_without_a_full_base_and_a_base_on_a_full_checkpoint(client, staff):
    base = make_version("base")
    adapter = make_version("round-1", parent=base, kind=ModelVersion.LORA, base=base)
    other = make_version("round-2", parent=adapter)
    client.force_login(staff)
    for version, fields, error in [
        (adapter, {"base": None}, "a LoRA adapter needs the full checkpoint it applies to"),
        (other, {"kind": "lora", "base": adapter.pk}, "is not a full checkpoint"),
        (other, {"base": base.pk}, "only a LoRA adapter has a base"),
    ]:
        response = _change(client, version, **fields)
        assert response.status_code == 200 and error in response.content.decode(), (version.name, fields)
    assert ModelVersion.objects.get(pk=adapter.pk).base_id == base.pk
    assert ModelVersion.objects.get(pk=other.pk).kind == ModelVersion.FULL


def test_an_adapter_saved_without_its_base_fails_its_job_with_a_sentence(db):
    adapter = make_version("round-1", parent=make_version("base"), kind=ModelVersion.LORA)
    with pytest.raises(GenerationError, match="'round-1' .* is a LoRA adapter without the full checkpoint"):
        backend_for(adapter)
