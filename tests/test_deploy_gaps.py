"""Gaps an audit of the deployment found, each shown closed: a local /healthz probe answered 400, a client that
reached gunicorn directly escaped the sign-in lockout with a new X-Forwarded-For per guess, production started with
the env example's secret key, "a.org, b.org" in ALLOWED_HOSTS refused b.org, `.env` could be committed, and the GPU
worker's unit ignored PREFLOOP_GPU_QUEUE. Production settings are checked in fresh subprocesses."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-only-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOP"
PASSWORD = "pw-admin-123"
LOGIN = "/accounts/login/"


def start(tmp_path: Path, code: str = "", **env) -> subprocess.CompletedProcess:
    """django.setup() with production settings (a good key, public host names) and `env` on top, then `code`."""
    full = {k: v for k, v in os.environ.items() if k not in {
        "DEBUG", "DJANGO_SECRET_KEY", "SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL"}}
    full.update(DJANGO_SETTINGS_MODULE="prefloop.settings", PREFLOOP_PRODUCTION="1", DJANGO_SECRET_KEY=SECRET,
                PREFLOOP_DATA_DIR=str(tmp_path / "data"), ALLOWED_HOSTS="prefloop.example.org")
    full.update(env)
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + code], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=120)


# --- /healthz answers a local probe whatever its Host -----------------------------------------------------------

@pytest.mark.django_db
def test_healthz_answers_a_probe_by_address_and_no_other_path_skips_the_host_check(settings):
    settings.ALLOWED_HOSTS = ["prefloop.example.org"]
    client = Client(raise_request_exception=False)
    for host in ("127.0.0.1:8000", "localhost:8000", "10.0.0.5:8000", "prefloop.example.org"):
        response = client.get("/healthz", HTTP_HOST=host)
        assert response.status_code == 200 and response.json()["status"] == "ok", (host, response.status_code)
    for path in ("/accounts/login/", "/healthz/", "/healthzx", "/api/v1/versions", "/healthz/../accounts/login/"):
        assert client.get(path, HTTP_HOST="127.0.0.1:8000").status_code == 400, path
    assert client.post("/healthz", HTTP_HOST="127.0.0.1:8000").status_code == 400  # only GET skips it
    assert client.get("/accounts/login/", HTTP_HOST="prefloop.example.org").status_code == 200
    # and its answer keeps the headers of every other page (it lost the CSP and X-Frame-Options)
    headers = client.get("/healthz", HTTP_HOST="127.0.0.1:8000").headers
    assert "Content-Security-Policy" in headers and headers["X-Frame-Options"] == "DENY"


def test_healthz_answers_a_local_probe_over_http_in_production(tmp_path):
    """The shipped setup: gunicorn on 127.0.0.1:8000, ALLOWED_HOSTS the public name, the HTTPS redirect on."""
    code = """
from django.test import Client
client = Client(raise_request_exception=False)
print(client.get("/healthz", HTTP_HOST="127.0.0.1:8000").status_code,
      client.get("/accounts/login/", HTTP_HOST="127.0.0.1:8000").status_code)
