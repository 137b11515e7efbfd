"""Sign-in lockout (django-axes): the attacks of issue 17, row 1, performed over HTTP and shown to fail.

Design under test: failures are counted per (username as Django's form normalises it, client address); after
PREFLOOP_LOGIN_MAX_FAILURES of them the name is refused from that address, on every sign-in form, until the window
has passed since the last counted failure or an administrator unlocks it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-admin-123"
ADMIN_LOGIN = "/admin/login/"
APP_LOGIN = "/accounts/login/"


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True, is_superuser=True)


def sign_in(client: Client, path: str, username: str, password: str, **extra):
    return client.post(path, {"username": username, "password": password, "next": "/"}, **extra)


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def fail(client: Client, path: str, username: str, times: int, **extra) -> None:
    for _ in range(times):
        response = sign_in(client, path, username, "wrong-password", **extra)
        assert not signed_in(client)
        assert response.status_code in (200, 429)


@pytest.mark.django_db
def test_admin_login_refuses_the_right_password_after_ten_failures(admin_user):
    client = Client()
    fail(client, ADMIN_LOGIN, "admin", settings.PREFLOOP_LOGIN_MAX_FAILURES)
    response = sign_in(client, ADMIN_LOGIN, "admin", PASSWORD)
    assert response.status_code == 429
    assert not signed_in(client)
    body = response.content.decode()
    assert "Too many failed sign-in attempts" in body
    assert 0 < int(response["Retry-After"]) <= settings.PREFLOOP_LOGIN_WINDOW_SECONDS
    # The admin's own sign-in page is shown again (empty), not an error page.
    assert 'id="login-form"' in body and PASSWORD not in body


@pytest.mark.django_db
def test_full_width_spelling_of_a_locked_name_is_locked_too(admin_user):
    """Django's form turns 'ａｄｍｉｎ' into 'admin' before checking the password: it must share the count."""
    client = Client()
    fail(client, APP_LOGIN, "admin", settings.PREFLOOP_LOGIN_MAX_FAILURES)
    for path in (APP_LOGIN, ADMIN_LOGIN):
        response = sign_in(client, path, "ａｄｍｉｎ", PASSWORD)
        assert response.status_code == 429, path
        assert not signed_in(client)
    response = sign_in(client, APP_LOGIN, "  admin ", PASSWORD)  # the form strips spaces, so must the count
    assert response.status_code == 429 and not signed_in(client)


@pytest.mark.django_db
def test_a_name_longer_than_any_record_is_counted_and_locked_not_a_server_error(admin_user):
    """Django's form hands authenticate() a name of any length; axes' record holds 255 characters (PostgreSQL
    refuses more: this was a 500). Names beyond that are counted on their first 255 characters."""
    client = Client()
    long_name = "a" * 3000
    fail(client, APP_LOGIN, long_name, settings.PREFLOOP_LOGIN_MAX_FAILURES)
    assert AccessAttempt.objects.get().username == "a" * 255
    response = sign_in(client, ADMIN_LOGIN, "a" * 255 + "b" * 10, "wrong-password")
    assert response.status_code == 429


@pytest.mark.django_db
def test_failures_on_either_form_count_together(admin_user):
    client = Client()
    half = settings.PREFLOOP_LOGIN_MAX_FAILURES // 2
    fail(client, ADMIN_LOGIN, "admin", half)
    fail(client, APP_LOGIN, "ａｄｍｉｎ", settings.PREFLOOP_LOGIN_MAX_FAILURES - half)
    assert sign_in(client, APP_LOGIN, "admin", PASSWORD).status_code == 429
    assert not signed_in(client)


