"""A generation job resumed after a lost worker, or retried after a failure, samples again from the chunk the lost
attempt was in: its bar, left where that attempt was (partway into a chunk, the tokens it had sampled), went back at
the new attempt's first report, whose stage read "loading the model", with no word of why."""
import pytest

from generation import services as gen
from generation.backends.base import SamplingConfig
from generation.models import GenerationJob, Prompt
from tests.labelled import rows_at_reports, went_back

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("left", ["running", "failed"])
def test_a_resumed_job_says_why_its_bar_went_back(tiny_model_dir, monkeypatch, left):
    for k in range(4):
        Prompt.objects.create(text=f"Question {k}: name {k} birds.", split="train")
    base = gen.register_version("base", tiny_model_dir)
    config = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0)
    job = gen.start_generation_job(base, n_prompts=4, config=config, enqueue=False)
    # the lost (or failed) attempt was partway into its one chunk: nothing of it stored
    GenerationJob.objects.filter(pk=job.pk).update(status=left, attempts=1, progress=0.6, stage="sampling prompts 1–4",
                                                   error="boom" if left == "failed" else "")
    rows = rows_at_reports(monkeypatch, GenerationJob)
    job = gen.run_generation_job(job.pk)
    assert job.status == "succeeded"
    claimed = rows[0]
    assert claimed[0] == 0.0 and "after" in claimed[1], claimed  # back at the claim, its stage saying why
    assert not went_back(rows), went_back(rows)


def test_a_job_has_measured_its_versions_answer_length_when_it_says_it_succeeded(tiny_model_dir, monkeypatch):
    """The job said "succeeded" and only then stored its version's mean answer length: a reader of the finished job
    (a script or a test reading the version's row) found the length without the job's answers."""
    from jobs import lifecycle

    for k in range(2):
        Prompt.objects.create(text=f"Question {k}: name {k} birds.", split="train")
    base = gen.register_version("base", tiny_model_dir)
    config = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0)
    job = gen.start_generation_job(base, n_prompts=2, config=config, enqueue=False)
    finish, seen = lifecycle.finish, []

    def saying_succeeded(job_, **fields):  # the moment the job's row says "succeeded": its version's stored length
        seen.append(type(base).objects.values_list("mean_response_tokens", flat=True).get(pk=base.pk))
        return finish(job_, **fields)

    monkeypatch.setattr(lifecycle, "finish", saying_succeeded)
    assert gen.run_generation_job(job.pk).status == "succeeded"
    measured = type(base).objects.values_list("mean_response_tokens", flat=True).get(pk=base.pk)
    assert measured is not None and seen == [measured], f"the job said it succeeded with the length at {seen}"
