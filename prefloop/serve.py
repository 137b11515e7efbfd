"""`make run`: the web server and a Celery worker in the foreground together; Ctrl-C stops both.

    python -m prefloop.serve [--host 127.0.0.1] [--port 8000]
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("PREFLOOP_HOST", "127.0.0.1"))
    parser.add_argument("--port", default=os.environ.get("PREFLOOP_PORT", "8000"))
    args = parser.parse_args(argv)
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="prefloop.settings", PYTHONUNBUFFERED="1")
    queues = f"default,{os.environ.get('PREFLOOP_GPU_QUEUE', 'gpu')}"
    commands = {
        "web": [sys.executable, "manage.py", "runserver", f"{args.host}:{args.port}", "--noreload"],
        "worker": [sys.executable, "-m", "celery", "-A", "prefloop", "worker", "-Q", queues, "--pool", "solo",
                   "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
    }
    procs = {name: subprocess.Popen(cmd, env=env) for name, cmd in commands.items()}
    print(f"PrefLoop is serving http://{args.host}:{args.port}/ with a Celery worker. Ctrl-C stops both.", flush=True)

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
