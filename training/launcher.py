"""Train DPO in several processes (DDP, or FSDP on GPUs) by running the training CLI under `accelerate launch`.

The pairs (with their cached reference log-probs) and the whole DPOConfig go to files in a work folder; the
per-step JSON lines come back into `on_step`, and the run's result file (with every pair's reference log-probs)
becomes the TrainResult. Cancelling or a failure of the caller ends every process of the launch.
"""
from __future__ import annotations

import collections
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Collection
from pathlib import Path

from training import keeper
from training.dpo.config import DPOConfig
from training.dpo.data import PreferencePair
from training.dpo.outcome import StageCallback, StepCallback, TrainingCancelled, TrainResult

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.5  # how often should_stop() is asked while no step arrives
GRACE_S = 10.0  # SIGTERM, then this long before SIGKILL
# the last line of a Python traceback ("ValueError: ..."); torchrun may put "[rank0]: " before a line. Our own
# exceptions are named for what happened (TrainingDiverged, TrainingCancelled), not "...Error".
_RANK_PREFIX = re.compile(r"^\[rank\d+\]:\s*")
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Diverged|Cancelled)):\s*(.+)$")
_LAUNCHER_ERRORS = ("ChildFailedError", "CalledProcessError", "SignalException")


def train_in_processes(
    config: DPOConfig,
    model_dir: str | Path,
    pairs: list[PreferencePair],
    out_dir: Path,
    *,
    processes: int,
    reference_dir: str | Path | None = None,
    on_step: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    workdir: Path,
    fsdp: bool = False,
    allowed_terms: Collection[str] = (),
    on_stage: StageCallback | None = None,
) -> TrainResult:
    """Run train_dpo in `processes` processes (one per GPU, or CPU processes over gloo when no GPU is visible).

    Writes pairs.jsonl, config.json, launch.log and result.json into workdir (the caller removes it). on_step and
    should_stop are called from this thread, and so is on_stage (train_dpo's, from the main process's stage lines). With fsdp=True the model is sharded with accelerate's FSDP (GPUs only).
    Raises TrainingCancelled when should_stop() turns True, RuntimeError with the real error when a process fails.
    The launch ends when the thread that calls this does (PR_SET_PDEATHSIG follows the thread that started the
    keeper): call it from a thread that lives until it returns, as it does by blocking until the launch ends.
    """
    config.validate()
    if processes < 1:
        raise ValueError(f"processes={processes}: must be >= 1")
    if not pairs:
        raise ValueError("train_in_processes: no pairs to train on")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data, config_file, result_file, log_file = (workdir / n for n in ("pairs.jsonl", "config.json", "result.json",
                                                                        "launch.log"))
    write_pairs(pairs, data)
    config_file.write_text(json.dumps(config.to_dict()), encoding="utf-8")
    result_file.unlink(missing_ok=True)

    cmd, env = launch_command(processes, fsdp=fsdp)
    cmd += ["--module", "training.dpo.train", "--model", str(model_dir), "--data", str(data), "--out", str(out_dir),
            "--config", str(config_file), "--result", str(result_file)]
    for name in allowed_terms:
        cmd += ["--allow-term", name]
    if reference_dir is not None:
        cmd += ["--reference", str(reference_dir)]

    with log_file.open("w", encoding="utf-8") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        # the keeper stands between this worker and the launch: it ends the launch when the worker dies
        proc = subprocess.Popen(
            [sys.executable, "-I", keeper.__file__, str(GRACE_S), str(os.getpid()), "--", *cmd], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True,
        )
        try:
            tail = _follow(proc, log, on_step, should_stop, on_stage)
        except BaseException:
            stop_process_tree(proc)
            raise
    if proc.returncode != 0:
        raise RuntimeError(
            f"training in {processes} processes failed (exit code {proc.returncode}): {failure_message(tail)} "
            f"(full log: {log_file})"
        )
    if not result_file.exists():
        raise RuntimeError(f"training in {processes} processes ended without writing {result_file} (log: {log_file})")
    return read_result(result_file, len(pairs))


def write_pairs(pairs: list[PreferencePair], path: Path) -> None:
    """Pairs as TRL-format JSONL rows that `training.dpo.data.pair_from_row` reads back unchanged."""
    with path.open("w", encoding="utf-8") as f:
        for pair in pairs:
            row = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
            for name in ("preference_prob", "ref_chosen_logp", "ref_rejected_logp"):
                if getattr(pair, name) is not None:
                    row[name] = getattr(pair, name)
            for name in ("chosen_flags", "rejected_flags"):
                if getattr(pair, name):
                    row[name] = sorted(getattr(pair, name))
            try:
                row["key"] = json.loads(json.dumps(pair.key))
            except (TypeError, ValueError):
                pass  # the processes never use the key; the result comes back in input order
            f.write(json.dumps(row) + "\n")


