"""Our own sampler and trainer on a CUDA GPU (the GPU worker's path when vLLM is absent or not chosen, and every
GPU training round). Skipped without CUDA; run them on a GPU machine with `pytest tests/cuda`.

Each checks what the CPU tests check on the CPU, on the GPU, and that the two devices agree: a seed gives the same
samples on either (the sampler draws with its own generator from logits that agree to rounding), and a checkpoint
trained on the GPU scores the same on the CPU.
"""
from __future__ import annotations

import math

import pytest
import torch

from generation.backends import SamplingConfig, load_backend
from prefcore.chat import prompt_token_ids
from tests.generation.test_backends import PROMPTS, cancel_at_the_fourth_check, teacher_forced
from tests.training.test_trainer import synthetic_pairs
from training.dpo.config import DPOConfig
from training.dpo.trainer import TrainingCancelled, compute_logps, train_dpo

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("engine", ["slots", "generic"])
def test_fp32_samples_on_cuda_are_the_cpu_samples_and_their_logps_are_teacher_forced(chatty_model_dir, engine):
    config = SamplingConfig(n=2, max_new_tokens=48, temperature=1.0, top_p=1.0, batch_size=3)
    seeds = [1, 2, 3, 4, 5]
    gpu = load_backend(str(chatty_model_dir), kind="hf", device="cuda", engine=engine, dtype="float32")
    cpu = load_backend(str(chatty_model_dir), kind="hf", device="cpu", engine=engine, dtype="float32")
    assert gpu.model.device.type == "cuda" and gpu.model.dtype == torch.float32
    on_gpu, on_cpu = gpu.generate(PROMPTS, config, seeds=seeds), cpu.generate(PROMPTS, config, seeds=seeds)
    lengths = set()
    for prompt, row_gpu, row_cpu in zip(PROMPTS, on_gpu, on_cpu, strict=True):
        ids = prompt_token_ids(gpu.tokenizer, prompt)
        for a, b in zip(row_gpu, row_cpu, strict=True):
            assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason, prompt
            assert a.logp_sum == pytest.approx(b.logp_sum, abs=1e-3)
            assert a.logp_sum == pytest.approx(float(teacher_forced(gpu.model, ids, a.token_ids)[0].double().sum()), abs=1e-3)
            lengths.add(len(a.token_ids))
    assert len(lengths) > 1  # samples ended at different lengths: the slots were refilled mid-run


def test_cuda_defaults_to_bf16_and_samples_within_the_rounding_bound_and_cancels(chatty_model_dir):
    from generation.backends.rounding import token_logp_bounds

    backend = load_backend(str(chatty_model_dir), kind="hf", device="cuda")
    assert backend.dtype == torch.bfloat16 and backend.model.dtype == torch.bfloat16
    seen = []
    out = backend.generate(PROMPTS, SamplingConfig(n=2, max_new_tokens=24, batch_size=4), seeds=[7] * len(PROMPTS),
                           on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (10, 10)
    for prompt, row in zip(PROMPTS, out, strict=True):
        ids = prompt_token_ids(backend.tokenizer, prompt)
        for s in row:
            assert s.finish_reason in ("stop", "length") and len(s.token_ids) <= 24
            forced, logits = teacher_forced(backend.model, ids, s.token_ids)
            got = torch.tensor(s.extra["token_logps"])
            assert ((got - forced).abs() <= token_logp_bounds(logits, torch.bfloat16)).all(), prompt
    assert cancel_at_the_fourth_check(backend) == 4


@pytest.mark.parametrize("dtype", ["auto", "float32"])
def test_a_dpo_round_on_cuda_learns_and_its_checkpoint_scores_the_same_on_the_cpu(tiny_model_dir, tmp_path, dtype,
                                                                                   monkeypatch):
    pairs = synthetic_pairs(20)
    config = DPOConfig(dtype=dtype, batch_size=4, epochs=3, learning_rate=1e-3, warmup_ratio=0.0, beta=0.1)
    steps = []
    torch.cuda.reset_peak_memory_stats()  # the sampler tests before this one used the GPU too
    result = train_dpo(config, tiny_model_dir, pairs, tmp_path / "out", on_step=lambda s, t, m: steps.append(m))
    assert torch.cuda.max_memory_allocated() > 0  # the round ran on the GPU
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert result.final_metrics["loss"] < math.log(2) and result.final_metrics["rewards/accuracy"] >= 0.75
    fp32 = DPOConfig(dtype="float32")
    on_gpu = compute_logps(tmp_path / "out", pairs, fp32)
    margins = [(pc - rc) - (pr - rr) for (pc, pr), (rc, rr) in zip(on_gpu, result.reference_logps, strict=True)]
    assert sum(m > 0 for m in margins) / len(margins) >= 0.9
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    on_cpu = compute_logps(tmp_path / "out", pairs, fp32)
    for (gc, gr), (cc, cr) in zip(on_gpu, on_cpu, strict=True):
        assert gc == pytest.approx(cc, abs=1e-3) and gr == pytest.approx(cr, abs=1e-3)


def test_a_dpo_round_on_cuda_cancels_at_the_next_step(tiny_model_dir, tmp_path):
    steps = []
    with pytest.raises(TrainingCancelled):
        train_dpo(DPOConfig(batch_size=2, epochs=2), tiny_model_dir, synthetic_pairs(12), tmp_path / "out",
                  on_step=lambda s, t, m: steps.append(s), should_stop=lambda: len(steps) >= 2)
    assert steps == [1, 2]

