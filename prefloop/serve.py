"""`make run`: the web server and two Celery workers in the foreground together; Ctrl-C stops them all.

One worker takes the GPU queue (sampling, training, comparisons and loop runs, one at a time: each loads a model),
the other the default queue (imports uploaded on the import page), so an upload is not queued behind a training run.

    python -m prefloop.serve [--host 127.0.0.1] [--port 8000]

If this process is killed outright (kill -9, an out-of-memory kill), all end with it (on Linux): a worker left
running would go on with its job while the next `make run` starts another worker that resumes the same job.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def _dies_with_parent(sig: int):
    """A preexec_fn (Linux) that has the child sent `sig` when this process dies, however it dies."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def arrange() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before the call: nobody would send the signal
            os.kill(os.getpid(), sig)

    return arrange


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("PREFLOOP_HOST", "127.0.0.1"))
    parser.add_argument("--port", default=os.environ.get("PREFLOOP_PORT", "8000"))
    args = parser.parse_args(argv)
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="prefloop.settings", PYTHONUNBUFFERED="1")
    def worker(queue: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "prefloop", "worker", "-Q", queue, "-n", f"{queue}@%h",
                "--pool", "solo", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]

    gpu_queue = os.environ.get("PREFLOOP_GPU_QUEUE", "").strip() or "gpu"  # as settings and the Procfile read it
    commands = {"web": [sys.executable, "manage.py", "runserver", f"{args.host}:{args.port}", "--noreload"],
                "worker": worker(gpu_queue)}
    if gpu_queue != "default":  # one worker when both are the same queue
        commands["import-worker"] = worker("default")
    # Workers are killed outright: a warm shutdown would finish its job first, as the new worker resumes it.
    death = {"web": signal.SIGTERM, "worker": signal.SIGKILL, "import-worker": signal.SIGKILL}
    procs = {name: subprocess.Popen(cmd, env=env, preexec_fn=_dies_with_parent(death[name]))  # noqa: PLW1509
             for name, cmd in commands.items()}
    print(f"PrefLoop is serving http://{args.host}:{args.port}/ with two Celery workers (GPU queue, imports). "
          "Ctrl-C stops them all.", flush=True)

    def stop(*_):
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
    finally:
        stop()
        deadline = time.monotonic() + 15
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
    failed = [n for n, p in procs.items() if p.returncode not in (0, -signal.SIGTERM, -signal.SIGINT)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
