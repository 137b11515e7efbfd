"""`make run` (prefloop.serve): killed outright, it takes its web server and both workers with it.

An outside probe killed serve with kill -9: the web server and the worker went on as orphans, the worker finished its
job, and the next `make run` started a second worker that resumed the same job meanwhile."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_killing_serve_outright_ends_its_web_server_and_worker(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "CACHE_URL"))}
    env.update(PREFLOOP_DATA_DIR=str(tmp_path / "data"), DJANGO_SETTINGS_MODULE="prefloop.settings")
    env.pop("PREFLOOP_SERVICES", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=300)
    port = _free_port()
    serve = subprocess.Popen([sys.executable, "-m", "prefloop.serve", "--port", str(port)], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _answers(f"http://127.0.0.1:{port}/healthz"):
            time.sleep(0.5)
        children = psutil.Process(serve.pid).children()
        assert len(children) == 3 and _answers(f"http://127.0.0.1:{port}/healthz")
        serve.kill()  # kill -9: no handler of serve's runs
        serve.wait()
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
        assert not _answers(f"http://127.0.0.1:{port}/healthz")
    finally:
        for process in children:
            if process.is_running():
                process.kill()
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
