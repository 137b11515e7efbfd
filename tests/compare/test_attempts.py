"""A comparison set tried again after a failure walks its answers again from the first (reusing what it stored): its
bar starts that attempt at 0 and says it is trying again; it stood at 78% and then went back to 33%."""
import pytest

from compare import services
from compare.models import CompareJob
from generation import services as gen
from generation.models import Prompt
from jobs import lifecycle


@pytest.mark.django_db
def test_a_set_tried_again_starts_its_bar_over_and_never_moves_it_back(tiny_model_dir, settings, tmp_path,
                                                                       monkeypatch):
    settings.MODELS_DIR = tmp_path / "models"
    a = gen.register_version("base", tiny_model_dir)
    b = gen.register_version("other", tiny_model_dir, parent=a, make_current=False)
    for k in range(3):
        Prompt.objects.create(text=f"Eval question {k}: name a colour.", split="eval")
    job = services.start_compare_job(a, b, limit=3, judge="judges.rules:longer_text",
                                     sampling={"max_new_tokens": 6, "batch_size": 1}, enqueue=False)
    real, calls = services._judge_vote, []

    def judge_down_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise services.JudgeError("judge down")
        return real(*args, **kwargs)

    monkeypatch.setattr(services, "_judge_vote", judge_down_once)
    with pytest.raises(services.JudgeError):
        services.run_compare_job(job.pk)
    assert CompareJob.objects.get(pk=job.pk).progress > 0.6
    seen, report = [], lifecycle.Tracker.report

    def watched(self, **kwargs):
        written = report(self, **kwargs)
        seen.append(CompareJob.objects.values_list("progress", "stage").get(pk=job.pk))
        return written

    monkeypatch.setattr(lifecycle.Tracker, "report", watched)
    claimed = []
    real_claim = lifecycle.claim

    def claim(*args, **kwargs):
        found = real_claim(*args, **kwargs)
        claimed.append((found.progress, found.stage))
        return found

    monkeypatch.setattr(lifecycle, "claim", claim)
    assert services.run_compare_job(job.pk).status == "succeeded"
    assert claimed == [(0.0, "trying again after a failure")]
    bar = [progress for progress, _ in seen]
    assert bar == sorted(bar) and bar[-1] == pytest.approx(1.0)


@pytest.mark.django_db
def test_a_prompt_deleted_after_a_set_was_queued_is_named_in_its_log(versions):
    """A set whose prompt was deleted after it was queued finished "4 of 4" with an empty log."""
    from .conftest import make_prompt
    from .test_services import fake_answerer

    base, child = versions
    prompts = [make_prompt() for _ in range(3)]
    job = services.start_compare_job(child, base, limit=10, enqueue=False)
    assert job.total == 6
    gone = prompts[1].pk
    Prompt.objects.filter(pk=gone).delete()
    job = services.run_compare_job(job.pk, answer=fake_answerer([]))
    assert job.status == CompareJob.SUCCEEDED and (job.done, job.total) == (4, 4)
    assert f"left out 1 prompt deleted after the set was queued: {gone}" in job.log
