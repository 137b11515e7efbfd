"""What a browser is told (issue 17, rows 6 and 14): no debug page unless DEBUG=1, and even then no connection
passwords; a Content-Security-Policy that loads only the app's own scripts, styles and images; secret files and the
database readable by their owner only; `check --deploy` clean in production."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DB_PASSWORD = "db-pw-7d1c"
BROKER_PASSWORD = "broker-pw-51aa"
CACHE_PASSWORD = "cache-pw-c0de"
CANARY = "env-canary-93f2"

# The attack of the report, run the way runserver runs a request: the process environment is in request.META.
ATTACK = """
import json, os
import django
django.setup()
from django.conf import settings
from django.core.management import call_command
from django.contrib.auth import get_user_model
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
call_command("migrate", verbosity=0)
user = get_user_model().objects.create_user("ann", password="pw-ann-123")
client = Client(raise_request_exception=False, **{k: v for k, v in os.environ.items() if k.isupper()})
client.force_login(user)
response = client.post("/annotate/skip/", {"pair": "-1"})
print(json.dumps({"debug": settings.DEBUG, "status": response.status_code, "body": response.content.decode()}))
"""


def run_attack(tmp_path: Path, **env: str) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "PREFLOOP_PRODUCTION", "DATABASE_URL"}}
    full.update(DJANGO_SETTINGS_MODULE="prefloop.settings", PREFLOOP_DATA_DIR=str(tmp_path / "data"),
                CELERY_BROKER_URL=f"redis://:{BROKER_PASSWORD}@127.0.0.1:6399/0", PREFLOOP_CANARY=CANARY,
                UPSTREAM_URL=f"postgres://prefloop:{DB_PASSWORD}@db.internal:5432/prefloop", **env)
    result = subprocess.run([sys.executable, "-c", ATTACK], cwd=ROOT, env=full, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_debug_is_off_unless_set_and_the_attack_shows_nothing(tmp_path):
    """`make run` sets no DEBUG: posting pair=-1 as an annotator shows no settings, environment or traceback."""
    found = run_attack(tmp_path)
    assert found["debug"] is False
    body = found["body"]
    for leak in (BROKER_PASSWORD, DB_PASSWORD, CANARY, "CELERY_BROKER_URL", "Traceback", "DJANGO_SETTINGS_MODULE",
                 "SECRET_KEY"):
        assert leak not in body, leak
    assert found["status"] < 500 or "Server Error" in body


def test_with_debug_on_the_error_page_masks_connection_passwords(tmp_path):
    found = run_attack(tmp_path, DEBUG="1", CACHE_URL=f"redis://:{CACHE_PASSWORD}@127.0.0.1:6399/1")
    assert found["debug"] is True
    if found["status"] != 500:
        pytest.skip("the attack request no longer fails, so there is no debug page to look at (see the test below)")
    body = found["body"]
    assert "CELERY_BROKER_URL" in body  # the page listed the settings ...
    for password in (BROKER_PASSWORD, DB_PASSWORD, CACHE_PASSWORD):
        assert password not in body, password  # ... but not the passwords


def test_the_debug_page_filter_hides_connection_urls_in_settings_environment_and_locals(rf, settings):
    """Django's own technical 500 page, rendered with DEBUG on for a request whose environment holds the URLs."""
    from django.views.debug import technical_500_response

    settings.DEBUG = True
    settings.CELERY_BROKER_URL = f"redis://:{BROKER_PASSWORD}@127.0.0.1:6379/0"
    settings.CACHE_URL = f"redis://:{CACHE_PASSWORD}@127.0.0.1:6379/1"
    settings.SENTRY_LIKE_SETTING = f"https://user:{DB_PASSWORD}@errors.example.org/1"
    request = rf.post("/annotate/skip/", {"pair": "-1"}, DATABASE_URL=f"postgres://prefloop:{DB_PASSWORD}@db:5432/x",
                      CELERY_BROKER_URL=settings.CELERY_BROKER_URL, CACHE_URL=settings.CACHE_URL)
    try:
        connection_url = f"postgres://prefloop:{DB_PASSWORD}@db:5432/x"  # a local the traceback shows
        raise RuntimeError(f"could not connect ({len(connection_url)})")
    except RuntimeError:
        page = technical_500_response(request, *sys.exc_info()).content.decode()
    assert "DATABASE_URL" in page and "CELERY_BROKER_URL" in page and "connection_url" in page
    for password in (DB_PASSWORD, BROKER_PASSWORD, CACHE_PASSWORD):
        assert password not in page, password


