"""Training in 2 CPU processes (gloo) through `accelerate launch`, driven by training.launcher, on the tiny model."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests.training.test_trainer import ROOT, synthetic_pairs
from training.dpo.config import DPOConfig
from training.dpo.trainer import TrainingCancelled, compute_logps
from training.launcher import failure_message, train_in_processes, write_pairs


@pytest.fixture(autouse=True)
def _no_gpu_in_sight(monkeypatch):
    """These tests launch two processes on the CPU. With one GPU in sight two processes are refused, one per GPU
    (test_more_processes_than_gpus_in_sight_are_refused_before_any_launch), so on a GPU machine the tests look away
    from it, as the launched processes then do."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def launched_processes(workdir) -> list[psutil.Process]:
    """Every live process whose command line names this launch's work folder (launcher, torchrun, workers)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(workdir) in part for part in p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def test_two_processes_train_report_every_step_and_return_reference_logps(tiny_model_dir, tmp_path, dtype):
    pairs = synthetic_pairs(9)
    pairs[3].ref_chosen_logp, pairs[3].ref_rejected_logp = -12.5, -3.25  # a cached pair is kept, not recomputed
    config = DPOConfig(dtype=dtype, batch_size=2, epochs=1, learning_rate=1e-3, warmup_ratio=0.0)
    steps = []
    result = train_in_processes(config, str(tiny_model_dir), pairs, tmp_path / "out", processes=2,
                                reference_dir=None, on_step=lambda s, t, m: steps.append((s, t, m)),
                                should_stop=lambda: False, workdir=tmp_path / "work")
    # 9 pairs over 2 ranks: each trains 4, 2 steps of batch 2; every step seen once, from the main process
    assert [(s, t) for s, t, _ in steps] == [(1, 2), (2, 2)]
    assert steps[-1][2]["rewards/accuracy"] > 0 and "loss" in steps[0][2]
    assert [m["step_pairs"] for _, _, m in steps] == [4, 4]  # a batch of 2 on each of the 2 processes
    assert result.steps == 2 and result.pairs == 8 and result.dropped == 1
    assert (tmp_path / "out" / "model.safetensors").exists()

    expected = compute_logps(tiny_model_dir, pairs, config)
    assert len(result.reference_logps) == len(pairs)
    for i, (got, want) in enumerate(zip(result.reference_logps, expected, strict=True)):
        if i == 3:
            assert got == (-12.5, -3.25)
        else:
            assert got == pytest.approx(want, abs=1e-4)


def test_should_stop_kills_every_process_and_raises(tiny_model_dir, tmp_path, dtype):
    workdir = tmp_path / "work"
    seen, alive_at_step = [], []

    def on_step(step, total, metrics):
        seen.append(step)
        alive_at_step.extend(launched_processes(workdir))

    with pytest.raises(TrainingCancelled):
        train_in_processes(DPOConfig(dtype=dtype, batch_size=1, epochs=3), str(tiny_model_dir), synthetic_pairs(8),
                           tmp_path / "out", processes=2, reference_dir=None, on_step=on_step,
                           should_stop=lambda: bool(seen), workdir=workdir)
    assert seen == [1]
    # the launcher, torchrun's agent and its two workers (each in a session of its own) were running ...
    assert len(alive_at_step) >= 3
    # ... and none is left
    deadline = time.monotonic() + 5
    while launched_processes(workdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert launched_processes(workdir) == []
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in alive_at_step)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_killed_worker_leaves_no_training_process(tiny_model_dir, tmp_path, dtype):
    """The Celery worker dies by SIGKILL mid-training: the launch and its processes end with it."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from tests.training.test_trainer import ROOT, synthetic_pairs
        from training.dpo.config import DPOConfig
        from training.launcher import train_in_processes

        tmp = Path({str(tmp_path)!r})
        train_in_processes(DPOConfig(batch_size=1, epochs=50, dtype={dtype!r}), {str(tiny_model_dir)!r}, synthetic_pairs(8),
                           tmp / "out", processes=2, on_step=lambda s, t, m: (tmp / "step").write_text(str(s)),
                           workdir=tmp / "work")
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "CUDA_VISIBLE_DEVICES": ""}  # the worker process, too, on the CPU (see _no_gpu_in_sight)
    worker = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=(tmp_path / "worker.log").open("w"))
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "step").exists() and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (tmp_path / "step").exists(), (tmp_path / "worker.log").read_text()[-2000:]
        assert len(launched_processes(tmp_path / "work")) >= 3
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    deadline = time.monotonic() + 30
    while launched_processes(tmp_path / "work") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert launched_processes(tmp_path / "work") == []


def test_bad_model_dir_is_a_runtime_error_naming_it(tmp_path, dtype):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(RuntimeError) as info:
        train_in_processes(DPOConfig(dtype=dtype), str(empty), synthetic_pairs(2), tmp_path / "out", processes=2,
                           reference_dir=None, on_step=None, should_stop=None, workdir=tmp_path / "work")
    message = str(info.value)
    assert f"--model {empty}: not a model directory (no config.json)" in message
    assert "Traceback" not in message and "exit code" in message
    assert (tmp_path / "work" / "launch.log").exists()


