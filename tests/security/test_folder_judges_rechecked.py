"""From an outside probe: a judge over a folder (judges.llm:LLMJudge?model_dir=...) was allowed once, when its job was
started, and a worker built it whenever it took the job or resumed it after a lost one: an account whose permission
was taken away, or that was deactivated or deleted, meanwhile still had its folder loaded. Each job now reads its
starter's permission again before it builds the judge, as import jobs read theirs; each attack is made here."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from compare import services as compare_services
from compare import tasks as compare_tasks
from compare.models import CompareJob, Vote
from generation import services as gen
from generation import tasks as gen_tasks
from generation.backends.base import SamplingConfig
from generation.models import GenerationJob, Prompt, Response
from loop import services as loop_services
from loop import tasks as loop_tasks
from loop.models import LoopRun
from tests.annotate.factories import make_user

pytestmark = pytest.mark.django_db

BUILT: list[str] = []  # the folders the judge below was built over


def folder_judge(model_dir: str):
    """A judge over a folder, as judges.llm:LLMJudge is, that says when it is built (where LLMJudge loads a model)."""
    BUILT.append(model_dir)
    return lambda prompt, first, second: "a"


SPY = "tests.security.test_folder_judges_rechecked:folder_judge"
PERMISSIONS = ("add_comparejob", "add_generationjob", "add_looprun", "change_modelversion", "add_modelversion")
LOST = {"revoked": "does not have it", "deactivated": "was deactivated", "deleted": "was deleted"}


@pytest.fixture
def judge(settings, tiny_model_dir):
    settings.PREFLOOP_JUDGES = [*settings.PREFLOOP_JUDGES, SPY]
    BUILT.clear()
    return f"{SPY}?model_dir={tiny_model_dir}"


@pytest.fixture
def person(db):
    """Staff allowed to name a judge over a folder when they start the job."""
    person = make_user("starter", is_staff=True)
    person.user_permissions.set(Permission.objects.filter(codename__in=PERMISSIONS))
    return person


@pytest.fixture
def versions(db, tiny_model_dir, settings, tmp_path):
    settings.MODELS_DIR = tmp_path / "models"
    base = gen.register_version("base", tiny_model_dir)
    child = gen.register_version("child", tiny_model_dir, parent=base)
    Prompt.objects.create(text="Which bird sings at dawn?", split=Prompt.EVAL)
    Prompt.objects.create(text="Name three birds.", split=Prompt.TRAIN, tag="t")
    return base, child


def lose(person, how: str) -> None:
    """What happened to the starter's account after the job was started."""
    if how == "revoked":
        person.user_permissions.remove(Permission.objects.get(codename="add_modelversion"))
    elif how == "deactivated":
        person.is_active = False
        person.save(update_fields=["is_active"])
    else:
        person.delete()


def answerer(version, prompts, config, *, seed, on_progress=None, should_stop=None, on_partial=None):
    """Stands in for the model: one stored answer per prompt."""
    return {p.pk: Response.objects.get_or_create(prompt=p, version=version,
                                                 defaults={"text": f"{version.name} says hi", "token_count": 3})[0]
            for p in prompts}


def refused(job, judge: str, how: str) -> None:
    job.refresh_from_db()
    assert job.status == job.FAILED, (job.status, job.error)
    assert judge in job.error and "'generation.add_modelversion'" in job.error and LOST[how] in job.error
    assert BUILT == []


@pytest.mark.parametrize("how", list(LOST))
def test_a_queued_comparison_set_builds_no_folder_judge_for_a_starter_who_lost_the_right(
        judge, person, versions, monkeypatch, how):
    base, child = versions
    job = compare_services.start_compare_job(child, base, limit=1, judge=judge, user=person, enqueue=False)
    BUILT.clear()  # built once when it was started, with the permission
    lose(person, how)
    monkeypatch.setattr(compare_services, "_default_answerer", lambda: answerer)
    compare_tasks.answer_compare_job.apply(args=[job.pk])
    refused(job, judge, how)
    assert not Response.objects.exists() and not job.comparisons.exists()  # nothing more stored


def test_a_comparison_set_resumed_after_a_lost_worker_keeps_what_it_stored_and_builds_no_judge(
        judge, person, versions, monkeypatch):
    base, child = versions
    job = compare_services.start_compare_job(child, base, limit=1, judge=judge, user=person, enqueue=False)
    monkeypatch.setattr(compare_services, "_default_answerer", lambda: answerer)
    monkeypatch.setattr(compare_services, "judge_comparisons", lambda *args, **kwargs: None)  # lost while judging
    compare_services.run_compare_job(job.pk)
    CompareJob.objects.filter(pk=job.pk).update(status=CompareJob.RUNNING, finished=None)
    monkeypatch.undo()
    BUILT.clear()
    lose(person, "revoked")
    monkeypatch.setattr(compare_services, "_default_answerer", lambda: answerer)
    compare_tasks.answer_compare_job.apply(args=[job.pk])
    refused(job, judge, "revoked")
    assert job.comparisons.count() == 1 and Response.objects.count() == 2 and not Vote.objects.exists()
    assert "resuming" in job.log


