"""The same engine under `accelerate launch` with 2 CPU processes (DDP over gloo), on the tiny model."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.test_trainer import synthetic_pairs
from training.launcher import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_two_process_accelerate_launch(tiny_model_dir, tmp_path, dtype):
    data = tmp_path / "pairs.jsonl"
    # 9 pairs over 2 ranks: each trains an equal share of 4, so neither rank waits on a step the other never takes
    data.write_text("\n".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected})
                              for p in synthetic_pairs(9)))
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "--module", "training.dpo.train", "--model", str(tiny_model_dir), "--data", str(data),
           "--out", str(tmp_path / "out"), "--batch-size", "2", "--epochs", "1", "--lr", "1e-3", "--dtype", dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    steps, summary = [line for line in lines if "step" in line], lines[-1]
    assert [s["step"] for s in steps] == [1, 2]  # printed once, by the main process: 4 pairs per rank, batch 2
    assert summary["pairs"] == 8 and summary["dropped"] == 1 and summary["steps"] == 2
    assert steps[-1]["rewards/accuracy"] > 0  # the gradients were applied and synchronised
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_the_sft_warm_start_is_synchronised_over_processes(tiny_model_dir, tmp_path):
    """The warm start ran on each rank's bare model, its gradients never averaged; DDP then broadcast rank 0's
    weights over rank 1's work (an outside review: the first DPO step's loss 2.00 on 2 processes, 0.69 on one).
    Two ranks of 2 pairs now take the steps one process takes on the 4 pairs as one batch."""
    data = tmp_path / "pairs.jsonl"
    chosen = ["Thank you! Happy to help.", "Sure, the capital of France is Paris."]  # rank 0 learns one, rank 1 the other
    data.write_text("\n".join(json.dumps({"prompt": f"Tell me about topic {i}.", "chosen": chosen[i % 2],
                                          "rejected": "No."}) for i in range(4)))

    def first_step(processes: int, batch: int) -> dict:
        launch = ([sys.executable] if processes == 1 else
                  [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(free_port())])
        cmd = launch + (["-m"] if processes == 1 else ["--module"]) + [
            "training.dpo.train", "--model", str(tiny_model_dir), "--data", str(data),
            "--out", str(tmp_path / f"out{processes}"), "--batch-size", str(batch), "--epochs", "1", "--lr", "1e-2",
            "--sft-warmup-epochs", "2", "--dtype", "float32", "--warmup-ratio", "0"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                              env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""})
        assert proc.returncode == 0, proc.stderr[-3000:]
        return next(json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"step"'))

    one, two = first_step(1, 4), first_step(2, 2)
    for name in ("loss", "rewards/chosen", "rewards/rejected", "logps/chosen"):
        assert two[name] == pytest.approx(one[name], rel=1e-3, abs=1e-3), name
    assert abs(one["rewards/chosen"]) > 0.01  # the warm start moved the model from its reference