@pytest.mark.django_db
def test_one_address_does_not_lock_the_name_for_another(admin_user):
    """Keyed by name *and* address: a stranger guessing from elsewhere cannot lock a person out of their desk."""
    attacker = Client(REMOTE_ADDR="198.51.100.7")
    fail(attacker, APP_LOGIN, "admin", settings.PREFLOOP_LOGIN_MAX_FAILURES)
    assert sign_in(attacker, APP_LOGIN, "admin", PASSWORD).status_code == 429
    owner = Client(REMOTE_ADDR="192.0.2.10")
    assert sign_in(owner, APP_LOGIN, "admin", PASSWORD).status_code == 302
    assert signed_in(owner)


@pytest.mark.django_db
def test_a_forged_forwarded_for_header_does_not_dodge_the_lock(admin_user):
    """With no trusted proxy (the default) X-Forwarded-For is ignored, whatever the client writes in it."""
    client = Client()
    for n in range(settings.PREFLOOP_LOGIN_MAX_FAILURES):
        sign_in(client, APP_LOGIN, "admin", "wrong", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
    response = sign_in(client, APP_LOGIN, "admin", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.200")
    assert response.status_code == 429 and not signed_in(client)
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}


@pytest.mark.django_db
def test_behind_a_trusted_proxy_the_client_address_is_the_proxys_entry(admin_user, settings):
    """One proxy appends the address it saw; what the client wrote further left is ignored."""
    settings.PREFLOOP_TRUSTED_PROXY_COUNT = 1
    settings.PREFLOOP_TRUSTED_PROXIES = ["10.1.1.1"]  # the proxy's own address: only its header is read
    proxy = {"REMOTE_ADDR": "10.1.1.1"}
    attacker = Client(**proxy)
    for n in range(settings.PREFLOOP_LOGIN_MAX_FAILURES):
        sign_in(attacker, APP_LOGIN, "admin", "wrong", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 198.51.100.7")
    response = sign_in(attacker, APP_LOGIN, "admin", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.99, 198.51.100.7")
    assert response.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.7"}
    # Another client behind the same proxy is not locked out.
    owner = Client(**proxy)
    assert sign_in(owner, APP_LOGIN, "admin", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.10").status_code == 302
    # A request that bypassed the proxy (no header) is keyed on its own address, and a junk entry never reaches
    # the database's address column.
    fail(Client(REMOTE_ADDR="10.9.9.9"), APP_LOGIN, "admin", 1, HTTP_X_FORWARDED_FOR="not-an-address")
    assert AccessAttempt.objects.filter(ip_address="10.9.9.9").exists()


@pytest.mark.django_db
def test_the_lock_ends_a_window_after_the_last_failure_and_success_clears_the_count(admin_user):
    client = Client()
    fail(client, APP_LOGIN, "admin", settings.PREFLOOP_LOGIN_MAX_FAILURES)
    assert sign_in(client, APP_LOGIN, "admin", PASSWORD).status_code == 429
    # Refused attempts do not extend the lock: it still ends a window after the tenth failure.
    window = timedelta(seconds=settings.PREFLOOP_LOGIN_WINDOW_SECONDS + 1)
    for attempt in AccessAttempt.objects.all():
        AccessAttempt.objects.filter(pk=attempt.pk).update(attempt_time=attempt.attempt_time - window)
    assert sign_in(client, APP_LOGIN, "admin", PASSWORD).status_code == 302
    assert not AccessAttempt.objects.filter(username="admin").exists()


@pytest.mark.django_db
def test_an_administrator_sees_the_lock_and_lifts_it_with_a_command(admin_user, staff):
    locked = Client()
    fail(locked, APP_LOGIN, "admin", settings.PREFLOOP_LOGIN_MAX_FAILURES)
    assert sign_in(locked, APP_LOGIN, "admin", PASSWORD).status_code == 429
    # The admin lists it.
    viewer = Client()
    viewer.force_login(staff)
    listing = viewer.get(reverse("admin:axes_accessattempt_changelist"))
    assert listing.status_code == 200 and "admin" in listing.content.decode()
    # `manage.py axes_reset_username NAME` lifts it.
    call_command("axes_reset_username", "admin")
    response = sign_in(locked, APP_LOGIN, "admin", PASSWORD)
    assert response.status_code == 302 and signed_in(locked)


@pytest.mark.django_db
def test_unlock_by_name_and_address(admin_user):
    client = Client(REMOTE_ADDR="192.0.2.44")
    fail(client, ADMIN_LOGIN, "admin", settings.PREFLOOP_LOGIN_MAX_FAILURES)
    call_command("axes_reset_ip_username", "192.0.2.44", "admin")
    assert sign_in(client, ADMIN_LOGIN, "admin", PASSWORD).status_code == 302


def test_the_failure_settings_drive_axes(tmp_path):
    """PREFLOOP_LOGIN_MAX_FAILURES and PREFLOOP_LOGIN_WINDOW_SECONDS keep their meaning under axes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFLOOP_LOGIN")}
    env.update(DJANGO_SETTINGS_MODULE="prefloop.settings", PREFLOOP_DATA_DIR=str(tmp_path),
               PREFLOOP_LOGIN_MAX_FAILURES="4", PREFLOOP_LOGIN_WINDOW_SECONDS="90")
    code = ("import django, json; django.setup(); from django.conf import settings as s; print(json.dumps("
            "[s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME.total_seconds(), s.AXES_LOCKOUT_PARAMETERS, "
            "s.AUTHENTICATION_BACKENDS[:2], 'axes.middleware.AxesMiddleware' in s.MIDDLEWARE]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        4, 90.0, [["username", "ip_address"]],
        ["prefloop.lockout.AddressThrottleBackend", "axes.backends.AxesStandaloneBackend"], True]


@pytest.mark.django_db
def test_the_password_change_form_cannot_be_used_to_guess_the_password(admin_user):
    """The attack: with a stolen session, guess the current password on the password-change form, which Django checks
    without counting failures, then change it and own the account for good."""
    client = Client()
    client.force_login(admin_user)
    change = reverse("password_change")
    for _ in range(settings.PREFLOOP_LOGIN_MAX_FAILURES):
        wrong = client.post(change, {"old_password": "guess", "new_password1": "Taken-0ver!x", "new_password2": "Taken-0ver!x"})
        assert wrong.status_code in (200, 429)  # the last counted failure is answered with the lockout
    right = client.post(change, {"old_password": PASSWORD, "new_password1": "Taken-0ver!x", "new_password2": "Taken-0ver!x"})
    assert right.status_code == 429 and "Too many failed sign-in attempts" in right.content.decode()
    assert 'name="old_password"' in right.content.decode()  # the page again, empty
    admin_user.refresh_from_db()
    assert admin_user.check_password(PASSWORD)
    # the guesses counted against the name: the sign-in form is locked for it too
    assert sign_in(Client(), APP_LOGIN, "admin", PASSWORD).status_code == 429
    # and the admin's own password change is this one
    assert client.get("/admin/password_change/")["Location"] == change


@pytest.mark.django_db
def test_the_password_change_form_still_changes_the_password(admin_user):
    client = Client()
    client.force_login(admin_user)
    done = client.post(reverse("password_change"),
                       {"old_password": PASSWORD, "new_password1": "N3w-passphrase!", "new_password2": "N3w-passphrase!"})
    assert done.status_code == 302 and done["Location"] == reverse("password_change_done")
    admin_user.refresh_from_db()
    assert admin_user.check_password("N3w-passphrase!")
    wrong = client.post(reverse("password_change"),
                        {"old_password": "nope", "new_password1": "Other-pass!9", "new_password2": "Other-pass!9"})
    assert wrong.status_code == 200 and "Your old password was entered incorrectly" in wrong.content.decode()


def test_guessing_a_few_passwords_of_every_account_from_one_address_is_stopped(admin_user, django_user_model, settings):
    """The probe's spray: 9 guesses at each of 40 names from one address, each name under its own limit of 10, and
    360 sign-ins were never slowed. Now the address is refused once it has failed PREFLOOP_LOGIN_MAX_FAILURES_PER_ADDRESS
    times in the window, whatever the names; another address is not."""
    settings.PREFLOOP_LOGIN_MAX_FAILURES_PER_ADDRESS = 20
    for k in range(8):
        django_user_model.objects.create_user(f"person{k}", password=f"right-{k}-Passw0rd")
    sprayer = Client(REMOTE_ADDR="203.0.113.9")
    statuses = [sign_in(sprayer, APP_LOGIN, f"person{k}", guess).status_code
                for k in range(8) for guess in ("123456", "password", "letmein")]
    assert statuses[:20] == [200] * 20 and set(statuses[20:]) == {429}
    refused = sign_in(sprayer, APP_LOGIN, "person0", "right-0-Passw0rd")  # even a right guess
    assert refused.status_code == 429 and not signed_in(sprayer)
    assert "from this address" in refused.content.decode() and int(refused["Retry-After"]) > 0
    colleague = Client(REMOTE_ADDR="203.0.113.10")
    sign_in(colleague, APP_LOGIN, "person1", "right-1-Passw0rd")
    assert signed_in(colleague)


def test_a_new_ipv6_address_for_each_guess_is_counted_with_its_network(admin_user, settings):
    """One IPv6 client is given a /64: counted one address at a time, a new address per guess was never slowed."""
    settings.PREFLOOP_LOGIN_MAX_FAILURES_PER_ADDRESS = 5
    statuses = [sign_in(Client(REMOTE_ADDR=f"2001:db8:1:2::{k:x}"), APP_LOGIN, f"name{k}", "guess").status_code
                for k in range(1, 9)]
    assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
    neighbour = Client(REMOTE_ADDR="2001:db8:1:3::1")  # another network
    sign_in(neighbour, APP_LOGIN, "admin", PASSWORD)
    assert signed_in(neighbour)


@pytest.mark.django_db
def test_a_typo_in_the_current_password_leaves_no_password_in_clear_for_staff_to_read(admin_user, django_user_model):
    """The attack: a person mistypes their current password on the password-change page; axes kept the form as posted
    (masking only fields named "password"), so the mistyped password and the new one sat in clear in the failed
    sign-in's record, shown to any staff member in the admin and kept in every backup."""
    person = django_user_model.objects.create_user("ann", password="pw-ann-123")
    client = Client()
    client.force_login(person)
    typed = {"old_password": "pw-ann-12X", "new_password1": "MyNewSecret-9876", "new_password2": "MyNewSecret-9876"}
    assert client.post(reverse("password_change"), typed).status_code == 200  # refused: wrong current password
    (record,) = AccessAttempt.objects.filter(username="ann")
    staff = Client()
    staff.force_login(admin_user)
    page = staff.get(f"/admin/axes/accessattempt/{record.pk}/change/").content.decode()
    for secret in ("pw-ann-12X", "MyNewSecret-9876"):
        assert secret not in record.post_data and secret not in page
    assert "old_password=****" in record.post_data  # the fields are named, their values masked


@pytest.mark.slow
def test_records_kept_with_passwords_in_clear_are_scrubbed_on_upgrade(transactional_db):
    from tests.migrating import models_as_of

    with models_as_of([("api", "0001_initial"), ("axes", "0010_accessattemptexpiration")]) as old:
        attempts = old.get_model("axes", "AccessAttempt")
        common = {"user_agent": "x", "ip_address": "10.0.0.1", "username": "ann", "http_accept": "*/*",
                  "path_info": "/", "failures_since_start": 1, "get_data": ""}
        leaked = attempts.objects.create(post_data="old_password=pw-ann-12X\nnew_password1=MyNewSecret-9876", **common)
        plain = attempts.objects.create(post_data="username=****\npassword=****\nnext=/", **{**common, "username": "bo"})
    assert AccessAttempt.objects.get(pk=leaked.pk).post_data == "(removed: it held passwords in clear)"
    assert AccessAttempt.objects.get(pk=plain.pk).post_data == "username=****\npassword=****\nnext=/"