# ---- Content-Security-Policy -----------------------------------------------------------------------------------

def policy(response) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy", "")
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


PAGES = ["/", "/annotate/", "/compare/", "/compare/leaderboard/", "/generation/", "/training/", "/loop/", "/admin/",
         "/admin/generation/generationjob/", "/annotate/quality/", "/annotate/export/", "/annotate/import/"]


@pytest.mark.django_db
def test_every_page_forbids_remote_images_scripts_and_styles(client, staff):
    assert policy(client.get("/accounts/login/"))["img-src"] == ["'self'"]
    client.force_login(staff)
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        found = policy(response)
        for directive in ("img-src", "script-src", "style-src", "font-src", "connect-src", "default-src"):
            assert found.get(directive) == ["'self'"], (path, directive, found)
        assert found.get("object-src") == ["'none'"] and found.get("frame-ancestors") == ["'none'"], path


@pytest.mark.django_db
def test_a_remote_image_in_an_answer_is_rendered_but_refused_by_the_policy(client, annotator):
    """The markup still carries the <img> (Markdown is Markdown); the header is what keeps the browser from it."""
    from tests.annotate.factories import make_pair

    make_pair(text_a="See ![chart](https://tracker.example.org/pixel.png?who=annotator)", text_b="No image here.")
    client.force_login(annotator)
    response = client.get("/annotate/")
    assert "https://tracker.example.org/pixel.png" in response.content.decode()
    found = policy(response)
    assert found["img-src"] == ["'self'"] and "https:" not in found["img-src"]


@pytest.mark.django_db
def test_no_page_relies_on_what_the_policy_refuses(client, staff):
    """No inline <script>, <style>, style="..." or on...= handler in any page the app serves (the admin's included):
    under the policy they would silently stop working."""
    import re

    from tests.test_security import _escaping_data, all_urls

    pks = _escaping_data(staff)
    client.force_login(staff)
    inline = re.compile(r'<script(?![^>]*\bsrc=)(?![^>]*type="application/json")[^>]*>|<style\b|\sstyle="|\son[a-z]+="',
                        re.I)
    offenders = []
    for url in all_urls(tuple(sorted(set(pks))))[0]:
        response = client.get(url.path)
        if response.streaming or "html" not in response.get("Content-Type", ""):
            continue
        for match in inline.finditer(response.content.decode(errors="replace")):
            offenders.append(f"{url.path}: {match.group(0)}")
    assert offenders == []


# ---- files only their owner may read ---------------------------------------------------------------------------

MODES = """
import json, os, stat
import django
django.setup()
from django.conf import settings
from django.core.management import call_command
from django.db import connection
call_command("migrate", verbosity=0)
with connection.cursor() as cursor:  # an open connection in WAL mode: the -wal and -shm files exist now
    cursor.execute("INSERT INTO django_session (session_key, session_data, expire_date) VALUES ('k', 'd', '2099-01-01')")
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in settings.DATA_DIR.iterdir() if p.is_file()}
modes["."] = oct(stat.S_IMODE(settings.DATA_DIR.stat().st_mode))
print(json.dumps(modes))
"""


def data_dir_modes(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "PREFLOOP_PRODUCTION", "DATABASE_URL",
                                                           "DJANGO_SECRET_KEY", "SECRET_KEY"}}
    env.update(DJANGO_SETTINGS_MODULE="prefloop.settings", PREFLOOP_DATA_DIR=str(data))
    result = subprocess.run([sys.executable, "-c", MODES], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_secret_key_and_the_database_are_created_owner_only(tmp_path):
    old = os.umask(0o022)  # the usual umask, under which they used to be written 0644
    try:
        modes = data_dir_modes(tmp_path / "data")
    finally:
        os.umask(old)
    assert {"secret_key", "db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm"} <= set(modes), modes
    for name in ("secret_key", "db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm"):
        assert modes[name] == "0o600", (name, modes[name])
    assert modes["."] == "0o700"


def test_files_left_readable_by_an_earlier_version_are_narrowed(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    for name, text in (("secret_key", "an-old-development-key-0123456789"), ("db.sqlite3", "")):
        (data / name).write_text(text)
        (data / name).chmod(0o644)
    modes = data_dir_modes(data)
    assert modes["secret_key"] == modes["db.sqlite3"] == "0o600"
    assert (data / "secret_key").read_text() == "an-old-development-key-0123456789"  # the same key, kept
    assert modes["."] == "0o755"  # a folder the operator made is theirs to set