"""
    done = start(tmp_path, code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["200", "400"], done.stdout


# --- X-Forwarded-For and X-Forwarded-Proto only from PREFLOOP_TRUSTED_PROXIES -----------------------------------

@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True, is_superuser=True)


def _sign_in(client: Client, password: str, forwarded_for: str):
    return client.post(LOGIN, {"username": "admin", "password": password, "next": "/"},
                       HTTP_X_FORWARDED_FOR=forwarded_for)


@pytest.mark.django_db
def test_a_client_that_bypasses_the_proxy_cannot_pick_a_new_address_per_guess(admin_user, settings):
    """The attack: gunicorn reachable directly (a cluster's --bind 0.0.0.0:8000), PREFLOOP_TRUSTED_PROXY_COUNT=1
    as the env example sets it, and 30 wrong passwords from one address, each with a new X-Forwarded-For. Each was
    counted for a different client, so none was locked out and the right password still signed in."""
    settings.PREFLOOP_TRUSTED_PROXY_COUNT = 1
    attacker = Client(REMOTE_ADDR="203.0.113.5")
    statuses = [_sign_in(attacker, "wrong", f"198.51.100.{n + 1}").status_code for n in range(30)]
    assert 429 in statuses
    locked = _sign_in(attacker, PASSWORD, "198.51.100.251")
    assert locked.status_code == 429 and "_auth_user_id" not in attacker.session
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.5"}


@pytest.mark.django_db
def test_through_the_trusted_proxy_the_lockout_keys_on_the_forwarded_client(admin_user, settings):
    """The same 30 guesses through nginx on this machine (127.0.0.1, the default PREFLOOP_TRUSTED_PROXIES) are 30
    clients, one guess each; ten from one forwarded client lock that client alone."""
    settings.PREFLOOP_TRUSTED_PROXY_COUNT = 1
    proxy = Client(REMOTE_ADDR="127.0.0.1")
    statuses = [_sign_in(proxy, "wrong", f"198.51.100.{n + 1}").status_code for n in range(30)]
    assert 429 not in statuses
    assert AccessAttempt.objects.filter(ip_address="198.51.100.1").exists()
    assert not AccessAttempt.objects.filter(ip_address="127.0.0.1").exists()
    for _ in range(settings.PREFLOOP_LOGIN_MAX_FAILURES):
        _sign_in(proxy, "wrong", "192.0.2.9")
    assert _sign_in(proxy, PASSWORD, "192.0.2.9").status_code == 429
    owner = Client(REMOTE_ADDR="127.0.0.1")
    assert _sign_in(owner, PASSWORD, "192.0.2.10").status_code == 302 and "_auth_user_id" in owner.session
    # A proxy on another machine is trusted once its address (or network) is listed.
    settings.PREFLOOP_TRUSTED_PROXIES = ["10.1.0.0/16"]
    _sign_in(Client(REMOTE_ADDR="10.1.2.3"), "wrong", "192.0.2.77")
    assert AccessAttempt.objects.filter(ip_address="192.0.2.77").exists()


@pytest.mark.django_db
def test_x_forwarded_proto_is_read_only_from_a_trusted_proxy(settings):
    """A client reaching gunicorn directly said "https" over plain HTTP and skipped the HTTPS redirect."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    direct = Client(REMOTE_ADDR="203.0.113.5").get(LOGIN, HTTP_X_FORWARDED_PROTO="https")
    assert direct.status_code == 301 and direct["Location"].startswith("https://")
    proxied = Client(REMOTE_ADDR="127.0.0.1").get(LOGIN, HTTP_X_FORWARDED_PROTO="https")
    assert proxied.status_code == 200


def test_trusted_proxies_are_read_as_a_list_and_a_bad_one_is_refused(tmp_path):
    show = "from django.conf import settings; print(settings.PREFLOOP_TRUSTED_PROXIES)"
    done = start(tmp_path, show, PREFLOOP_TRUSTED_PROXIES=" 10.0.0.0/24, 192.0.2.7 ,")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "['10.0.0.0/24', '192.0.2.7']"
    done = start(tmp_path, PREFLOOP_TRUSTED_PROXIES="nginx.internal")
    assert done.returncode != 0 and "PREFLOOP_TRUSTED_PROXIES: 'nginx.internal' is not an address" in done.stderr
    default = start(tmp_path, show)
    assert default.stdout.splitlines()[-1] == "['127.0.0.1', '::1']", default.stderr[-2000:]


# --- the secret key ---------------------------------------------------------------------------------------------

def _example_secret_key() -> str:
    text = (ROOT / "deploy" / "prefloop.env.example").read_text()
    return re.search(r"^DJANGO_SECRET_KEY=(.*)$", text, re.M).group(1)


@pytest.mark.parametrize(("key", "why"), [
    ("example", "is the placeholder of deploy/prefloop.env.example"),
    ("x" * 60, "has 1 different characters"),
    ("abcdefghij" * 4, "is 40 characters long"),
    ("django-insecure-" + SECRET, "startproject"),
])
def test_production_refuses_a_weak_or_example_secret_key(tmp_path, key, why):
    key = _example_secret_key() if key == "example" else key
    done = start(tmp_path, DJANGO_SECRET_KEY=key)
    assert done.returncode != 0 and "ImproperlyConfigured: DJANGO_SECRET_KEY " in done.stderr, done.stderr[-2000:]
    assert why in done.stderr and "secrets.token_urlsafe(60)" in done.stderr
    assert key not in done.stderr  # the message names the problem, never the key


def test_outside_production_any_key_starts_and_a_good_one_starts_in_production(tmp_path):
    done = start(tmp_path, "print('started')", PREFLOOP_PRODUCTION=None, DJANGO_SECRET_KEY=_example_secret_key())
    assert done.returncode == 0 and done.stdout.split()[-1] == "started", done.stderr[-2000:]
    done = start(tmp_path, "print('started')")
    assert done.returncode == 0 and done.stdout.split()[-1] == "started", done.stderr[-2000:]


# --- comma lists --------------------------------------------------------------------------------------------------

def test_host_and_origin_lists_are_stripped_of_spaces(tmp_path):
    code = """
import json
from django.conf import settings
from django.test import Client
client = Client(raise_request_exception=False)
print(json.dumps([settings.ALLOWED_HOSTS, settings.CSRF_TRUSTED_ORIGINS,
                  client.get("/", HTTP_HOST="b.example.org", secure=True).status_code]))
"""
    done = start(tmp_path, code, ALLOWED_HOSTS="a.example.org, b.example.org ,",
                 CSRF_TRUSTED_ORIGINS=" https://a.example.org,  https://b.example.org")
    assert done.returncode == 0, done.stderr[-2000:]
    hosts, origins, status = json.loads(done.stdout.splitlines()[-1])
    assert hosts == ["a.example.org", "b.example.org"]
    assert origins == ["https://a.example.org", "https://b.example.org"]
    assert status == 302  # to the sign-in page: the host was accepted (400 when it was " b.example.org")


# --- files that ship -----------------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git and the checkout")
def test_a_dot_env_file_of_secrets_is_ignored_by_git():
    """The Procfile and the docs tell people to put the settings, secret key included, in `.env`."""
    assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT).returncode == 0


