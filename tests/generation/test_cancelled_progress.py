"""A generation job cancelled while it samples stores nothing of the chunk in flight, and its bar counted that chunk's
tokens: the job ended "cancelled after 0 of 4 prompts: 0 pairs kept" under a bar at 37%. And a job resumed after a
lost worker says the pairs it really kept."""
import pytest

from annotate.models import Pair
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


@pytest.fixture
def two_chunk_job(db, tiny_model_dir, monkeypatch) -> GenerationJob:
    """A job of 4 prompts sampled in two chunks of 2, not yet run, whose row is asked at every check whether to stop
    (a cancel is seen at once, not up to CHECK_EVERY_S later)."""
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    for k in range(4):
        Prompt.objects.create(text=f"Question {k}: name {k} birds.", split="train")
    base = gen.register_version("base", tiny_model_dir)
    config = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0)
    job = gen.start_generation_job(base, n_prompts=4, config=config, enqueue=False)
    GenerationJob.objects.filter(pk=job.pk).update(params=dict(job.params, chunk_prompts=2))
    return GenerationJob.objects.get(pk=job.pk)


class WorkerKilled(BaseException):
    """The worker's process killed (out of memory, say): nothing of the job's own handling runs."""


def test_a_job_resumed_after_a_worker_lost_between_a_chunk_and_its_count_says_the_pairs_it_kept(two_chunk_job,
                                                                                                monkeypatch):
    """A chunk's answers and pairs are stored in one transaction and counted on the job's row in the next: a worker
    lost between the two left the chunk's pairs out of pairs_made for good, and the resumed job, cancelled, said
    "cancelled after 2 of 4 prompts: 0 pairs kept" with 2 pairs in the queue."""
    job = two_chunk_job
    store = gen._store_samples

    def store_then_die(*args, **kwargs):
        store(*args, **kwargs)
        raise WorkerKilled  # the first chunk is committed, its count is not

    monkeypatch.setattr(gen, "_store_samples", store_then_die)
    with pytest.raises(WorkerKilled):
        gen.run_generation_job(job.pk)
    monkeypatch.setattr(gen, "_store_samples", store)

    def on_report(fraction, stage):
        if stage.startswith("sampling prompts 3"):  # Cancel pressed while the resumed job samples its second chunk
            lifecycle.cancel(GenerationJob.objects.get(pk=job.pk))

    job = gen.run_generation_job(job.pk, on_report=on_report)  # the next worker resumes it
    kept = Pair.objects.filter(job=job).count()
    assert kept == 2 and job.pairs_made == kept
    assert job.status == "cancelled" and job.stage == "cancelled after 2 of 4 prompts: 2 pairs kept", job.stage


class LoopStub:
    """A loop run's tracker that the job runs inside, cancelled: it raises JobCancelled as the job's next report is
    passed up to it once the job's first chunk is stored (the loop's report checks its own stop)."""

    on_child = None

    def should_stop(self, *, fresh=False):
        return False

    def tell(self, fraction, stage):
        if Response.objects.exists():
            raise lifecycle.JobCancelled


def test_a_job_whose_loop_is_cancelled_after_a_chunk_is_stored_counts_that_chunk(two_chunk_job):
    """A prompt deleted while its chunk sampled is left out once the chunk is stored, and the report of the lowered
    total, passed to the loop run the job is part of, raises its cancel before the job's row counts the chunk: the job
    ended "cancelled after 0 of 3 prompts: 0 pairs kept" with the chunk's prompt and pair stored and its bar at 1/3."""
    job = two_chunk_job
    doomed = job.params["prompt_ids"][1]
    loop = LoopStub()
    loop.on_child = loop.tell

    def on_report(fraction, stage):
        if stage.startswith("sampling prompts 1") and Prompt.objects.filter(pk=doomed).exists():
            Prompt.objects.filter(pk=doomed).delete()  # deleted in the admin while its chunk samples

    job = gen.run_generation_job(job.pk, on_report=on_report, parents=[loop])
    kept = Pair.objects.filter(job=job).count()
    assert Response.objects.values("prompt_id").distinct().count() == 1 and kept >= 1
    assert job.status == "cancelled", job.stage
    assert job.stage == f"cancelled after 1 of 3 prompts: {kept} pair{'s' if kept != 1 else ''} kept", job.stage
    assert (job.done, job.pairs_made, job.progress) == (1, kept, pytest.approx(1 / 3))
