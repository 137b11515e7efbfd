"""Production settings, checked in fresh subprocesses: `check --deploy` is clean, the secret key is required,
static files are served by whitenoise, and Celery is configured to survive a lost worker."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-only-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOP"


def run_django(tmp_path: Path, *args: str, env: dict | None = None, code: str | None = None):
    """Run manage.py (or a Python snippet after django.setup()) with production settings and a private data dir."""
    full_env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "DJANGO_SECRET_KEY", "SECRET_KEY"}}
    full_env.update(
        DJANGO_SETTINGS_MODULE="prefloop.settings", PREFLOOP_PRODUCTION="1", DJANGO_SECRET_KEY=SECRET,
        PREFLOOP_DATA_DIR=str(tmp_path / "data"),
    )
    full_env.update(env or {})
    full_env = {k: v for k, v in full_env.items() if v is not None}
    if code is not None:
        argv = [sys.executable, "-c", "import django; django.setup()\n" + code]
    else:
        argv = [sys.executable, "manage.py", *args]
    return subprocess.run(argv, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_in_production(tmp_path):
    result = run_django(tmp_path, "check", "--deploy", "--fail-level", "WARNING",
                        env={"PREFLOOP_TRUSTED_PROXY_COUNT": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_a_proxy_count_left_at_zero(tmp_path):
    """An outside probe's attack on the shipped deployment (gunicorn on 127.0.0.1 behind nginx, and the env
    example without the setting): a hundred wrong passwords from anywhere, and every account was refused sign-in
    for the window, because every client had the proxy's address. The example sets it and the check says so."""
    result = run_django(tmp_path, "check", "--deploy", "--fail-level", "WARNING",
                        env={"PREFLOOP_TRUSTED_PROXY_COUNT": None})
    assert result.returncode != 0 and "prefloop.W001" in result.stdout + result.stderr
    example = (ROOT / "deploy" / "prefloop.env.example").read_text()
    assert "\nPREFLOOP_TRUSTED_PROXY_COUNT=1\n" in example


def test_check_deploy_flags_debug_left_on(tmp_path):
    """The same check fails when DEBUG is forced on, so the clean result above means something."""
    result = run_django(tmp_path, "check", "--deploy", "--fail-level", "WARNING", env={"DEBUG": "1"})
    assert result.returncode != 0
    assert "security.W018" in result.stdout + result.stderr


def test_production_requires_the_secret_key(tmp_path):
    result = run_django(tmp_path, "check", env={"DJANGO_SECRET_KEY": None})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr
    assert not (tmp_path / "data" / "secret_key").exists()


def test_production_settings(tmp_path):
    code = """
import json
from django.conf import settings
print(json.dumps({
    "debug": settings.DEBUG, "session_secure": settings.SESSION_COOKIE_SECURE, "csrf_secure": settings.CSRF_COOKIE_SECURE,
    "hsts": settings.SECURE_HSTS_SECONDS, "ssl_redirect": settings.SECURE_SSL_REDIRECT,
    "static": settings.STORAGES["staticfiles"]["BACKEND"], "middleware": settings.MIDDLEWARE,
}))
"""
    result = run_django(tmp_path, code=code)
    assert result.returncode == 0, result.stderr
    conf = json.loads(result.stdout.strip().splitlines()[-1])
    assert conf["debug"] is False
    assert conf["session_secure"] and conf["csrf_secure"] and conf["ssl_redirect"]
    assert conf["hsts"] >= 31536000
    assert conf["static"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"
    assert "whitenoise.middleware.WhiteNoiseMiddleware" in conf["middleware"]


def test_production_serves_static_files_and_the_login_page(tmp_path):
    """After collectstatic, the login page renders with hashed static URLs and whitenoise serves them."""
    collect = run_django(tmp_path, "collectstatic", "--noinput", "-v", "0")
    assert collect.returncode == 0, collect.stderr
    code = """
import re
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
client = Client()
page = client.get("/accounts/login/", secure=True)
assert page.status_code == 200, page.status_code
css = re.search(r'href="(/static/prefloop/app\\.[0-9a-f]{12}\\.css)"', page.content.decode()).group(1)
static = client.get(css, secure=True)
body = b"".join(static.streaming_content) if static.streaming else static.content
print(static.status_code, len(body), static.headers.get("Cache-Control", ""))
plain = client.get("/accounts/login/")
print(plain.status_code, plain.headers.get("Location", ""))
"""
    result = run_django(tmp_path, code=code, env={"ALLOWED_HOSTS": "testserver"})
    assert result.returncode == 0, result.stderr
    static_line, redirect_line = result.stdout.strip().splitlines()[-2:]
    status, size, cache_control = static_line.split(" ", 2)
    assert status == "200" and int(size) > 0
    assert "max-age" in cache_control  # hashed names are cached for long
    assert redirect_line.startswith("301 https://")  # plain HTTP is redirected to HTTPS


def test_celery_survives_a_lost_worker(tmp_path):
    code = """
import json
from prefloop.celery import app
conf = app.conf
print(json.dumps({
    "acks_late": conf.task_acks_late, "reject": conf.task_reject_on_worker_lost,
    "prefetch": conf.worker_prefetch_multiplier, "time_limit": conf.task_time_limit,
    "soft": conf.task_soft_time_limit, "visibility": (conf.broker_transport_options or {}).get("visibility_timeout"),
    "gen": app.amqp.router.route({}, "generation.tasks.run_generation_job")["queue"].name,
    "train": app.amqp.router.route({}, "training.tasks.run_training")["queue"].name,
    "other": app.amqp.router.route({}, "annotate.tasks.something")["queue"].name,
}))
"""
    env = {"CELERY_BROKER_URL": "redis://127.0.0.1:6399/0", "PREFLOOP_TASK_TIME_LIMIT": "7200"}
    result = run_django(tmp_path, code=code, env=env)
    assert result.returncode == 0, result.stderr
    conf = json.loads(result.stdout.strip().splitlines()[-1])
    assert conf["acks_late"] and conf["reject"] and conf["prefetch"] == 1
    assert conf["time_limit"] == 7200 and 0 < conf["soft"] < 7200
    # Redis redelivers unacked tasks after the visibility timeout: it must outlast the longest task.
    assert conf["visibility"] > conf["time_limit"]
    assert (conf["gen"], conf["train"], conf["other"]) == ("gpu", "gpu", "default")


def test_visibility_timeout_shorter_than_a_task_is_refused(tmp_path):
    env = {"CELERY_BROKER_URL": "redis://127.0.0.1:6399/0", "PREFLOOP_TASK_TIME_LIMIT": "600",
           "PREFLOOP_BROKER_VISIBILITY_TIMEOUT": "300"}
    result = run_django(tmp_path, "check", env=env)
    assert result.returncode != 0
    assert "PREFLOOP_BROKER_VISIBILITY_TIMEOUT (300 s) must exceed PREFLOOP_TASK_TIME_LIMIT (600 s)" in result.stderr


@pytest.mark.parametrize("url", ["postgres://prefloop:pw@127.0.0.1:5432/prefloop", "sqlite:///{tmp}/x.sqlite3"])
def test_database_url_is_honoured(tmp_path, url):
    url = url.format(tmp=tmp_path)
    code = "from django.conf import settings; print(settings.DATABASES['default']['ENGINE'])"
    result = run_django(tmp_path, code=code, env={"DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    engine = "postgresql" if url.startswith("postgres") else "sqlite3"
    assert result.stdout.strip().endswith(f"django.db.backends.{engine}")
