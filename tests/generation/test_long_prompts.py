"""A prompt too long for the model's context: the job leaves it out and says so, instead of failing on it."""
import pytest

from generation import services as gen
from generation.models import GenerationJob, Prompt, Response
from tests.test_loop import SAMPLING


@pytest.fixture
def base(db, tiny_model_dir, settings, tmp_path):
    settings.MODELS_DIR = tmp_path / "models"
    return gen.register_version("base", tiny_model_dir)


def test_a_prompt_too_long_for_the_context_is_skipped_and_named_in_the_log(base):
    """One such prompt among thousands refused its whole batch and failed the job (and a loop's sampling with it)."""
    short = [Prompt.objects.create(text=f"question {i}: what is {i} plus {i}?") for i in range(3)]
    long = Prompt.objects.create(text="tell me " + "about the sea " * 400)  # well past the tiny model's 512 tokens
    job = gen.start_generation_job(base, n_prompts=4, config=SAMPLING, enqueue=False)
    assert set(job.params["prompt_ids"]) == {p.pk for p in [*short, long]}
    job = gen.run_generation_job(job.pk)
    assert job.status == "succeeded", job.error
    answered = set(Response.objects.filter(job=job).values_list("prompt_id", flat=True))
    assert answered == {p.pk for p in short}
    assert job.done == 3 and job.pairs_made == 3
    assert f"skipped prompt {long.pk}: the prompt 'tell me about the sea" in job.log
    assert "exceeds the model's context of 512" in job.log
    assert job.total == 3 and job.progress == 1.0  # "3 / 3 prompts", the fourth named in the log


def test_a_resumed_job_does_not_sample_again_for_a_skipped_prompt(base, monkeypatch):
    """A worker lost after the last chunk (scoring the queue, say) left the job running; the next worker resumes it.
    The skipped prompt has no answers, so it read as not yet sampled: its chunk was sampled again, the model loaded
    for it, and the log named it twice."""
    from jobs.models import Status

    Prompt.objects.create(text="question: what is 1 plus 1?")
    Prompt.objects.create(text="tell me " + "about the sea " * 400)
    job = gen.run_generation_job(gen.start_generation_job(base, n_prompts=2, config=SAMPLING, enqueue=False).pk)
    assert job.status == "succeeded" and job.log.count("skipped prompt") == 1
    GenerationJob.objects.filter(pk=job.pk).update(status=Status.RUNNING, finished=None)  # as the lost worker left it

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded again: nothing is left to sample")

    monkeypatch.setattr(gen, "backend_for", no_model)
    job = gen.run_generation_job(job.pk)
    assert job.status == "succeeded", job.error
    assert job.log.count("skipped prompt") == 1 and job.total == 1


def test_a_job_whose_every_prompt_is_too_long_fails_saying_so(base):
    for i in range(2):
        Prompt.objects.create(text=f"question {i}: what is {i} plus {i}?")
    config = SAMPLING.__class__.from_dict(dict(SAMPLING.to_dict(), max_new_tokens=600))  # more than the context
    job = gen.start_generation_job(base, n_prompts=2, config=config, enqueue=False)
    with pytest.raises(gen.GenerationError, match=r"every prompt of the job was skipped \(2\)"):
        gen.run_generation_job(job.pk)
    job = GenerationJob.objects.get(pk=job.pk)
    assert job.status == "failed" and "max_new_tokens 600" in job.error
    assert job.log.count("skipped prompt") == 2 and not Response.objects.filter(job=job).exists()


def test_the_next_job_of_the_version_is_not_offered_a_prompt_it_left_out(base):
    """Each later job of the version picked the long prompt again and came up one prompt short."""
    Prompt.objects.create(text="question: what is 1 plus 1?")
    long = Prompt.objects.create(text="tell me " + "about the sea " * 400)
    first = gen.run_generation_job(gen.start_generation_job(base, n_prompts=2, config=SAMPLING, enqueue=False).pk)
    assert first.params["skipped_prompt_ids"] == [long.pk]
    new = Prompt.objects.create(text="question: what is 2 plus 2?")
    assert gen.start_generation_job(base, n_prompts=5, config=SAMPLING, enqueue=False).params["prompt_ids"] == [new.pk]
    # asked for as many new tokens it is not offered; for fewer it may fit, and it is offered again
    fewer = SAMPLING.__class__.from_dict(dict(SAMPLING.to_dict(), max_new_tokens=4))
    assert long.pk in gen.start_generation_job(base, n_prompts=5, config=fewer, enqueue=False).params["prompt_ids"]


def test_a_prompt_deleted_while_the_job_waited_is_left_out_and_said(base):
    """The admin deletes prompts; one deleted after a job chose it was dropped unsaid, and the job "succeeded" at 2 of
    3 prompts with nothing in its log."""
    prompts = [Prompt.objects.create(text=f"question {i}: what is {i} plus {i}?") for i in range(3)]
    job = gen.start_generation_job(base, n_prompts=3, config=SAMPLING, enqueue=False)
    gone = prompts[1].pk
    prompts[1].delete()
    job = gen.run_generation_job(job.pk)
    assert job.status == "succeeded", job.error
    assert f"skipped prompt {gone}: the prompt was deleted after the job started" in job.log
    assert (job.done, job.total, job.progress) == (2, 2, 1.0)
    for i in range(2):
        Prompt.objects.create(text=f"another question {i}?")
    again = gen.start_generation_job(base, n_prompts=2, config=SAMPLING, enqueue=False)
    Prompt.objects.all().delete()  # every prompt gone: the job fails saying why
    with pytest.raises(gen.GenerationError, match=r"every prompt of the job was skipped \(2\): deleted"):
        gen.run_generation_job(again.pk)


@pytest.mark.django_db(transaction=True)
def test_a_prompt_deleted_while_its_chunk_is_sampled_is_left_out_not_the_chunk(tiny_model_dir, settings, tmp_path,
                                                                               monkeypatch):
    """Deleted while its chunk sampled (the long window), its answers failed the chunk's transaction (a foreign key
    to nothing) and the job with it."""
    settings.MODELS_DIR = tmp_path / "models"
    base = gen.register_version("base", tiny_model_dir)
    prompts = [Prompt.objects.create(text=f"question {i}: what is {i} plus {i}?") for i in range(3)]
    job = gen.start_generation_job(base, n_prompts=3, config=SAMPLING, enqueue=False)
    real = gen.backend_for

    def backend_for(*args, **kwargs):
        backend = real(*args, **kwargs)
        generate = backend.generate

        def deleting(*args, **kwargs):
            out = generate(*args, **kwargs)
            Prompt.objects.filter(pk=prompts[1].pk).delete()  # the admin, while the chunk sampled
            return out

        backend.generate = deleting
        return backend

    monkeypatch.setattr(gen, "backend_for", backend_for)
    job = gen.run_generation_job(job.pk)
    assert job.status == "succeeded", job.error
    assert f"skipped prompt {prompts[1].pk}: the prompt was deleted after the job started" in job.log
    assert (job.done, job.total) == (2, 2) and Response.objects.filter(job=job).values("prompt").distinct().count() == 2
