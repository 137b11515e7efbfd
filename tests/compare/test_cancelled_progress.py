"""A comparison set cancelled while a version answers stores nothing of the batch in flight, and its bar counted that
batch's tokens: the set ended "cancelled after 4 of 8 answers: 4 answers kept for reuse" under a bar at 68%."""
import pytest

from compare import services
from compare.models import CompareJob
from generation.backends.base import GenerationCancelled
from jobs import lifecycle
from tests.compare.conftest import make_prompt, make_response

pytestmark = pytest.mark.django_db


def test_a_set_cancelled_while_answering_ends_its_bar_at_the_answers_it_kept(versions, monkeypatch):
    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 0.0)  # every report written, the batch's tokens on the bar
    a, b = versions
    for _ in range(4):
        make_prompt()
    job = services.start_compare_job(a, b, enqueue=False)

    def answer(version, prompts, config, *, seed, on_progress, should_stop, on_partial):
        if version == b:  # B is halfway through its batch when Cancel is pressed on the set's page
            on_partial(len(prompts) / 2, len(prompts))
            services.cancel_compare_job(CompareJob.objects.get(pk=job.pk))
            if should_stop():
                raise GenerationCancelled("answering stopped on request")
        answers = {p.pk: make_response(p, version) for p in prompts}
        on_progress(len(prompts), len(prompts))
        return answers

    job = services.run_compare_job(job.pk, answer=answer)
    assert job.status == "cancelled"
    assert job.stage == "cancelled after 4 of 8 answers: 4 answers kept for reuse, no comparisons made", job.stage
    assert (job.done, job.progress, job.percent) == (4, 0.5, 50)


def test_a_set_cancelled_in_its_first_new_batch_counts_the_answers_it_reuses(tiny_model_dir, settings, tmp_path,
                                                                            monkeypatch):
    """A set reuses the answers stored before for its prompts (an earlier set's, an evaluation's), and counted them
    only once a batch of new ones was stored: cancelled while A sampled its first new batch, with 2 of its 4 prompts
    answered by A already, it said "cancelled after 0 of 8 answers: 0 answers kept for reuse" under a bar at 0, its
    bar having stood past those 2 answers while it sampled."""
    from generation import services as gen
    from generation.models import Prompt, Response

    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    monkeypatch.setattr(lifecycle, "WRITE_EVERY_S", 0.0)  # every report written, the batch's tokens on the bar
    settings.MODELS_DIR = tmp_path / "models"
    a = gen.register_version("base", tiny_model_dir)
    b = gen.register_version("other", tiny_model_dir, parent=a, make_current=False)
    for k in range(4):
        Prompt.objects.create(text=f"Eval question {k}: name a colour.", split="eval")
    job = services.start_compare_job(a, b, limit=4, sampling={"max_new_tokens": 8, "batch_size": 1}, enqueue=False)
    by_id = Prompt.objects.in_bulk(job.prompt_ids)
    earlier = [by_id[pk] for pk in job.prompt_ids[:2]]  # A answered these two before, with the set's settings
    gen.answers_for(a, earlier, services._sampling_config(job.params["sampling"]), seed=int(job.params.get("seed", 0)))
    assert Response.objects.filter(version=a).count() == 2
    bars = []

    def on_report(fraction, stage):
        bars.append(fraction)
        if fraction > 2 / 8:  # A samples its first new answer: Cancel pressed on the set's page
            services.cancel_compare_job(CompareJob.objects.get(pk=job.pk))

    job = services.run_compare_job(job.pk, on_report=on_report)
    assert max(bars) > 2 / 8 and Response.objects.filter(version=a).count() == 2  # nothing of the batch stored
    assert job.status == "cancelled"
    assert job.stage == "cancelled after 2 of 8 answers: 2 answers kept for reuse, no comparisons made", job.stage
    assert (job.done, job.progress) == (2, pytest.approx(2 / 8))
