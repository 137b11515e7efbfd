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