def test_a_comparison_set_gives_up_a_judge_the_starter_loses_while_it_answers(judge, person, versions, monkeypatch):
    base, child = versions
    job = compare_services.start_compare_job(child, base, limit=1, judge=judge, user=person, enqueue=False)
    BUILT.clear()

    def answer_then_lose(version, prompts, config, **kwargs):
        lose(person, "revoked")
        return answerer(version, prompts, config, **kwargs)

    compare_services.run_compare_job(job.pk, answer=answer_then_lose)
    refused(job, judge, "revoked")
    assert job.comparisons.count() == 1 and not Vote.objects.exists()  # the answers and the set stay, no vote


def test_a_command_s_set_builds_its_folder_judge_and_an_unmarked_one_without_a_starter_does_not(
        judge, versions, monkeypatch):
    """A command's user reads the server's folders anyway: its job is marked so when it is started. A job with no
    starter and no such mark was a person's whose account is gone (or was started before the mark)."""
    base, child = versions
    monkeypatch.setattr(compare_services, "_default_answerer", lambda: answerer)
    job = compare_services.start_compare_job(child, base, limit=1, judge=judge, enqueue=False)
    assert compare_services.run_compare_job(job.pk).status == CompareJob.SUCCEEDED and BUILT
    other = compare_services.start_compare_job(base, child, limit=1, judge=judge, enqueue=False)
    BUILT.clear()
    CompareJob.objects.filter(pk=other.pk).update(params={k: other.params[k] for k in ("seed", "sampling", "judge")})
    compare_services.run_compare_job(other.pk)
    refused(other, judge, "deleted")


@pytest.mark.parametrize("how", list(LOST))
def test_a_queued_generation_job_builds_no_folder_judge_for_a_starter_who_lost_the_right(
        judge, person, versions, how):
    base, child = versions
    config = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=0)
    job = gen.start_generation_job(child, n_prompts=1, config=config, pairing="judge", judge=judge, user=person,
                                   enqueue=False)
    BUILT.clear()
    lose(person, how)
    gen_tasks.run_generation_job.apply(args=[job.pk])
    refused(job, judge, how)
    assert not Response.objects.filter(job=job).exists() and not GenerationJob.objects.get(pk=job.pk).pairs_made


@pytest.mark.parametrize("which", ["judge", "eval_judge"])
@pytest.mark.parametrize("how", list(LOST))
def test_a_loop_run_builds_no_folder_judge_for_a_starter_who_lost_the_right(
        judge, person, versions, monkeypatch, how, which):
    chosen = {"judge": judge, "eval_judge": "judges.rules:longer_text"}
    if which == "eval_judge":
        chosen = {"judge": "judges.rules:longer_text", "eval_judge": judge}
    run = loop_services.start_loop_run(rounds=1, pairs=1, tag="t", eval_limit=1, user=person, enqueue=False,
                                       preset="quick", **chosen)
    BUILT.clear()
    lose(person, how)

    def no_round(*args, **kwargs):
        raise loop_services.LoopError("this test runs no round")

    monkeypatch.setattr(loop_services, "_one_round", no_round)
    loop_tasks.run_loop_task.apply(args=[run.pk])
    refused(run, judge, how)


def test_a_loop_run_resumed_after_a_lost_worker_builds_no_folder_judge_for_a_starter_who_lost_the_right(
        judge, person, versions, monkeypatch):
    run = loop_services.start_loop_run(rounds=2, pairs=1, judge=judge, tag="t", eval_limit=1, user=person,
                                       enqueue=False, preset="quick")
    kept = [{"round": 1, "version": "child"}]
    LoopRun.objects.filter(pk=run.pk).update(status=LoopRun.RUNNING, attempts=1, results=kept)
    BUILT.clear()
    lose(person, "revoked")
    monkeypatch.setattr(loop_services, "_one_round", lambda *args, **kwargs: pytest.fail("a round ran"))
    loop_tasks.run_loop_task.apply(args=[run.pk])
    refused(run, judge, "revoked")
    assert run.results == kept and "resuming" in run.log


def test_a_command_s_loop_run_and_generation_job_build_their_folder_judge(judge, versions, monkeypatch):
    """The commands' loop runs (run_loop) and generation jobs (generate_pairs --queue) are marked as a command's
    too, so a worker builds their judge over a folder, as it does a command's comparison set's."""
    base, child = versions
    run = loop_services.start_loop_run(rounds=1, pairs=1, judge=judge, tag="t", eval_limit=1, enqueue=False,
                                       preset="quick")
    BUILT.clear()
    monkeypatch.setattr(loop_services, "_one_round", lambda *args, **kwargs: pytest.fail("built, and a round ran"))
    with pytest.raises(pytest.fail.Exception, match="a round ran"):
        loop_services.run_loop(run.pk)
    assert BUILT  # its judge was built: not refused
    config = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=0)
    job = gen.start_generation_job(child, n_prompts=1, config=config, pairing="judge", judge=judge, enqueue=False)
    BUILT.clear()
    monkeypatch.setattr(gen, "backend_for", lambda *args, **kwargs: pytest.fail("built, and the model loaded"))
    with pytest.raises(pytest.fail.Exception, match="the model loaded"):  # past the check, which comes first
        gen.run_generation_job(job.pk)
