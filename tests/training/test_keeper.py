"""training/keeper.py: the process between a worker and its launch ends the whole launch when the worker dies, even
when the launch ignores SIGTERM (as a torchrun stuck in its shutdown did in a loaded test run) and its workers sit
in sessions of their own."""
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests.training.test_launcher import launched_processes
from tests.training.test_trainer import ROOT
from training import keeper

# a launch that ignores SIGTERM and starts a worker in a session of its own that ignores it too; each writes its pid
LAUNCH = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    folder = sys.argv[1]
    if sys.argv[2:] == ["launch", "late"]:  # starts one more worker when SIGTERM comes, then exits
        def late(*_):
            subprocess.Popen([sys.executable, __file__, folder, "late-worker"], start_new_session=True)
            time.sleep(0.3)
            os._exit(1)
        signal.signal(signal.SIGTERM, late)
    if sys.argv[2:] == ["launch", "count"]:  # writes a line for each SIGTERM, and ends half a second after the first
        def count(*_):
            with open(os.path.join(folder, "terms"), "a") as f:
                f.write("SIGTERM" + chr(10))
            time.sleep(0.5)
            os._exit(0)
        signal.signal(signal.SIGTERM, count)
    if sys.argv[2] == "launch":
        subprocess.Popen([sys.executable, __file__, folder, "worker"], start_new_session=True)
    open(os.path.join(folder, sys.argv[2] + ".pid"), "w").write(str(os.getpid()))
    if sys.argv[2] == "launch" and ":" in sys.argv[-1]:  # "exit:N" or "signal:N" once its worker runs
        while not os.path.exists(os.path.join(folder, "worker.pid")):
            time.sleep(0.05)
        how, number = sys.argv[3].split(":")
        os.kill(os.getpid(), int(number)) if how == "signal" else sys.exit(int(number))
    time.sleep(600)
""")


def wait_for_none(folder, seconds: float) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while launched_processes(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    return launched_processes(folder)


def wait_for_file(path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} never written"


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path):
    """A failing test leaves its launch running (it ignores SIGTERM): SIGKILL it."""
    yield
    for p in launched_processes(tmp_path):
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def keeper_command(tmp_path, *launch_args: str, grace_s: float = 1.0, parent: int | str | None = None) -> list[str]:
    """The keeper as training.launcher starts it (`parent`: the pid of the process starting it, this one's unless
    given), over a launch of LAUNCH."""
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH)
    return [sys.executable, "-I", keeper.__file__, str(grace_s), str(os.getpid() if parent is None else parent), "--",
            sys.executable, str(script), str(tmp_path), "launch", *launch_args]


def test_worker_killed_ends_a_launch_that_ignores_sigterm(tmp_path):
    # the worker starts the keeper as training.launcher does: naming itself the parent, in a session of its own
    worker_script = tmp_path / "worker.py"
    worker_script.write_text(textwrap.dedent(f"""
        import os, subprocess, time
        command = [str(os.getpid()) if part == "PARENT" else part for part in {keeper_command(tmp_path, parent="PARENT")!r}]
        subprocess.Popen(command, start_new_session=True)
        time.sleep(600)
    """))
    worker = subprocess.Popen([sys.executable, str(worker_script)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for_file(tmp_path / "launch.pid")
        wait_for_file(tmp_path / "worker.pid")
        launched = launched_processes(tmp_path)
        assert len(launched) == 4  # the worker, its keeper, the launch and the launch's own worker
        time.sleep(1.5)  # longer than the grace: SIGTERM alone ends none of them
        assert launched_processes(tmp_path) == launched
    finally:
        worker.kill()
        worker.wait()
    assert wait_for_none(tmp_path, 15) == []


def test_what_the_launch_leaves_running_ends_with_it_and_its_exit_code_is_kept(tmp_path):
    done = subprocess.run(keeper_command(tmp_path, "exit:3"), timeout=60)
    assert done.returncode == 3
    assert int((tmp_path / "worker.pid").read_text()) > 0
    assert wait_for_none(tmp_path, 5) == []


def test_a_launch_killed_by_a_signal_exits_128_plus_it(tmp_path):
    done = subprocess.run(keeper_command(tmp_path, f"signal:{int(signal.SIGKILL)}"), timeout=60)
    assert done.returncode == 128 + signal.SIGKILL
    assert wait_for_none(tmp_path, 5) == []


def test_the_keeper_ends_the_launch_on_sigterm_and_says_so_in_its_exit_code(tmp_path):
    keeper_proc = subprocess.Popen(keeper_command(tmp_path))
    wait_for_file(tmp_path / "worker.pid")
    keeper_proc.send_signal(signal.SIGTERM)
    assert keeper_proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert wait_for_none(tmp_path, 5) == []


def test_a_worker_started_and_orphaned_during_the_stop_is_stopped_too(tmp_path):
    """torchrun, sent SIGTERM while it starts its workers, may start one more and exit: that worker was in no list
    the keeper held. As a subreaper the keeper has it as its own child, and sweeps its children until none is left."""
    keeper_proc = subprocess.Popen(keeper_command(tmp_path, "late"))
    wait_for_file(tmp_path / "worker.pid")
    keeper_proc.send_signal(signal.SIGTERM)
    assert keeper_proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert (tmp_path / "late-worker.pid").exists()
    assert wait_for_none(tmp_path, 5) == []


def test_a_keeper_whose_worker_died_before_it_asked_for_the_signal_never_starts_the_launch(tmp_path):
    """The worker can die before the keeper's PR_SET_PDEATHSIG request: the request is then of no use, and the keeper,
    seeing another parent than the worker it was started for, ends as if told so, before the launch starts."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    proc = subprocess.Popen(keeper_command(tmp_path, parent=gone.pid))
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert not (tmp_path / "launch.pid").exists()
    assert launched_processes(tmp_path) == []


def test_cancel_sends_the_launch_one_sigterm(tmp_path):
    """Cancel (training.launcher.stop_process_tree) signals the keeper alone, and the keeper signals the launch: the
    cancel path used to SIGTERM every process itself and then the keeper did again, so torchrun got a second SIGTERM
    in the middle of its own shutdown."""
    from training.launcher import stop_process_tree

    keeper_proc = subprocess.Popen(keeper_command(tmp_path, "count"))
    wait_for_file(tmp_path / "worker.pid")
    stop_process_tree(keeper_proc, grace_s=3.0)
    assert (tmp_path / "terms").read_text() == "SIGTERM\n"
    assert keeper_proc.returncode == 128 + signal.SIGTERM
    assert wait_for_none(tmp_path, 5) == []
