"""The deploy units: /healthz answers for the database and the broker, and the Procfile runs under honcho."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_healthz_is_200_when_the_database_and_broker_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


@pytest.mark.django_db
def test_healthz_is_503_naming_the_broker_when_it_is_down_and_shows_no_secret(client):
    from prefloop.celery import app

    before = app.conf.broker_url, app.conf.broker_write_url
    # Nothing listens on port 1. (Celery resolves the write URL from the broker URL once: set both.)
    app.conf.broker_url = app.conf.broker_write_url = "redis://:s3cret-password@127.0.0.1:1/0"
    try:
        response = client.get("/healthz")
    finally:
        app.conf.broker_url, app.conf.broker_write_url = before
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["broker"] and body["checks"]["database"] == "ok"
    assert "s3cret" not in response.content.decode() and "127.0.0.1" not in response.content.decode()


def _get(url: str) -> tuple[int, dict | None]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_honcho_starts_the_procfile_and_healthz_answers(tmp_path):
    honcho = shutil.which("honcho", path=str(Path(sys.executable).parent))
    if honcho is None:
        pytest.skip("honcho is not installed (pip install -r requirements.txt)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "CACHE_URL"))}
    env.update(PREFLOOP_DATA_DIR=str(tmp_path / "data"), DJANGO_SETTINGS_MODULE="prefloop.settings",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1",
               WEB_CONCURRENCY="1", WORKER_CONCURRENCY="1")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=300)
    port = _free_port()
    log = open(tmp_path / "honcho.log", "w+")  # noqa: SIM115  (read back below)
    proc = subprocess.Popen([honcho, "start", "-f", str(ROOT / "Procfile"), "-d", str(ROOT), "-p", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        status, body, output = 0, None, ""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            status, body = _get(f"http://127.0.0.1:{port}/healthz")
            log.seek(0)
            output = log.read()
            workers_ready = [line for line in output.splitlines() if "worker.1" in line and " ready." in line]
            if status == 200 and len(workers_ready) == 2:  # the web app answers and both workers took their queues
                break
            time.sleep(1)
        assert status == 200, output[-3000:]
        assert body == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
        for name in ("web.1", "worker.1", "gpu-worker.1"):
            assert f"{name} started" in output, output[-3000:]
        assert "default@" in output and "gpu@" in output and len(workers_ready) == 2, output[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)  # honcho passes it on to every process and waits for them
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert proc.returncode is not None
    assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 0  # stopped: nothing answers any more
