"""What users rely on from a generation job in bf16, where a prompt's samples may change with the batch it shares
(docs/numerics.md): the same job sampled again stores the same pairs, and a job resumed after a crash adds none
twice, whatever the chunk size or the dtype setting became meanwhile."""
from __future__ import annotations

import copy

import pytest

from annotate.models import Pair
from generation import services as gen
from generation.backends.base import SamplingConfig
from generation.models import GenerationJob, Prompt, Response

SAMPLING = SamplingConfig(n=3, temperature=1.0, top_p=0.95, max_new_tokens=16, seed=5, batch_size=8)


class Crash(Exception):
    """The worker dying after its first chunk was committed."""


@pytest.fixture
def base(db, tiny_model_dir, settings, monkeypatch):
    settings.PREFLOOP_DTYPE = "bfloat16"
    monkeypatch.setattr(gen, "CHUNK_ROWS", 12)  # 4 prompts of SAMPLING's 3 samples a chunk
    gen.release_backends()
    for i in range(10):
        Prompt.objects.create(text=f"Tell me one thing about the number {i}.", split="train")
    yield gen.register_version("base", tiny_model_dir)
    gen.release_backends()


def stored(job: GenerationJob) -> dict:
    """The job's pairs as what a labeller sees: per prompt, the token ids of the two sides, and every sample."""
    pairs = sorted((p.prompt_id, tuple(p.response_a.token_ids), tuple(p.response_b.token_ids))
                   for p in Pair.objects.filter(job=job).select_related("response_a", "response_b"))
    samples = sorted((r.prompt_id, r.sample_index, tuple(r.token_ids), r.logp_sum)
                     for r in Response.objects.filter(job=job))
    return {"pairs": pairs, "samples": samples}


def test_a_bf16_job_sampled_again_after_a_crash_stores_the_same_pairs_and_none_twice(base, settings, monkeypatch):
    first = gen.start_generation_job(base, n_prompts=10, config=SAMPLING, enqueue=False)
    first = gen.run_generation_job(first.pk)
    assert first.status == GenerationJob.SUCCEEDED, first.error
    assert first.params["dtype"] == "bfloat16" and first.params["chunk_prompts"] == 4
    assert [len(c) for c in gen.job_chunks(first)] == [4, 4, 2]
    expected = stored(first)
    assert len(expected["samples"]) == 30 and expected["pairs"]

    # The same job again (its prompts, seeds and settings), on a fresh worker that dies after its first chunk.
    again = GenerationJob.objects.create(version=base, params=copy.deepcopy(first.params), total=first.total)
    again.params.pop("dtype")
    again.save()
    gen.release_backends()

    def crash(done, total):
        raise Crash

    with pytest.raises(Crash):
        gen.run_generation_job(again.pk, progress=crash)
    again.refresh_from_db()
    assert again.done == 4 and Response.objects.filter(job=again).count() == 12

    # Before it resumes, the code's chunk size and the dtype setting change; the job keeps its own.
    monkeypatch.setattr(gen, "CHUNK_ROWS", 9)
    settings.PREFLOOP_DTYPE = "float32"
    gen.release_backends()
    assert [len(c) for c in gen.job_chunks(again)] == [4, 4, 2]  # every prompt keeps its batch neighbours
    again = gen.run_generation_job(again.pk)
    assert again.status == GenerationJob.SUCCEEDED, again.error
    assert again.params["dtype"] == "bfloat16"
    assert stored(again) == expected
    # nothing twice: every (prompt, sample index) once, every pair once, and the job's count says so
    responses = Response.objects.filter(job=again)
    assert responses.count() == 30
    assert responses.values("prompt_id", "sample_index").distinct().count() == 30
    pairs = Pair.objects.filter(job=again)
    assert pairs.count() == again.pairs_made == first.pairs_made
    assert pairs.values("response_a", "response_b").distinct().count() == pairs.count()


def test_a_job_run_twice_at_once_stores_each_sample_once(base):
    """A redelivered task may run the job while it still runs (or after): the second run finds the chunks stored."""
    job = gen.start_generation_job(base, n_prompts=10, config=SAMPLING, enqueue=False)
    GenerationJob.objects.filter(pk=job.pk).update(status=GenerationJob.RUNNING)
    gen.run_generation_job(job.pk)
    GenerationJob.objects.filter(pk=job.pk).update(status=GenerationJob.RUNNING)  # as if redelivered mid-run
    job = gen.run_generation_job(job.pk)
    assert job.status == GenerationJob.SUCCEEDED
    assert Response.objects.filter(job=job).count() == 30
    assert Pair.objects.filter(job=job).count() == job.pairs_made


def test_old_jobs_without_a_recorded_chunk_size_keep_the_chunks_they_were_queued_with(base):
    for i in range(10, 40):
        Prompt.objects.create(text=f"Tell me one thing about the number {i}.", split="train")
    job = gen.start_generation_job(base, n_prompts=40, config=SAMPLING, enqueue=False)
    assert [len(c) for c in gen.job_chunks(job)] == [4] * 10  # recorded: CHUNK_ROWS 12 // 3 samples
    job.params.pop("chunk_prompts")
    assert [len(c) for c in gen.job_chunks(job)] == [16, 16, 8]  # those jobs sampled 16 prompts a call


def test_a_chunk_holds_about_chunk_rows_rows_whatever_k(base, monkeypatch):
    monkeypatch.setattr(gen, "CHUNK_ROWS", 128)
    sizes = {n: gen.chunk_prompts(SamplingConfig.from_dict(dict(SAMPLING.to_dict(), n=n))) for n in (1, 2, 3, 4, 200)}
    assert sizes == {1: 128, 2: 64, 3: 42, 4: 32, 200: 1}