def test_the_gpu_worker_unit_reads_the_gpu_queue_from_the_settings():
    """settings.py routes model tasks to PREFLOOP_GPU_QUEUE; a unit fixed at `-Q gpu` left them queued when it was
    set to anything else."""
    unit = (ROOT / "deploy" / "prefloop-gpu-worker.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert "-Q ${PREFLOOP_GPU_QUEUE}" in exec_start and "-Q gpu" not in exec_start
    # systemd has no ${VAR:-default}: the default is set in the unit, and /etc/prefloop.env overrides it.
    assert "\nEnvironment=PREFLOOP_GPU_QUEUE=gpu\n" in unit and "\nEnvironmentFile=/etc/prefloop.env\n" in unit


@pytest.mark.django_db
def test_forwarded_headers_dropped_from_an_untrusted_address_are_said_once_in_the_log(caplog, settings):
    """Behind a proxy the app does not trust, every request lost X-Forwarded-Proto and was redirected to HTTPS again
    and again with no word of why."""
    from prefloop import proxies

    proxies._TOLD.clear()
    client = Client()
    with caplog.at_level("WARNING", logger="prefloop.proxies"):
        for _ in range(3):
            client.get("/accounts/login/", REMOTE_ADDR="10.9.8.7", HTTP_X_FORWARDED_PROTO="https")
        client.get("/accounts/login/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_PROTO="https")  # trusted: quiet
    told = [r.getMessage() for r in caplog.records if r.name == "prefloop.proxies"]
    assert told == ["X-Forwarded-Proto from 10.9.8.7 ignored: it is not in PREFLOOP_TRUSTED_PROXIES (127.0.0.1, ::1); "
                    "if it is your proxy, add it there (docs/deployment.md)"]
