"""A generation job cancelled while it samples stores nothing of the chunk in flight, and its bar counted that chunk's
tokens: the job ended "cancelled after 0 of 4 prompts: 0 pairs kept" under a bar at 37%."""
import pytest

from generation import services as gen
from generation.backends.base import SamplingConfig
from generation.models import GenerationJob, Prompt, Response
from jobs import lifecycle

pytestmark = pytest.mark.django_db


def test_a_job_cancelled_while_sampling_ends_its_bar_at_the_prompts_it_kept(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 0.0)  # every report written, the chunk's tokens on the bar
    for k in range(4):
        Prompt.objects.create(text=f"Question {k}: name {k} birds.", split="train")
    base = gen.register_version("base", tiny_model_dir)
    config = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0)
    job = gen.start_generation_job(base, n_prompts=4, config=config, enqueue=False)  # one chunk of 4 prompts
    bars = []

    def on_report(fraction, stage):
        bars.append(fraction)
        if fraction > 0.3:  # Cancel pressed on its page partway into the chunk
            lifecycle.cancel(GenerationJob.objects.get(pk=job.pk))

    job = gen.run_generation_job(job.pk, on_report=on_report)
    assert max(bars) > 0.3 and not Response.objects.exists()
    assert job.status == "cancelled" and job.stage == "cancelled after 0 of 4 prompts: 0 pairs kept", job.stage
    assert (job.done, job.progress, job.percent) == (0, 0.0, 0)
