"""Fault-test fixtures: a real `celery worker` subprocess on the test database and a private broker, which a test can
SIGKILL and start again, and helpers to send tasks to it and wait for the database to show an outcome."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
CELERY = Path(sys.executable).with_name("celery")
# With Redis a killed worker's task comes back after the visibility timeout: short here, so the test can wait it out.
TASK_TIME_LIMIT = 60
VISIBILITY_TIMEOUT = TASK_TIME_LIMIT + 5


def database_url() -> str:
    """The URL of the test database this process uses, for the worker to use the same one."""
    from django.db import connection

    conf = connection.settings_dict
    if conf["ENGINE"].endswith("sqlite3"):
        name = str(conf["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            pytest.skip("fault tests need a file database that a worker process can open")
        return f"sqlite:///{name}"
    if conf["ENGINE"].endswith("postgresql"):
        user = quote(conf["USER"] or "", safe="")
        password = quote(conf["PASSWORD"] or "", safe="")
        return f"postgres://{user}:{password}@{conf['HOST'] or '127.0.0.1'}:{conf['PORT'] or 5432}/{conf['NAME']}"
    pytest.skip(f"no worker URL for {conf['ENGINE']}")


class Broker:
    """A broker no other test or server shares: a filesystem broker in the worker's data folder, or a spare Redis
    database (the services pass)."""

    def __init__(self, data_dir: Path):
        base = os.environ.get("CELERY_BROKER_URL", "")
        self.is_redis = base.startswith(("redis://", "rediss://"))
        if self.is_redis:
            parts = urlsplit(base)
            self.url = urlunsplit((parts.scheme, parts.netloc, "/2", "", ""))
            self.transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT}
            import redis

            redis.Redis.from_url(self.url).flushdb()
        else:
            folder = data_dir / "broker"
            for sub in ("queue", "processed", "control"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            self.url = "filesystem://"
            self.transport_options = {
                "control_folder": str(folder / "control"), "data_folder_in": str(folder / "queue"),
                "data_folder_out": str(folder / "queue"), "processed_folder": str(folder / "processed"),
                "store_processed": False,
            }

    def send(self, task, *args) -> float:
        """Queue task(*args) (routed as in production, generation and training to the gpu queue); returns the time."""
        from kombu import Connection

        with Connection(self.url, transport_options=self.transport_options) as conn:
            task.apply_async(args, connection=conn)
        return time.time()


class Worker:
    """`celery -A prefloop worker -Q default,gpu --pool solo` as a subprocess with the test's database."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env, self.log_dir, self.proc, self.count = env, log_dir, None, 0

    def start(self, timeout: float = 90) -> Worker:
        assert self.proc is None or self.proc.poll() is not None, "a worker is already running"
        self.count += 1
        self.log = self.log_dir / f"worker-{self.count}.log"
        argv = [str(CELERY), "-A", "prefloop", "worker", "-Q", "default,gpu", "--pool", "solo", "--concurrency", "1",
                "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"fault{self.count}-{os.getpid()}@%h",
                "--loglevel", "INFO"]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_for(lambda: " ready." in self.log.read_text() or self.proc.poll() is not None, timeout, "worker ready",
                 self)
        assert self.proc.poll() is None, f"the worker exited at start:\n{self.tail()}"
        return self

    def kill(self) -> None:
        """SIGKILL the worker and anything it started, as the out-of-memory killer or a power cut would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except (OSError, AttributeError):
            return "(no worker log)"


def wait_for(predicate: Callable[[], object], timeout: float, what: str, worker: Worker | None = None,
             interval: float = 0.1):
    """Poll until predicate() is truthy; fail naming what never happened (with the worker's log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    log = f"\nworker log:\n{worker.tail()}" if worker is not None else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{log}")


@pytest.fixture
def worker_data_dir(tmp_path) -> Path:
    path = tmp_path / "data"
    (path / "models").mkdir(parents=True)
    return path


@pytest.fixture
def broker(worker_data_dir) -> Broker:
    return Broker(worker_data_dir)


@pytest.fixture
def worker(transactional_db, worker_data_dir, broker, tmp_path):
    """A worker (not yet started) on the test database, the private broker and its own data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_SECRET"))}
    env.update(
        DJANGO_SETTINGS_MODULE="prefloop.settings", DATABASE_URL=database_url(), CELERY_BROKER_URL=broker.url,
        PREFLOOP_DATA_DIR=str(worker_data_dir), PREFLOOP_TASK_TIME_LIMIT=str(TASK_TIME_LIMIT),
        PREFLOOP_BROKER_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT), PREFLOOP_TASKS_EAGER="0",
        PREFLOOP_TRAIN_PROCESSES="1", PYTHONUNBUFFERED="1",
    )
    w = Worker(env, tmp_path)
    yield w
    w.stop()


@pytest.fixture
def tiny_version(transactional_db, tiny_model_dir):
    """The tiny model registered as the current version (the base of the lineage)."""
    from generation.models import ModelVersion

    return ModelVersion.objects.create(name="tiny-base", path=str(tiny_model_dir), is_current=True)


@pytest.fixture(scope="session")
def slow_model_dir(tmp_path_factory) -> Path:
    """A wider, deeper tiny model with a 2048-token context: about 8 s for 16 prompts x 8 answers x 400 tokens on two
    quiet cores (AMX bf16 or fp32 alike), so a job that samples it lasts long enough to watch on a fast machine."""
    from tests.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("slow") / "model", hidden_size=256, layers=4, context=2048)


@pytest.fixture
def slow_version(transactional_db, slow_model_dir):
    """The slow tiny model registered as the current version, for tests that watch a job while it samples."""
    from generation.models import ModelVersion

    return ModelVersion.objects.create(name="tiny-base", path=str(slow_model_dir), is_current=True)
