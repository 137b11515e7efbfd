"""The loop on the real default model, SmolLM2-135M-Instruct: bootstrap, sample, label, train, answer."""
import pytest

from annotate.services import next_pair_for, record_label
from generation import services as gen
from generation.backends.base import SamplingConfig
from generation.models import Prompt
from training import services as train

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def test_real_model_closes_one_iteration(db, real_model_dir, staff, settings, tmp_path):
    settings.MODELS_DIR = tmp_path / "models"
    base = gen.register_version("base", real_model_dir)
    for text in ["What is the capital of France?", "Give me one tip for sleeping well.",
                 "Name a primary colour."]:
        Prompt.objects.create(text=text)
    config = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=24, seed=1)
    job = gen.run_generation_job(gen.start_generation_job(base, n_prompts=3, config=config, enqueue=False).pk)
    assert job.status == "succeeded" and job.pairs_made >= 1
    while (assignment := next_pair_for(staff)) is not None:
        record_label(assignment, staff, "left")
    run = train.run_training(train.start_training_run(
        params={"epochs": 1, "batch_size": 2, "learning_rate": 1e-5, "max_length": 256,
                "max_prompt_length": 128}, enqueue=False).pk)
    assert run.status == "succeeded", run.error
    # Policy equals reference at the first step, so the first loss is ln 2.
    assert abs(run.steps.first().data["loss"] - 0.6931) < 1e-3
    answers = gen.answers_for(run.output_version, Prompt.objects.all()[:1], config)
    assert next(iter(answers.values())).text.strip()
