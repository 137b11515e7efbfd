"""Every number and switch PrefLoop reads from the environment is checked at start, and a bad one stops the app
with a message naming the variable and what it takes (int() said "invalid literal for int() with base 10: 'abc'",
a NaN gate setting passed every comparison, and DEBUG=maybe meant off without a word)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "prefloop" / "settings.py"


def _start(tmp_path, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "PREFLOOP_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "prefloop.settings", **env}
    return subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("PREFLOOP_IMPORT_MAX_ROWS", "abc", "PREFLOOP_IMPORT_MAX_ROWS='abc': expected a whole number"),
    ("PREFLOOP_GATE_MIN_WIN_RATE", "nan", "PREFLOOP_GATE_MIN_WIN_RATE='nan': expected a finite number"),
    ("PREFLOOP_VLLM_GPU_MEMORY", "0", "PREFLOOP_VLLM_GPU_MEMORY='0': expected a number above 0 and at most 1"),
    ("PREFLOOP_TASK_TIME_LIMIT", "-5", "PREFLOOP_TASK_TIME_LIMIT='-5': expected a number at least 1"),
    ("PREFLOOP_BACKEND", "vllm2", "PREFLOOP_BACKEND='vllm2': expected auto, hf or vllm"),
    ("PREFLOOP_TENSORBOARD", "maybe", "PREFLOOP_TENSORBOARD='maybe': expected 1, true, yes or on (or 0, false, no, "
                                      "off)"),
])
def test_a_bad_environment_value_stops_the_app_naming_it(tmp_path, variable, value, expected):
    done = _start(tmp_path, **{variable: value})
    assert done.returncode != 0 and expected in done.stderr, done.stderr[-2000:]


def test_no_number_is_read_from_the_environment_unchecked():
    """No bare int()/float() of the environment is left for a later variable to slip through."""
    text = SETTINGS.read_text()
    assert "int(os.environ" not in text and "float(os.environ" not in text


def test_good_values_start(tmp_path):
    code = ("from django.conf import settings as s; "
            "print(s.PREFLOOP_IMPORT_MAX_ROWS, s.PREFLOOP_GATE_MIN_WIN_RATE, s.DEBUG, s.SECURE_SSL_REDIRECT)")
    env = {**os.environ, "PREFLOOP_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "prefloop.settings",
           "PREFLOOP_IMPORT_MAX_ROWS": " 500 ", "PREFLOOP_GATE_MIN_WIN_RATE": "0.55", "PREFLOOP_TENSORBOARD": "",
           "DEBUG": "express:*", "PREFLOOP_PRODUCTION": "1", "SECURE_SSL_REDIRECT": "", "DJANGO_SECRET_KEY":
           "test-only-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEF",
           "ALLOWED_HOSTS": "example.org"}
    done = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    # DEBUG is also other tools' variable (npm's DEBUG=express:*): anything but a yes is off, as it always was; an
    # empty switch is off, as it always was (SECURE_SSL_REDIRECT= behind a proxy that redirects already)
    assert done.returncode == 0 and done.stdout.split() == ["500", "0.55", "False", "False"], done.stderr[-2000:]


def _read(tmp_path, code: str, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "PREFLOOP_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "prefloop.settings", **env}
    for name in ("PREFLOOP_GPU_QUEUE", "PREFLOOP_JUDGES", "PREFLOOP_LOSS_TERMS", "ALLOWED_HOSTS", "CELERY_BROKER_URL"):
        if name not in env:
            full.pop(name, None)
    return subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=120)


def test_names_and_lists_are_read_as_the_procfile_and_the_docs_read_them(tmp_path):
    """PREFLOOP_GPU_QUEUE set empty routed every model task to the default queue (whose worker runs two at once)
    while the GPU worker, started with ${PREFLOOP_GPU_QUEUE:-gpu}, waited on "gpu"; padded, to a queue no worker
    consumes. PREFLOOP_JUDGES kept the space after a comma in each name (found by an outside review)."""
    code = ("from django.conf import settings as s; from celery import current_app; import prefloop.celery; "
            "print(repr(s.PREFLOOP_GPU_QUEUE), s.CELERY_TASK_ROUTES['training.tasks.*']['queue'], s.PREFLOOP_JUDGES)")
    for value, queue in (("", "gpu"), (" gpu ", "gpu"), ("big-gpu", "big-gpu")):
        done = _read(tmp_path, code, PREFLOOP_GPU_QUEUE=value,
                     PREFLOOP_JUDGES="judges.rules:length_target, judges.rules:prefers_longer ,")
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split(" ", 2)[:2] == [repr(queue), queue], done.stdout
        assert "['judges.rules:length_target', 'judges.rules:prefers_longer']" in done.stdout
    done = _read(tmp_path, code, PREFLOOP_GPU_QUEUE="gpu,default")
    assert done.returncode != 0 and "PREFLOOP_GPU_QUEUE='gpu,default': expected one name" in done.stderr


def test_production_answers_no_test_client_host_unless_told(tmp_path):
    code = "from django.conf import settings as s; print(s.ALLOWED_HOSTS)"
    production = {"PREFLOOP_PRODUCTION": "1", "DJANGO_SECRET_KEY": "test-only-0123456789-abcdefghijklmnopqrstuvwxyz-AB"}
    done = _read(tmp_path, code, **production)
    assert done.returncode == 0 and done.stdout.strip() == "['127.0.0.1', 'localhost']", done.stderr[-2000:]
    assert "testserver" in _read(tmp_path, code).stdout  # development keeps Django's test client's host


def test_the_default_broker_queues_without_a_warning(tmp_path):
    """kombu warned "No hostname was supplied. Reverting to default 'localhost'" at every start of `make run` and
    every job queued with the default folder broker, a line people read as an error (found by an outside test)."""
    code = ("import logging; logging.basicConfig(); from prefloop.celery import app; "
            "print(app.connection_for_write().info()['transport'])")
    done = _read(tmp_path, code)
    assert done.returncode == 0 and done.stdout.strip() == "filesystem", done.stderr[-2000:]
    assert "No hostname was supplied" not in done.stderr
