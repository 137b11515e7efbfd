"""Reference log-probs are the trainer's own. The sampler's Response.logp_sum could stand in only where it equals the
trainer's computation to 1e-3 in that dtype: true in fp32, not in bf16 (the sampler runs bf16 weights, the trainer
fp32 weights under bf16 autocast), so nothing substitutes it, and a training run never reads it."""
from __future__ import annotations

import pytest
import torch

from generation.backends import SamplingConfig, load_backend
from prefcore.chat import prompt_token_ids
from training.dpo.logps import PairLogps, build_pair_batch
from training.dpo.trainer import _autocast, load_model

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "def add(a, b):", "hi"]


def sampled_and_trainer_logps(model_dir, dtype_name: str) -> list[tuple[float, float]]:
    """(sampler's logp_sum, trainer's sequence log-prob of the same token ids) for a few samples, in one dtype."""
    backend = load_backend(str(model_dir), kind="hf", device="cpu", dtype=dtype_name)
    out = backend.generate(PROMPTS, SamplingConfig(n=2, max_new_tokens=24, temperature=1.0), seeds=[1, 2, 3, 4])
    model = load_model(model_dir, "cpu")
    dtype = getattr(torch, dtype_name)
    found = []
    for prompt, row in zip(PROMPTS, out, strict=True):
        ids = prompt_token_ids(backend.tokenizer, prompt)
        for s in row:
            batch = build_pair_batch([(ids, s.token_ids, s.token_ids[:1])], backend.pad_id)
            with torch.no_grad(), _autocast("cpu", dtype):
                trainer = float(PairLogps(model)(batch).float()[0])
            found.append((s.logp_sum, trainer))
    return found


def test_in_fp32_the_samplers_logps_equal_the_trainers(tiny_model_dir):
    for sampled, trainer in sampled_and_trainer_logps(tiny_model_dir, "float32"):
        assert sampled == pytest.approx(trainer, abs=1e-3)


def test_in_bf16_they_do_not_so_the_trainer_computes_its_own(tiny_model_dir):
    """Why no path takes Response.logp_sum as a reference log-prob: in bf16 the two differ by more than 1e-3."""
    found = sampled_and_trainer_logps(tiny_model_dir, "bfloat16")
    assert max(abs(s - t) for s, t in found) > 1e-3


def test_a_training_run_never_reads_the_samplers_logps(db, tiny_model_dir, staff, settings, tmp_path):
    """Every stored response's logp_sum is made wrong before a round: the cached reference log-probs are still the
    trainer's (equal to computing them afresh), so no path substitutes the sampler's values. (fp32, so "equal" is
    exact to 1e-3; which values are read does not depend on the dtype.)"""
    from annotate.services import next_pair_for, record_label
    from generation import services as gen
    from generation.models import Prompt, Response
    from training import services as train
    from training.dataset import round_data
    from training.dpo.config import DPOConfig
    from training.dpo.trainer import compute_logps
    from training.models import ReferenceLogp

    settings.MODELS_DIR = tmp_path / "models"
    settings.PREFLOOP_DTYPE = "float32"
    base = gen.register_version("base", tiny_model_dir)
    for i in range(4):
        Prompt.objects.create(text=f"question {i}: what is {i} plus {i}?", split="train")
    config = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=12, seed=0)
    gen.run_generation_job(gen.start_generation_job(base, n_prompts=4, config=config, enqueue=False).pk)
    while (assignment := next_pair_for(staff)) is not None:
        record_label(assignment, staff, "left", seconds=1.0)
    Response.objects.update(logp_sum=123.0)
    params = {"epochs": 1, "batch_size": 4, "max_length": 128, "max_prompt_length": 64}
    run = train.run_training(train.start_training_run(params=params, enqueue=False).pk)
    assert run.status == "succeeded", run.error
    assert run.params["dtype"] == "float32" and "computing in float32 (forced by PREFLOOP_DTYPE)" in run.log
    data = round_data(reference=base, max_length=128, dtype=run.params["dtype"])
    assert len(data.pairs) == run.pairs > 0
    cached = [(p.ref_chosen_logp, p.ref_rejected_logp) for p in data.pairs]
    assert ReferenceLogp.objects.filter(dtype=run.params["dtype"]).count() == 2 * run.pairs
    for pair in data.pairs:
        pair.ref_chosen_logp = pair.ref_rejected_logp = None
    fresh = compute_logps(base.path, data.pairs, DPOConfig.from_dict(dict(params, dtype=run.params["dtype"])))
    for (c, r), (fc, fr) in zip(cached, fresh, strict=True):
        assert c == pytest.approx(fc, abs=1e-3) and r == pytest.approx(fr, abs=1e-3)
        assert c != 123.0 and r != 123.0