def read_result(path: Path, n_pairs: int) -> TrainResult:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("out", None)
    data["reference_logps"] = [tuple(x) for x in data["reference_logps"]]
    if len(data["reference_logps"]) != n_pairs:
        raise RuntimeError(f"{path}: {len(data['reference_logps'])} reference log-probs for {n_pairs} pairs")
    return TrainResult(**data)


def launch_command(processes: int, *, fsdp: bool = False) -> tuple[list[str], dict[str, str]]:
    """`accelerate launch` arguments (before the script) and the environment for `processes` local processes.

    On CPU it is still accelerate's multi-GPU launcher (torchrun) with no GPU visible: the trainer then asks for a
    CPU Accelerator and the processes talk over gloo (accelerate's own --cpu mode wants MPI).
    """
    import torch

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "TQDM_DISABLE": "1"}
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and processes > gpus:
        raise ValueError(f"{processes} training processes but {gpus} GPU(s) visible: one process per GPU")
    if not gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
        if fsdp:
            raise ValueError("FSDP training needs GPUs; none is visible")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port())]
    if fsdp:
        # full shards of each decoder layer; the main process gathers the full state dict to save the checkpoint
        cmd += ["--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD", "--fsdp_auto_wrap_policy",
                "TRANSFORMER_BASED_WRAP", "--fsdp_state_dict_type", "FULL_STATE_DICT", "--fsdp_use_orig_params",
                "true", "--fsdp_sync_module_states", "true"]
    else:
        cmd += ["--multi_gpu"]
    return cmd, env


def free_port() -> int:
    """A TCP port nobody listens on now, for the processes' rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _follow(proc: subprocess.Popen, log, on_step, should_stop, on_stage=None) -> collections.deque:
    """Pass step lines to on_step and stage lines to on_stage until the launch ends; returns the last lines of
    stderr."""
    lines: queue.Queue = queue.Queue()
    tail: collections.deque = collections.deque(maxlen=300)

    def read(stream, name):
        for line in stream:
            lines.put((name, line))
        lines.put((name, None))

    readers = [threading.Thread(target=read, args=(s, n), daemon=True)
               for s, n in ((proc.stdout, "out"), (proc.stderr, "err"))]
    for reader in readers:
        reader.start()
    open_streams = 2
    while open_streams:
        if should_stop and should_stop():
            raise TrainingCancelled("cancelled: the training processes were stopped")
        try:
            name, line = lines.get(timeout=POLL_S)
        except queue.Empty:
            if proc.poll() is not None:
                break  # ended; an orphaned grandchild may still hold the pipes open
            continue
        if line is None:
            open_streams -= 1
            continue
        log.write(line)
        if name == "err":
            tail.extend(part for part in line.split("\r") if part.strip())
            continue
        data = _json_object(line)
        if data is None:
            continue
        if _is_step(data):
            if on_step:
                on_step(data.pop("step"), data.pop("total_steps"), data)
        elif _is_stage(data) and on_stage:
            on_stage(data["stage"], data["done"], data["total"], data["then"])
    log.flush()
    proc.wait()
    return tail


def _json_object(line: str) -> dict | None:
    """A stdout line of the training command read as a JSON object (a step, a stage or the summary), else None."""
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _is_step(data: dict) -> bool:
    return "step" in data and "total_steps" in data


def _is_stage(data: dict) -> bool:
    """A stage line ({"stage": ..., "done": ..., "total": ..., "then": ...})."""
    return isinstance(data.get("stage"), str) and all(isinstance(data.get(f), int) for f in ("done", "total", "then"))


def failure_message(stderr_lines) -> str:
    """The real error among the launch's last stderr lines: the CLI's "error: ..." line, else the last exception
    line of a worker's traceback, else the last few lines."""
    lines = [_RANK_PREFIX.sub("", line.strip()) for line in stderr_lines if line.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):]
    for line in reversed(lines):
        found = _EXCEPTION_LINE.match(line)
        if found and not found.group(1).endswith(_LAUNCHER_ERRORS):
            return f"{found.group(1)}: {found.group(2)}"
    return " | ".join(lines[-5:]) or "no error output"


def stop_process_tree(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """Stop the launch: SIGTERM to its keeper, which stops every process under it (SIGTERM, then SIGKILL after
    grace_s: training/keeper.py). torchrun is sent SIGTERM once: a second one, in the middle of its own shutdown,
    cut that short. Should the keeper not have ended in time, every process under it is SIGKILLed from here."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=3 * grace_s + 5)  # its SIGTERM, its SIGKILL and one sweep of orphans, each up to grace_s
    except subprocess.TimeoutExpired:
        keeper.stop_tree(proc.pid, 0.0)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
