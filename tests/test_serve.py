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
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _migrated_env(tmp_path, **extra) -> dict:
    """A process environment of the embedded default (SQLite, filesystem broker) in tmp_path, its database migrated."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "CACHE_URL"))}
    env.update(PREFLOOP_DATA_DIR=str(tmp_path / "data"), DJANGO_SETTINGS_MODULE="prefloop.settings", **extra)
    env.pop("PREFLOOP_SERVICES", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=300)
    return env


@contextmanager
def _serving(env: dict, port: int, stdout):
    """`python -m prefloop.serve` in a session of its own; yields (serve, its children once looked at); afterwards
    whatever of them still runs is killed, so a failed test leaves no web server or worker behind."""
    serve = subprocess.Popen([sys.executable, "-m", "prefloop.serve", "--port", str(port)], cwd=ROOT, env=env,
                             stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True)
    children: list[psutil.Process] = []
    try:
        yield serve, children
    finally:
        for process in children:
            if process.is_running():
                process.kill()
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_killing_serve_outright_ends_its_web_server_and_worker(tmp_path):
    env = _migrated_env(tmp_path)
    port = _free_port()
    with _serving(env, port, subprocess.DEVNULL) as (serve, children):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _answers(f"http://127.0.0.1:{port}/healthz"):
            time.sleep(0.5)
        children += psutil.Process(serve.pid).children()
        assert len(children) == 3 and _answers(f"http://127.0.0.1:{port}/healthz")
        serve.kill()  # kill -9: no handler of serve's runs
        serve.wait()
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
        assert not _answers(f"http://127.0.0.1:{port}/healthz")


SETUP = """
from generation.backends.base import SamplingConfig
from generation.models import Prompt
from generation.services import register_version, start_generation_job
version = register_version("base", {model!r})
for k in range(400):
    Prompt.objects.create(text=f"Tell me about the number {{k}} at length.", split="train")
job = start_generation_job(version, n_prompts=400, config=SamplingConfig(n=2, max_new_tokens=256, seed=0))
print(job.pk)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and signals as on Linux")
def test_ctrl_c_stops_serve_at_once_while_a_job_runs_and_the_job_resumes_later(tmp_path, tiny_model_dir):
    """Ctrl-C while a worker ran a job: the terminal's SIGINT and serve's SIGTERM started the worker's warm shutdown,
    which waited for the job; serve killed it after 15 s and `make run` ended in "Error 1" (found by an outside
    test of the README). Now the workers are killed at once, serve ends 0, and the job waits to be resumed."""
    env = _migrated_env(tmp_path, PREFLOOP_DTYPE="float32")
    made = subprocess.run([sys.executable, "manage.py", "shell", "-c", SETUP.format(model=str(tiny_model_dir))],
                          cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=300)
    job_id = int(made.stdout.split()[-1])

    def status() -> str:  # read straight from the database file: a manage.py shell per look takes seconds
        import sqlite3

        with sqlite3.connect(tmp_path / "data" / "db.sqlite3", timeout=30) as db:
            return db.execute("SELECT status FROM generation_generationjob WHERE id = ?", (job_id,)).fetchone()[0]

    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out, _serving(env, port, out) as (serve, children):
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and status() != "running":
            time.sleep(0.2)
        children += psutil.Process(serve.pid).children()
        assert len(children) == 3
        os.killpg(serve.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground process group
        started = time.monotonic()
        assert serve.wait(timeout=30) == 0, log.read_text()[-3000:]
        assert time.monotonic() - started < 10
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
        said = log.read_text()
        assert "a job that was running resumes at the next start" in said and "Traceback" not in said
        # killed, not finished: still running in the database, for the next start to resume
        assert status() == "running"


@pytest.mark.parametrize("port", ["99999", "0", "-1", "abc", "", "²"])  # "²": isdigit() but not int()
def test_a_port_no_server_can_take_is_refused_before_anything_starts(port, monkeypatch, capsys):
    """From an outside probe: --port 99999 (or PREFLOOP_PORT=99999) started both workers, then the web server failed
    in a traceback (OverflowError); "abc" was refused only below a line saying PrefLoop was serving on it."""
    from prefloop import serve

    def started(*args, **kwargs):
        raise AssertionError(f"a process was started: {args[0]}")

    monkeypatch.setattr(subprocess, "Popen", started)
    with pytest.raises(SystemExit) as exited:
        serve.main(["--port", port])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"error: argument --port: expected a port number from 1 to 65535 (--port, or PREFLOOP_PORT), got {port!r}")


def test_a_host_or_port_the_web_server_cannot_listen_on_is_refused_before_anything_starts(monkeypatch, capsys):
    """From an outside probe: --host nosuch.invalid started both workers, then the web server failed ("Name or
    service not known") naming no flag; a port in use did the same. Each is now tried before any process starts."""
    import socket

    from prefloop import serve

    def started(*args, **kwargs):
        raise AssertionError(f"a process was started: {args[0]}")

    monkeypatch.setattr(subprocess, "Popen", started)
    with pytest.raises(SystemExit) as exited:
        serve.main(["--host", "nosuch.invalid", "--port", "8000"])
    assert exited.value.code == 2
    assert "error: --host nosuch.invalid --port 8000 (or PREFLOOP_HOST, PREFLOOP_PORT): no address for this host" in \
        capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            serve.main(["--host", "127.0.0.1", "--port", str(port)])
    assert exited.value.code == 2
    assert f"--port {port} (or PREFLOOP_HOST, PREFLOOP_PORT): cannot listen there (Address already in use)" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):  # runserver refuses a bare IPv6 address too: the form it takes is said
        serve.main(["--host", "::1", "--port", "8000"])
    assert "--host ::1 --port 8000 (or PREFLOOP_HOST, PREFLOOP_PORT): an IPv6 address goes in brackets: --host [::1]" \
        in capsys.readouterr().err


@pytest.mark.parametrize("host", ["[::]", "[::1]", "localhost", "0.0.0.0"])
def test_a_host_the_web_server_listens_on_is_taken(host, monkeypatch):
    """Review of 30cfbe2: the check resolved --host [::], runserver's IPv6 form, with its brackets ("no address for
    this host") and refused it; and it tried a name's first address of any family, where runserver binds IPv4 (a
    localhost that resolves to ::1 first was tried on IPv6)."""
    import socket

    from prefloop import serve

    if host.startswith("[") and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    resolve, tried = socket.getaddrinfo, []

    def ipv6_first(name, port, family=0, *args, **kwargs):  # as /etc/hosts or gai.conf may order localhost
        ipv6 = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))]
        return (ipv6 if name == "localhost" and family == socket.AF_UNSPEC else []) + resolve(name, port, family,
                                                                                               *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", ipv6_first)
    monkeypatch.setattr(socket.socket, "bind", lambda self, address, bind=socket.socket.bind: (
        tried.append(self.family), bind(self, address))[1])
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    tried.clear()
    assert serve._cannot_serve(host, port) is None
    assert tried == [socket.AF_INET6 if host.startswith("[") else socket.AF_INET]
