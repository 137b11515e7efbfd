"""Which process runs a job in the foreground (a command without --queue, `run_loop`, `evaluate`), and whether it is
gone: a command killed outright (`kill -9`, the out-of-memory killer, a closed terminal that sent no signal it
handles) ends nothing, and its job read "running" until someone pressed Cancel on it, minutes later.

A runner is written as "host pid-namespace pid start-time". It is only ever judged gone from the same host and the
same PID namespace (a container of its own has one), where the kernel answers for certain: no process has that pid,
or the one that has it started at another time (the pid was used again). Anywhere else the answer is "cannot tell",
and the job is left to the silence rule (jobs.models.SILENT_AFTER_S) as before.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path


def _namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return "-"


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), "-" where /proc has none,
    None when there is no such process or it has ended (a zombie: dead, its parent yet to collect its status)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return "-"
    # the command name (field 2) is in parentheses and may hold spaces and parentheses itself
    fields = stat[stat.rindex(")") + 2:].split()
    if fields and fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else "-"


def this_process() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()} {_namespace()} {pid} {_started(pid) or '-'}"[:120]


def gone(runner: str) -> bool:
    """True only when `runner` (as `this_process` wrote it) is certainly no longer running: see the module's note."""
    parts = runner.split(" ")
    if len(parts) != 4 or not parts[2].isdigit():
        return False
    host, namespace, pid, started = parts[0], parts[1], int(parts[2]), parts[3]
    if host != socket.gethostname() or namespace == "-" or namespace != _namespace():
        return False
    if pid == os.getpid():
        return False
    now = _started(pid)
    if now is None:  # no such process, or a dead one
        return True
    return started != "-" and now != "-" and now != started


def described(runner: str) -> str:
    """"pid 4242 on host-1", for a sentence."""
    parts = runner.split(" ")
    return f"pid {parts[2]} on {parts[0]}" if len(parts) == 4 else runner
