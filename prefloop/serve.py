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
import socket
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


def _port(value: str) -> str:
    """A TCP port, checked before any process starts: the web server refused 99999 only after both workers had
    started, in a traceback (OverflowError), and "abc" below a line saying PrefLoop was serving on it."""
    if not (value.strip().isdecimal() and 1 <= int(value) <= 65535):  # not isdigit: "²" is a digit int() refuses
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535 (--port, or PREFLOOP_PORT), got {value!r}")
    return str(int(value))


def _cannot_serve(host: str, port: int) -> str | None:
    """Why the web server could not listen on host:port (a host name no resolver knows, an address not this
    machine's, a port in use or kept for root), or None: tried by binding it once, before any process starts. The
    web server said so only after both workers had started, and no flag was named."""
    ipv6 = host.startswith("[") and host.endswith("]")  # runserver's IPv6 form, [::]; any other host it binds as IPv4
    if ":" in host and not ipv6:  # runserver refuses a bare IPv6 address too, naming no flag
        return f"an IPv6 address goes in brackets: --host [{host}]"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host[1:-1] if ipv6 else host, port,
                                                             socket.AF_INET6 if ipv6 else socket.AF_INET,
                                                             socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as exc:  # socket.gaierror; a name IDNA cannot encode
        return f"no address for this host ({getattr(exc, 'strerror', None) or exc})"
    try:
        with socket.socket(family, kind, proto) as probe:  # no IPv6 on this machine: refused here
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server sets it (TIME_WAIT)
            probe.bind(address)
    except OSError as exc:
        return f"cannot listen there ({exc.strerror or exc})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("PREFLOOP_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=_port, default=os.environ.get("PREFLOOP_PORT", "8000"))
    args = parser.parse_args(argv)
    problem = _cannot_serve(args.host, int(args.port))
    if problem:
        parser.error(f"--host {args.host} --port {args.port} (or PREFLOOP_HOST, PREFLOOP_PORT): {problem}")
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="prefloop.settings", PYTHONUNBUFFERED="1")
    def worker(queue: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "prefloop", "worker", "-Q", queue, "-n", f"{queue}@%h",
                "--pool", "solo", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]

    gpu_queue = os.environ.get("PREFLOOP_GPU_QUEUE", "").strip() or "gpu"  # as settings and the Procfile read it
    commands = {"web": [sys.executable, "manage.py", "runserver", f"{args.host}:{args.port}", "--noreload"],
                "worker": worker(gpu_queue)}
    if gpu_queue != "default":  # one worker when both are the same queue
        commands["import-worker"] = worker("default")
    # Workers are killed outright, here and when this process dies: a warm shutdown finished the job first (a
    # training run's minutes), and the next start resumes it anyway (jobs.lifecycle.requeue_interrupted).
    death = {"web": signal.SIGTERM, "worker": signal.SIGKILL, "import-worker": signal.SIGKILL}
    # Each in a session of its own, so Ctrl-C reaches this process alone: the terminal's SIGINT to every process
    # started the workers' warm shutdown, whatever this process then sent them.
    procs = {name: subprocess.Popen(cmd, env=env, start_new_session=True,  # noqa: PLW1509
                                    preexec_fn=_dies_with_parent(death[name]))
             for name, cmd in commands.items()}
    print(f"PrefLoop is serving http://{args.host}:{args.port}/ with two Celery workers (GPU queue, imports). "
          "Ctrl-C stops them all.", flush=True)
    stopped: set[str] = set()

    def stop(*_):
        for name, proc in procs.items():
            if proc.poll() is None and name not in stopped:
                stopped.add(name)
                proc.send_signal(death[name])

    def on_signal(*_):
        if not stopped:
            print("PrefLoop is stopping; a job that was running resumes at the next start.", flush=True)
        stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
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
    # a process that ended by itself, or not as it was told to, is a failure; one ended by its stop signal is not
    failed = [n for n, p in procs.items() if p.returncode != 0 and not (n in stopped and p.returncode == -death[n])]
    for name in failed:
        print(f"PrefLoop: {name} ended with exit status {procs[name].returncode}", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
