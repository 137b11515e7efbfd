"""From an outside probe: a gold pair's answer decides the pair for training whatever its labels say, and staff
allowed only to change pairs set it (on the round page and in the admin), overriding people's labels. Setting or
clearing it now needs the permission to add labels too."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from annotate.models import Pair
from tests.annotate.factories import make_pair, make_round, make_user

pytestmark = pytest.mark.django_db


def _staff(name: str, *codenames: str):
    person = make_user(name, is_staff=True)
    person.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return person


def test_setting_a_gold_answer_needs_the_permission_to_add_labels(client):
    round_ = make_round(number=1)
    pair = make_pair(round=round_)
    client.force_login(_staff("pairs", "change_pair", "view_pair", "view_labellinground"))
    response = client.post("/annotate/rounds/1/gold/", {"pair": pair.pk, "answer": "b"})
    assert response.status_code == 403 and "annotate.add_label" in response.content.decode()
    assert not Pair.objects.get(pk=pair.pk).is_gold
    Pair.objects.filter(pk=pair.pk).update(is_gold=True, gold_choice="a")
    assert client.post("/annotate/rounds/1/gold/unset/", {"pair": pair.pk}).status_code == 403
    assert Pair.objects.get(pk=pair.pk).is_gold
    # in the admin, the gold fields are shown, not offered
    page = client.get(f"/admin/annotate/pair/{pair.pk}/change/").content.decode()
    assert 'name="gold_choice"' not in page and 'name="is_gold"' not in page
    client.force_login(_staff("labels", "change_pair", "view_pair", "add_label", "view_labellinground"))
    assert client.post("/annotate/rounds/1/gold/", {"pair": pair.pk, "answer": "b"}).status_code == 302
    assert Pair.objects.get(pk=pair.pk).gold_choice == "b"
    assert 'name="gold_choice"' in client.get(f"/admin/annotate/pair/{pair.pk}/change/").content.decode()
