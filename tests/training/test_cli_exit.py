"""How the training command line ends once its run is saved: at once, without Python's teardown (about 1 s of the
command's whole time, bench/dpo_throughput.py), but with every line it wrote kept and its exit code; under
`accelerate launch` too, once its process group is destroyed (gloo's threads, still running at the teardown, killed a
process with SIGABRT there)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A process that writes to buffered stdout and a logging file handler without flushing either, registers an exit
# handler, and leaves through train.leave(3).
LEAVING = """
import atexit, logging, sys
from training.dpo.train import leave
handler = logging.FileHandler(sys.argv[1])
logging.getLogger().addHandler(handler)
logging.getLogger().warning("logged before leaving")
sys.stdout.write("written, not flushed")
atexit.register(lambda: print("teardown ran", file=sys.stderr, flush=True))
leave(3)
"""


def _environ(**env) -> dict:
    """This environment without PYTHONUNBUFFERED (set here, not by default: stdout is block-buffered where it is a
    pipe or a file) and outside accelerate launch, with `env`."""
    import os

    keep = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "PYTHONUNBUFFERED")}
    return {**keep, **env}


def _leave(tmp_path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LEAVING, str(tmp_path / "log")], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=_environ(**env))


def test_a_finished_run_leaves_without_the_teardown_keeping_its_output_and_code(tmp_path):
    proc = _leave(tmp_path)
    assert proc.returncode == 3
    assert proc.stdout == "written, not flushed"
    assert (tmp_path / "log").read_text() == "logged before leaving\n"
    assert "teardown ran" not in proc.stderr  # the exit handlers (and the rest of the teardown) were skipped


def test_under_accelerate_launch_too_the_process_leaves_without_the_teardown(tmp_path):
    proc = _leave(tmp_path, WORLD_SIZE="2", RANK="1")  # torch never loaded: no group to destroy
    assert proc.returncode == 3
    assert proc.stdout == "written, not flushed"
    assert (tmp_path / "log").read_text() == "logged before leaving\n"
    assert "teardown ran" not in proc.stderr


def test_a_stdout_that_cannot_be_written_leaves_through_the_normal_exit(tmp_path):
    """Output that cannot be written (here a stdout opened for reading; a reader gone, in life): the normal exit
    reports it as it always did, with its exit code 120, not an os._exit that said the run's code while its last
    lines were lost."""
    (tmp_path / "stdout").write_text("")
    with open(tmp_path / "stdout") as read_only:
        proc = subprocess.run([sys.executable, "-c", LEAVING.replace("leave(3)", "leave(0)"), str(tmp_path / "log")],
                              stdout=read_only, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120,
                              env=_environ())
    assert proc.returncode == 120, proc.stderr
    assert "teardown ran" in proc.stderr


@pytest.mark.parametrize("stdout", ["pipe", "file"])
def test_a_whole_run_ends_with_its_summary_as_the_last_line(tiny_model_dir, tmp_path, stdout):
    """The real command, its stdout a pipe (the training service reads it so) or a file (block-buffered): every
    step's line and the summary are there after the fast exit, and the --result file is whole."""
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"Q{i}", "chosen": "Thank you!", "rejected": "No."})
                              for i in range(4)))
    cmd = [sys.executable, "-m", "training.dpo.train", "--model", str(tiny_model_dir), "--data", str(data), "--out",
           str(tmp_path / "out"), "--dtype", "float32", "--batch-size", "2", "--result", str(tmp_path / "r.json")]
    if stdout == "file":
        with open(tmp_path / "stdout", "w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=300,
                                  env=_environ())
        lines = (tmp_path / "stdout").read_text().splitlines()
    else:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, env=_environ())
        lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(lines[-1])
    assert summary["pairs"] == 4 and summary["steps"] >= 2
    assert [json.loads(line)["step"] for line in lines if line.startswith('{"step"')] == [
        *range(1, summary["steps"] + 1)]
    assert json.loads((tmp_path / "r.json").read_text())["pairs"] == 4
    assert (tmp_path / "out" / "config.json").exists()


@pytest.mark.parametrize("closed", [1, 2])
def test_a_run_started_with_stdout_or_stderr_closed_leaves_with_its_code(tmp_path, closed):
    """Started with its stdout (or stderr) closed (`>&-`), Python gives the process no such stream (sys.stdout is
    None): print() writes nothing and the run went on, and its exit was its code. leave() flushed None, and the run
    ended in an AttributeError, exit 1, after its checkpoint and --result were written."""
    import os

    script = LEAVING.replace('sys.stdout.write("written, not flushed")\n', "")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "log")], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=_environ(), preexec_fn=lambda: os.close(closed))
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert (tmp_path / "log").read_text() == "logged before leaving\n"


# Two gloo processes that make a DDP module and run collectives as the trainer does (DDP's all-reduces, an object
# gather, a barrier), then leave through train.leave(0); an exit handler registered before the group was made (so it
# runs last, should the teardown run) writes the gloo threads still running then.
GLOO_LEAVING = """
import atexit, os, sys
import torch, torch.distributed as dist
from training.dpo.train import leave

def gloo_threads():
    names = (open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task"))
    return " ".join(sorted(name for name in names if "gloo" in name))

out = sys.argv[1] + "." + os.environ["RANK"]
atexit.register(lambda: open(out, "w").write(gloo_threads()))
dist.init_process_group("gloo")
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(100, 100))
for _ in range(5):
    model(torch.ones(4, 100)).sum().backward()
dist.all_gather_object([None, None], list(range(1000)))
dist.barrier()
del model
print("leaving", flush=True)
leave(0)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the threads from /proc")
def test_under_accelerate_launch_no_teardown_runs_with_gloo_threads(tmp_path):
    """Left to the interpreter's teardown, gloo's worker threads could still hold the last collective's tensors,
    whose release then took the GIL of an interpreter being torn down: a worker died of SIGABRT after a run that had
    saved its model (CI, tests/training/test_launcher.py), and the launch was reported failed. Destroying the group
    before the teardown did not end those threads: the group outlived destroy_process_group (DDP imports
    torch.distributed.nn.functional, whose functions keep it as a default argument), and a toy job of a DDP module
    and 50 all-reduces so left died of SIGABRT in 3 of 20 launches here (none of 20 left without the teardown). This
    fails if a teardown runs while gloo's threads do."""
    script = tmp_path / "leaving.py"
    script.write_text(GLOO_LEAVING)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path / "threads")], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env=_environ(PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("leaving") == 2  # both reached leave() (their lines may interleave)
    at_teardown = {rank: (tmp_path / f"threads.{rank}").read_text() for rank in (0, 1)
                   if (tmp_path / f"threads.{rank}").exists()}
    assert all(not threads for threads in at_teardown.values()), at_teardown
