"""A staff member who is not a superuser, given the API token permissions in the admin, made a token for any
account: with it they labelled as an annotator (skewing agreement and gold accuracy) or acted as a superuser.
Only a superuser makes tokens for others now; everyone else makes, sees and revokes their own."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from api.models import ApiToken
from api.tokens import create_token

pytestmark = pytest.mark.django_db

ADD = "/admin/api/apitoken/add/"


@pytest.fixture
def lead(django_user_model):
    user = django_user_model.objects.create_user("lead", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="api"))
    return user


def test_a_staff_member_makes_a_token_only_for_themselves(client, lead, staff, annotator):
    create_token(annotator, "annotator's own")
    client.force_login(lead)
    for victim in (staff, annotator):  # the superuser, an annotator
        page = client.post(ADD, {"user": victim.pk, "name": "as them"})
        assert page.status_code == 200 and "Select a valid choice" in page.content.decode()
        assert not ApiToken.objects.filter(user=victim, name="as them").exists()
    form = client.get(ADD).content.decode()
    assert f'value="{annotator.pk}"' not in form and f'value="{staff.pk}"' not in form
    page = client.post(ADD, {"user": lead.pk, "name": "my pipeline"}, follow=True)
    assert "shown this once" in page.content.decode() and ApiToken.objects.filter(user=lead).count() == 1
    listing = client.get("/admin/api/apitoken/").content.decode()
    assert "my pipeline" in listing and "annotator&#x27;s own" not in listing and "annotator's own" not in listing
    other = ApiToken.objects.get(user=annotator)
    client.post("/admin/api/apitoken/", {"action": "revoke", "_selected_action": [other.pk]})
    other.refresh_from_db()
    assert not other.revoked  # not theirs to revoke


def test_a_superuser_still_makes_a_token_for_any_account(client, staff, annotator):
    client.force_login(staff)
    page = client.post(ADD, {"user": annotator.pk, "name": "judge pipeline"}, follow=True)
    assert "shown this once" in page.content.decode()
    assert ApiToken.objects.filter(user=annotator, name="judge pipeline").exists()
