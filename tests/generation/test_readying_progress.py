"""A generation job's last step readies its round's pairs for the queue: in a round that orders by margin, every open
pair of the round (those of earlier jobs too) is scored under the current version, a forward pass per answer. Its
stage read "scoring the round's pairs for its queue order" from the first pair to the last, at 99%, with no count: a
job of a large round stood there for minutes looking stuck."""
import pytest

from annotate import selection
from annotate.models import LabellingRound
from generation import services as gen
from generation.backends.base import SamplingConfig
from generation.models import GenerationJob, Prompt
from jobs import lifecycle

pytestmark = pytest.mark.django_db


def test_the_stage_counts_the_margins_scored(tiny_model_dir, monkeypatch):
    for k in range(6):
        Prompt.objects.create(text=f"Question {k}: name {k} birds.", split="train")
    base = gen.register_version("base", tiny_model_dir)
    LabellingRound.objects.create(number=base.round + 1, queue_order="uncertain")
    monkeypatch.setattr(selection, "CHUNK_PAIRS", 2)
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 0.0)
    stages, real = [], selection.margins

    def scoring(chunk, *args, **kwargs):  # the stage the job's page shows as each chunk of pairs is scored
        stages.append(GenerationJob.objects.values_list("stage", flat=True).get())
        return real(chunk, *args, **kwargs)

    monkeypatch.setattr(selection, "margins", scoring)
    config = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0)
    job = gen.run_generation_job(gen.start_generation_job(base, n_prompts=6, config=config, enqueue=False).pk)
    assert job.status == "succeeded" and job.pairs_made == 6
    assert len(stages) == 3, stages
    assert stages[1:] == ["scoring the margins of the round's pairs for its queue order: 2 of 6",
                          "scoring the margins of the round's pairs for its queue order: 4 of 6"], stages
