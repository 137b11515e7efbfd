"""An outside probe's findings: a token that outlived a password change or its account being disabled, and
workers' raw errors (database hosts, users, paths) shown to annotators."""
from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import Client

from api.models import ApiToken
from api.tokens import create_token, user_for_token
from compare.models import CompareJob
from tests.compare.conftest import make_version

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_new_password_revokes_the_persons_tokens_whatever_way_it_is_set(annotator, staff, monkeypatch):
    """The attack: with a stolen session, make a token on the account page; the victim changes their password,
    and the token keeps working."""
    annotator.set_password("first-Passw0rd!x")
    annotator.save()
    page = Client()
    page.force_login(annotator)
    page.post("/account/tokens/", {"name": "stolen", "password": "first-Passw0rd!x"})
    stolen_row = ApiToken.objects.get(user=annotator)
    _, stolen = create_token(annotator, "made with the stolen session")
    _, staffs = create_token(staff, "someone else's")
    assert user_for_token(stolen) == annotator
    answer = page.post("/accounts/password_change/", {"old_password": "first-Passw0rd!x", "new_password1": "n3w-Secret-pass!",
                                             "new_password2": "n3w-Secret-pass!"})
    assert answer.status_code == 302
    assert user_for_token(stolen) is None and ApiToken.objects.get(pk=stolen_row.pk).revoked is not None
    assert user_for_token(staffs) == staff  # another person's tokens stay
    _, fresh = create_token(annotator, "after the change")
    annotator.refresh_from_db()
    annotator.last_name = "Renamed"
    annotator.save()  # a save that keeps the password revokes nothing
    assert user_for_token(fresh) == annotator
    monkeypatch.setattr("getpass.getpass", lambda *a, **k: "an0ther-Secret-pass!")
    call_command("changepassword", annotator.username)
    assert user_for_token(fresh) is None


def test_an_annotator_sees_that_a_set_failed_not_the_workers_error(client, annotator, staff):
    leak = 'OperationalError: connection to server at "db.internal.corp" (10.1.2.3), user "prefloop_rw"'
    job = CompareJob.objects.create(version_a=make_version("a"), version_b=make_version("b"), prompt_ids=[1],
                                    total=2, status="failed", error=leak)
    client.force_login(annotator)
    page = client.get(f"/compare/sets/{job.pk}/").content.decode()
    assert "db.internal.corp" not in page and "10.1.2.3" not in page and "staff can see" in page
    client.force_login(staff)
    assert "db.internal.corp" in client.get(f"/compare/sets/{job.pk}/").content.decode()


def test_the_rehash_at_sign_in_after_an_upgrade_revokes_nothing(annotator, settings):
    """Django stores the password again, re-hashed, at the first sign-in after its hasher's settings change (every
    Django upgrade raises the iterations): that is not a new password."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher",
                                 "django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    annotator.set_password("same-Passw0rd!")
    annotator.save()
    _, token = create_token(annotator, "pipeline")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher",
                                 "django.contrib.auth.hashers.MD5PasswordHasher"]
    page = Client()
    assert page.post("/accounts/login/", {"username": annotator.username, "password": "same-Passw0rd!"}).status_code == 302
    annotator.refresh_from_db()
    assert annotator.password.startswith("pbkdf2_")  # re-hashed and stored
    assert user_for_token(token) == annotator


def test_a_password_disabled_in_the_admin_revokes_the_tokens_too(client, staff, annotator):
    """What an administrator does to an account they think is taken: its password made unusable. Its tokens kept
    working (Django marks no new password for it)."""
    _, token = create_token(annotator, "pipeline")
    client.force_login(staff)
    answer = client.post(f"/admin/auth/user/{annotator.pk}/password/", {"usable_password": "false",
                                                                         "unset-password": "1"})
    assert answer.status_code == 302
    annotator.refresh_from_db()
    assert not annotator.has_usable_password() and user_for_token(token) is None


def test_an_account_disabled_in_the_admin_keeps_none_of_its_tokens_once_enabled_again(client, staff, annotator):
    """The attack: a token made from a stolen session; an administrator disables the account (what docs/api.md says
    ends its tokens), then enables it again for its owner, and the stolen token worked again: it was refused only
    while the account was disabled."""
    _, stolen = create_token(annotator, "made with the stolen session")
    _, staffs = create_token(staff, "someone else's")
    client.force_login(staff)
    change = f"/admin/auth/user/{annotator.pk}/change/"
    fields = {"username": annotator.username, "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
              "initial-date_joined_0": "2026-01-01", "initial-date_joined_1": "00:00:00"}
    assert client.post(change, fields).status_code == 302  # is_active left out: disabled
    annotator.refresh_from_db()
    assert not annotator.is_active and user_for_token(stolen) is None
    assert client.post(change, {**fields, "is_active": "on"}).status_code == 302
    annotator.refresh_from_db()
    assert annotator.is_active and user_for_token(stolen) is None
    assert user_for_token(staffs) == staff  # another person's tokens stay
    _, fresh = create_token(annotator, "after")
    annotator.last_name = "Renamed"
    annotator.save()  # a save of an account that stays enabled revokes nothing
    annotator.save(update_fields=["is_active"])
    assert user_for_token(fresh) == annotator


def test_tokens_are_revoked_after_the_new_password_is_written_not_before(annotator, django_assert_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    create_token(annotator, "pipeline")
    annotator.set_password("brand-New-Passw0rd")
    with CaptureQueriesContext(connection) as queries:
        annotator.save()
    writes = [q["sql"].split()[1].strip('"') for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert writes == ["auth_user", "api_apitoken"]  # a token made in between from the old session is revoked too


@pytest.mark.parametrize("new", ["password", "12345678", "annotator-1", "qwertyuiop"])
def test_a_password_anyone_would_try_first_is_refused(annotator, new):
    """The password change form took "password", "12345678" and the account's own name: only the length was
    checked. The sign-in lockout slows guessing; these are the first guesses."""
    annotator.username = "annotator-1"
    annotator.set_password("first-Passw0rd!x")
    annotator.save()
    page = Client()
    page.force_login(annotator)
    answer = page.post("/accounts/password_change/", {"old_password": "first-Passw0rd!x", "new_password1": new,
                                                      "new_password2": new})
    annotator.refresh_from_db()
    assert answer.status_code == 200 and not annotator.check_password(new)
    assert annotator.check_password("first-Passw0rd!x")
