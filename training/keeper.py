"""The launch's keeper: the process between a worker and `accelerate launch`, so that every process of a launch
ends when the worker that started it does, however the worker ends.

    python -I training/keeper.py GRACE_S PARENT_PID -- COMMAND...

The death of the worker (PARENT_PID) reaches the keeper as SIGTERM: the keeper asks for it (PR_SET_PDEATHSIG) once
its handler is in place, then checks that its parent is still that worker (one that died before the request sends
nothing: the keeper then ends before the command starts). Asked for in the keeper, not in a preexec function: that
ran between fork and exec in a worker with threads, where loading a library can deadlock. The keeper holds nothing
but the standard library and psutil, so it always acts on the signal: SIGTERM to every process under it, SIGKILL to
those left after GRACE_S seconds. Before the keeper, torchrun got that SIGTERM itself; in one loaded
test run its workers ended but torchrun was still alive 30 s later, and nothing would have stopped it.

The keeper is a child subreaper: a process orphaned under it (torchrun puts each worker in a session of its own, and
a worker outlives a torchrun killed by SIGKILL) becomes its child, so it is still found and stopped. When the
command ends by itself, whatever it left running is stopped too. The keeper exits with the command's exit status
(128 + N for a command killed by signal N).

Standard library and psutil only (run with -I: its folder is not on sys.path), so it starts in a fraction of a
second.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

import psutil  # at start: a keeper that cannot stop anything should fail before the launch, not when needed

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
SWEEPS = 20  # a process that keeps starting others while it is killed is not followed forever


def stop_tree(root_pid: int, grace_s: float) -> None:
    """SIGTERM the process root_pid and every process under it, then SIGKILL those left after grace_s seconds, with
    whatever they started meanwhile."""
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    _term_then_kill(procs, grace_s)


def stop_children(grace_s: float) -> None:
    """The keeper stopping every process under itself, as stop_tree does; then, as a subreaper, it SIGKILLs until
    none is left the processes orphaned onto it while it waited (a worker that torchrun started as it got SIGTERM,
    and left behind when it exited, was found through no process still alive)."""
    me = psutil.Process()
    killed = _term_then_kill(_children(me), grace_s)
    for _ in range(SWEEPS):
        left = [p for p in _children(me) if _running(p)]
        if not {p.pid for p in left} - killed:  # none, or only those SIGKILL has not ended yet (a hung driver call)
            break
        for p in left:
            _signal(p, signal.SIGKILL)
        killed.update(p.pid for p in left)
        psutil.wait_procs(left, timeout=grace_s)


def _term_then_kill(procs: list, grace_s: float) -> set[int]:
    """SIGTERM procs, SIGKILL those left after grace_s with the processes under them; returns the pids SIGKILLed."""
    for p in procs:
        _signal(p, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    # workers started or orphaned meanwhile are still found through the ones left alive
    killing = {*alive, *(c for a in alive for c in _children(a))}
    for p in killing:
        _signal(p, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=grace_s)
    return {p.pid for p in killing}


def _children(p) -> list:
    try:
        return p.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _running(p) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal(p, sig: int) -> None:
    try:
        p.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def _prctl(option: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(option, value)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: keeper.py GRACE_S PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    grace_s, parent, command = float(argv[0]), int(argv[1]), argv[3:]
    _prctl(PR_SET_CHILD_SUBREAPER, 1)

    def stop(signum, _frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_children(grace_s)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the worker died before the request: no signal will come
        return 128 + signal.SIGTERM
    child = subprocess.Popen(command)
    code = child.wait()
    # what the command left running (an orphaned worker holding the output pipes open) goes with it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stop_children(grace_s)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