def test_pairs_file_keeps_cached_reference_and_soft_labels(tmp_path):
    from training.dpo.data import load_pairs_jsonl

    pairs = synthetic_pairs(2)
    pairs[0].ref_chosen_logp, pairs[0].ref_rejected_logp, pairs[0].preference_prob = -1.5, -2.0, 0.8
    pairs[1].prompt = [{"role": "user", "content": "Hi"}]
    pairs[1].key = object()  # not JSON: dropped, the order carries the pair back
    write_pairs(pairs, tmp_path / "p.jsonl")
    back = load_pairs_jsonl(tmp_path / "p.jsonl")
    assert back[0] == pairs[0]
    assert back[1].prompt == pairs[1].prompt and back[1].key is None and not back[1].has_reference


def test_more_processes_than_gpus_in_sight_are_refused_before_any_launch(monkeypatch):
    import torch

    from training.launcher import launch_command

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"^2 training processes but 1 GPU\(s\) visible: one process per GPU$"):
        launch_command(2)
    cmd, _ = launch_command(1)
    assert cmd[cmd.index("--num_processes") + 1] == "1"


def test_failure_message_finds_the_real_error():
    wall = ["Traceback (most recent call last):", '  File "x.py", line 3, in <module>',
            "[rank1]: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", "E0101 agent stopping",
            "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
            "subprocess.CalledProcessError: Command '['python', '-m', 'x']' returned non-zero exit status 1."]
    assert failure_message(wall) == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert failure_message(["noise", "error: pairs.jsonl:3: field 'chosen' is missing", *wall]) == (
        "pairs.jsonl:3: field 'chosen' is missing")
    assert failure_message(["just", "some", "lines"]) == "just | some | lines"
    assert json.dumps(failure_message([]))


def test_cli_config_file_is_the_whole_config(tmp_path, capsys):
    from training.dpo.train import config_from_args, parse_args

    base = ["--model", "m", "--data", "d.jsonl", "--out", "o"]
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(DPOConfig(beta=0.3, epochs=5, lora=True).to_dict()))
    assert config_from_args(parse_args([*base, "--config", str(config_file)])) == DPOConfig(beta=0.3, epochs=5, lora=True)
    with pytest.raises(SystemExit):
        parse_args([*base, "--config", str(config_file), "--epochs", "1"])
    assert "do not combine it with --epochs" in capsys.readouterr().err
    config_file.write_text('{"beta": -1}')
    with pytest.raises(ValueError, match=r"config.json: DPOConfig.beta=-1.0: must be more than 0 and at most 100"):
        config_from_args(parse_args([*base, "--config", str(config_file)]))
    # read as the import page reads JSON: a key given twice is refused (json.loads kept the last without a word), an
    # integer past Python's 4,300 digits names the file, and a byte-order mark is no error
    for text, message in (('{"beta": 0.5, "beta": 0.1}', r"config.json: the key 'beta' is given twice"),
                          ('{"seed": ' + "9" * 5000 + "}", r"config.json: a number of more than 4,300 digits")):
        config_file.write_text(text)
        with pytest.raises(ValueError, match=message):
            config_from_args(parse_args([*base, "--config", str(config_file)]))
    config_file.write_bytes(b"\xef\xbb\xbf" + json.dumps({"beta": 0.3}).encode())
    assert config_from_args(parse_args([*base, "--config", str(config_file)])).beta == 0.3


def test_a_training_round_with_two_processes_registers_a_version(db, tiny_model_dir, staff, settings, tmp_path):
    """PREFLOOP_TRAIN_PROCESSES=2: the training service trains under `accelerate launch` and registers the result."""
    from generation import services as gen
    from tests.test_loop import FAST_TRAINING, SAMPLING, _label_everything, _prompts
    from training import services as train
    from training.models import ReferenceLogp

    settings.MODELS_DIR = tmp_path / "models"
    settings.PREFLOOP_TRAIN_PROCESSES = 2
    base = gen.register_version("base", tiny_model_dir)
    _prompts(8)
    gen.run_generation_job(gen.start_generation_job(base, n_prompts=8, config=SAMPLING, enqueue=False).pk)
    labelled = _label_everything(staff)
    run = train.run_training(train.start_training_run(params=FAST_TRAINING, enqueue=False).pk)
    assert run.status == "succeeded", run.error
    assert "training in 2 processes through accelerate launch" in run.log
    assert run.decision == "candidate" and run.steps.count() == run.total_steps > 0
    assert ReferenceLogp.objects.filter(reference=base).count() == 2 * labelled
    assert not list(settings.MODELS_DIR.glob(".tmp-*")), "the launch's work folder or a temporary checkpoint was left"
