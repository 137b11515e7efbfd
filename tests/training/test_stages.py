"""The work before a round's first DPO step says what it is and moves the bar: the reference log-probs batch by batch,
an SFT warm start step by step (up to 100 epochs of it stood at 0% under "loading the model and reference log-probs"),
in one process and under `accelerate launch` alike."""
import io
import json
import subprocess
import sys

import pytest

from jobs import lifecycle
from training import services as train
from training.launcher import _follow

WARM = {"epochs": 1, "batch_size": 2, "max_length": 64, "max_prompt_length": 32, "sft_warmup_epochs": 2}


@pytest.mark.django_db
def test_a_warm_start_names_its_steps_and_moves_the_bar_before_the_dpo_steps(
        trainable_base, settings, monkeypatch):
    settings.PREFLOOP_HELDOUT_FRACTION = 0.0
    settings.PREFLOOP_ROUND_EVAL_PROMPTS = 0
    base = trainable_base
    seen = []
    report = lifecycle.Tracker.report

    def watched(self, **kwargs):
        if type(self.job).__name__ == "TrainingRun":
            seen.append((kwargs.get("stage"), kwargs.get("progress")))
        return report(self, **kwargs)

    monkeypatch.setattr(lifecycle.Tracker, "report", watched)
    run = train.run_training(train.start_training_run(input_version=base, params=WARM, enqueue=False).pk)
    assert run.status == "succeeded", run.error
    stages = [stage for stage, _ in seen if stage]
    # 4 pairs, batch 2: 2 reference batches, 2 warm-start steps an epoch for 2 epochs, then 2 DPO steps
    assert [s for s in stages if s.startswith("computing reference")] == [
        f"computing reference log-probs: batch {d} of 2" for d in range(3)]
    assert [s for s in stages if s.startswith("SFT")] == [f"SFT warm start: step {d} of 4" for d in range(5)]
    bar = [progress for _, progress in seen if progress is not None]
    assert bar[:5] == pytest.approx([d / 6 for d in range(5)])  # the warm start's share of the bar: 4 steps of 6
    assert bar[5:7] == pytest.approx([5 / 6, 1.0])  # then the DPO steps
    assert bar == sorted(bar)
    assert stages.index("SFT warm start: step 4 of 4") < stages.index("training")


def test_the_launchers_follower_passes_the_main_processs_stage_lines_on():
    lines = [{"stage": "SFT warm start", "done": 1, "total": 4, "then": 2},
             {"step": 1, "total_steps": 2, "loss": 0.6},
             {"stage": "broken", "done": "one", "total": 4, "then": 2}]  # not a stage line: ignored, not a crash
    script = "".join(f"print({json.dumps(json.dumps(line))})\n" for line in lines)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1)
    stages, steps = [], []
    _follow(proc, io.StringIO(), lambda step, total, metrics: steps.append((step, total, metrics)), None,
            lambda *args: stages.append(args))
    assert stages == [("SFT warm start", 1, 4, 2)]
    assert steps == [(1, 2, {"loss": 0.6})]
