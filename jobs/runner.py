"""Which process runs a job in the foreground (a command without --queue, `run_loop`, `evaluate`), and whether it is
gone: a command killed outright (`kill -9`, the out-of-memory killer, a closed terminal that sent no signal it
handles) ends nothing, and its job read "running" until someone pressed Cancel on it, minutes later.

A runner is written as "host boot-id pid-namespace pid start-time". It is only ever judged gone from the same running
kernel (its boot id: machines that share a host name, cloned images, do not share one) and the same PID namespace (a
container of its own has one), where the kernel answers for certain: no process has that pid, or the one that has it
started at another time (the pid was used again), or it has died and waits to be collected. Anywhere else, or where
/proc cannot tell (hidden from this user, another namespace's), the answer is "cannot tell", and the job is left to
the silence rule (jobs.models.SILENT_AFTER_S) as before. The host name is there for people.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

UNKNOWN = "-"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip() or UNKNOWN
    except (OSError, ValueError):
        return UNKNOWN


def _boot() -> str:
    return _read("/proc/sys/kernel/random/boot_id")


def _namespace() -> str:
    """This process's PID namespace, when /proc is this namespace's own (/proc/self is this pid: a /proc mounted
    from another namespace would name other processes)."""
    try:
        if os.readlink("/proc/self") != str(os.getpid()):
            return UNKNOWN
        return os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return UNKNOWN


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); None when there is no such
    process or it has ended (a zombie: dead, its parent yet to collect it); UNKNOWN when /proc cannot say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        # no entry: no such process, or one /proc hides from this user (hidepid, ProtectProc=invisible)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:
            return UNKNOWN  # it exists, another user's
        return UNKNOWN
    except OSError:
        return UNKNOWN
    # the command name (field 2) is in parentheses and may hold spaces, parentheses and bytes that are not UTF-8
    fields = stat[stat.rfind(b")") + 2:].split()
    if fields and fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode("ascii", "replace") if len(fields) > 19 else UNKNOWN


def this_process() -> str:
    pid = os.getpid()
    host = "".join(c for c in socket.gethostname() if c.isprintable() and not c.isspace())[:40] or UNKNOWN
    return f"{host} {_boot()} {_namespace()} {pid} {_started(pid) or UNKNOWN}"


def gone(runner: str) -> bool:
    """True only when `runner` (as `this_process` wrote it) is certainly no longer running: see the module's note."""
    parts = runner.split(" ")
    if len(parts) != 5 or not parts[3].isdigit():
        return False
    _, boot, namespace, pid, started = parts[0], parts[1], parts[2], int(parts[3]), parts[4]
    if UNKNOWN in (boot, namespace, started) or boot != _boot() or namespace != _namespace():
        return False
    if pid == os.getpid():
        return False
    now = _started(pid)
    if now is None:  # no such process, or a dead one
        return True
    return now != UNKNOWN and now != started


def described(runner: str) -> str:
    """"pid 4242 on host-1", for a sentence."""
    parts = runner.split(" ")
    return f"pid {parts[3]} on {parts[0]}" if len(parts) == 5 else runner
