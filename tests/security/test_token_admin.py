"""A staff member who is not a superuser, given the API token permissions in the admin, made a token for any
account: with it they labelled as an annotator (skewing agreement and gold accuracy) or acted as a superuser.
Only a superuser makes tokens for others now; everyone else makes, sees and revokes their own."""
from __future__ import annotations

import re
import zlib

import pytest
from django.contrib.auth.models import Permission
from django.core import signing
from django.test import Client

from api.models import ApiToken
from api.tokens import create_token, user_for_token

pytestmark = pytest.mark.django_db

ADD = "/admin/api/apitoken/add/"


@pytest.fixture
def lead(django_user_model):
    user = django_user_model.objects.create_user("lead", password="pw-lead-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="api"))
    return user


def test_a_staff_member_makes_a_token_only_for_themselves(client, lead, staff, annotator):
    create_token(annotator, "annotator's own")
    client.force_login(lead)
    for victim in (staff, annotator):  # the superuser, an annotator
        page = client.post(ADD, {"user": victim.pk, "name": "as them", "password": "pw-lead-123"})
        assert page.status_code == 200 and "Select a valid choice" in page.content.decode()
        assert not ApiToken.objects.filter(user=victim, name="as them").exists()
    form = client.get(ADD).content.decode()
    assert f'value="{annotator.pk}"' not in form and f'value="{staff.pk}"' not in form
    page = client.post(ADD, {"user": lead.pk, "name": "my pipeline", "password": "pw-lead-123"}, follow=True)
    assert "shown this once" in page.content.decode() and ApiToken.objects.filter(user=lead).count() == 1
    listing = client.get("/admin/api/apitoken/").content.decode()
    assert "my pipeline" in listing and "annotator&#x27;s own" not in listing and "annotator's own" not in listing
    other = ApiToken.objects.get(user=annotator)
    client.post("/admin/api/apitoken/", {"action": "revoke", "_selected_action": [other.pk]})
    other.refresh_from_db()
    assert not other.revoked  # not theirs to revoke


def test_a_superuser_still_makes_a_token_for_any_account(client, staff, annotator):
    client.force_login(staff)
    page = client.post(ADD, {"user": annotator.pk, "name": "judge pipeline", "password": "pw-staff-123"}, follow=True)
    assert "shown this once" in page.content.decode()
    assert ApiToken.objects.filter(user=annotator, name="judge pipeline").exists()


def _readable(value: str) -> str:
    """What anyone holding the browser's cookies reads in a signed cookie: signing is not encryption."""
    payload = value.strip('"').split(":")[0]
    try:
        data = signing.b64_decode(payload.lstrip(".").encode())
        return (zlib.decompress(data) if payload.startswith(".") else data).decode(errors="replace")
    except (ValueError, zlib.error):
        return value


def test_a_token_made_in_the_admin_never_leaves_the_server_in_a_cookie(client, staff, annotator):
    """The token was shown in a message, which Django's default storage keeps in a signed cookie until the next
    page: a shared computer's browser, or a proxy logging cookies, kept a working token after the page closed.
    The attack: read every cookie the answer sets, as anyone holding them can, and try each token-shaped text."""
    client.force_login(staff)
    answer = client.post(ADD, {"user": annotator.pk, "name": "judge pipeline", "password": "pw-staff-123"})
    stolen = [found for morsel in answer.cookies.values()
              for found in re.findall(r"pfl_[A-Za-z0-9_-]{20,}", _readable(morsel.value))]
    assert not [found for found in stolen if user_for_token(found) is not None]
    assert answer.status_code == 200 and "shown this once" in answer.content.decode()
    assert "no-store" in answer.headers["Cache-Control"]
    token = answer.content.decode().split('<code class="token">')[1].split("</code>")[0]
    assert user_for_token(token) == annotator  # shown on the answer itself, and it works
    assert token not in client.get("/admin/api/apitoken/").content.decode()  # nor on any later page
    row = ApiToken.objects.get(user=annotator, name="judge pipeline")
    assert token not in client.get(f"/admin/api/apitoken/{row.pk}/change/").content.decode()


def test_a_stolen_session_cannot_make_a_token_nor_guess_the_password_there(client, staff, annotator, settings):
    """The attack: with a browser left signed in, make a token (on the account page, or in the admin for any
    account) and keep acting as its owner from elsewhere; or use the form to guess the password without limit."""
    stolen = Client()
    stolen.force_login(staff)
    for url, form in (("/account/tokens/", {"name": "mine now"}),
                      (ADD, {"user": annotator.pk, "name": "mine now"})):
        for password in ("", "a guess"):
            answer = stolen.post(url, {**form, "password": password})
            assert answer.status_code in (200, 400) and "pfl_" not in answer.content.decode(), (url, password)
    assert not ApiToken.objects.exists()
    for _ in range(settings.PREFLOOP_LOGIN_MAX_FAILURES - 2):  # two guesses counted above (empty ones are not)
        stolen.post("/account/tokens/", {"name": "mine now", "password": "another guess"})
    right = stolen.post("/account/tokens/", {"name": "mine now", "password": "pw-staff-123"})
    assert right.status_code == 429 and not ApiToken.objects.exists()  # the guesses locked the name
    signing_in = Client().post("/accounts/login/", {"username": "staff", "password": "pw-staff-123", "next": "/"})
    assert signing_in.status_code == 429  # on the sign-in form too


@pytest.mark.parametrize("url", ["/account/tokens/", ADD])
def test_a_failure_while_making_a_token_reports_no_password(url, staff, monkeypatch):
    """The password the form now asks for was shown in the POST data of the error report (the DEBUG page, or the
    mail to ADMINS) of a request that failed: make one fail, and read the report Django writes for it."""
    import sys

    from django.core.signals import got_request_exception
    from django.views.debug import ExceptionReporter

    import api.tokens

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(api.tokens, "create_token", broken)
    reports = []

    def report(sender, request, **kwargs):
        reports.append(ExceptionReporter(request, *sys.exc_info()).get_traceback_text())

    got_request_exception.connect(report)
    try:
        page = Client(raise_request_exception=False)
        page.force_login(staff)
        answer = page.post(url, {"user": staff.pk, "name": "pipeline", "password": "pw-staff-123"})
    finally:
        got_request_exception.disconnect(report)
    assert answer.status_code == 500 and len(reports) == 1
    assert "the database went away" in reports[0] and "pw-staff-123" not in reports[0]


def test_revoking_a_token_revoked_already_says_so_and_keeps_when_it_was(client, staff):
    """Found by an outside probe: the admin's Revoke counted every token selected as revoked now, and the account
    page said "revoked: it is refused from now on" of a token refused since long before (a second click)."""
    live, old = (ApiToken.objects.get(pk=create_token(staff, name)[0].pk) for name in ("live", "old"))
    ApiToken.objects.filter(pk=old.pk).update(revoked="2026-01-02T03:04:05Z")
    client.force_login(staff)
    page = client.post("/admin/api/apitoken/", {"action": "revoke", "_selected_action": [live.pk, old.pk]},
                       follow=True)
    shown = [str(m) for m in page.context["messages"]]
    assert shown == ["1 token(s) revoked. 1 had been revoked already."], shown
    old.refresh_from_db()
    assert old.revoked.year == 2026 and old.revoked.month == 1
    page = client.post("/account/tokens/revoke/", {"token": old.pk}, follow=True)
    shown = [str(m) for m in page.context["messages"]]
    assert shown == [f"Token {old.prefix}… had been revoked already."], shown
