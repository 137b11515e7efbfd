"""Comparison sets answered by a worker, votes one per person, automatic judges filling the same vote table."""
import pytest

from annotate.judging import judge_account
from compare import services
from compare.models import CompareJob, Comparison, Vote
from generation.models import Prompt, Response

from .conftest import make_comparison, make_job, make_prompt

pytestmark = pytest.mark.django_db


def fake_answerer(calls: list):
    """Stands in for generation.services.answers_for: stores one answer per prompt, reusing stored ones."""

    def answer(version, prompts, config, *, seed, on_progress=None, should_stop=None, on_partial=None):
        calls.append((version.name, [p.pk for p in prompts], seed))
        out = {}
        for k, prompt in enumerate(prompts, 1):
            out[prompt.pk], _ = Response.objects.get_or_create(
                prompt=prompt, version=version, defaults={"text": f"{version.name} says hi", "token_count": 3}
            )
            if on_progress:
                on_progress(k, len(prompts))
        return out

    return answer


def test_a_set_is_answered_by_both_versions_then_paired_once_per_prompt(versions):
    base, child = versions
    prompts = [make_prompt() for _ in range(3)]
    make_prompt(split=Prompt.TRAIN)
    job = services.start_compare_job(child, base, limit=10, seed=7, enqueue=False)
    assert job.prompt_ids == [p.pk for p in prompts] and job.total == 6  # eval split only

    calls = []
    job = services.run_compare_job(job.pk, answer=fake_answerer(calls))
    assert job.status == CompareJob.SUCCEEDED and job.done == job.total == 6
    assert [c[0] for c in calls] == ["okapi-round-one", "zebrafinch-base"] and calls[0][2] == 7
    comparisons = list(job.comparisons.all())
    assert len(comparisons) == 3
    assert all(c.version_a == child and c.version_b == base for c in comparisons)

    CompareJob.objects.filter(pk=job.pk).update(status=CompareJob.RUNNING)  # a second delivery of the task
    services.run_compare_job(job.pk, answer=fake_answerer(calls))
    assert Comparison.objects.filter(job=job).count() == 3
    assert Response.objects.count() == 6


def test_sides_are_randomised(versions):
    base, child = versions
    for _ in range(40):
        make_prompt()
    job = services.start_compare_job(child, base, limit=40, enqueue=False)
    services.run_compare_job(job.pk, answer=fake_answerer([]))
    lefts = list(job.comparisons.values_list("left_is_a", flat=True))
    assert 0 < sum(lefts) < 40


def test_a_failure_is_recorded_on_the_set(versions):
    base, child = versions
    make_prompt()
    job = services.start_compare_job(child, base, enqueue=False)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        services.run_compare_job(job.pk, answer=broken)
    job.refresh_from_db()
    assert job.status == CompareJob.FAILED and job.error == "RuntimeError: out of memory"


def test_bad_choices_give_clear_errors(versions):
    base, child = versions
    with pytest.raises(services.CompareError, match="two different versions"):
        services.start_compare_job(base, base, enqueue=False)
    with pytest.raises(services.CompareError, match="eval split has no prompts"):
        services.start_compare_job(child, base, enqueue=False)
    with pytest.raises(services.CompareError, match="no prompt with id 999"):
        services.start_compare_job(child, base, prompt_ids=[999], enqueue=False)


def test_a_typed_prompt_is_stored_once_and_kept_out_of_the_eval_set(versions):
    base, child = versions
    job = services.start_compare_job(child, base, text="  Write a haiku about tea.  ", enqueue=False)
    again = services.start_compare_job(child, base, text="write a  haiku about TEA.", enqueue=False, seed=1)
    assert job.prompt_ids == again.prompt_ids
    prompt = Prompt.objects.get(pk=job.prompt_ids[0])
    assert prompt.text == "Write a haiku about tea." and prompt.tag == services.TYPED_TAG
    assert services.eval_prompt_ids(10) == []


def test_the_same_set_sent_twice_while_the_first_is_active_is_refused_naming_it(versions):
    """A double click on Start (or a retried request) made two sets of the same comparison: both versions answered
    the same prompts twice, and the votes were split between two sets."""
    base, child = versions
    make_prompt()
    first = services.start_compare_job(child, base, limit=4, enqueue=False)
    with pytest.raises(services.CompareError, match=f"comparison set {first.pk} of these versions on these prompts "
                                                    "with these settings is queued already"):
        services.start_compare_job(child, base, limit=4, enqueue=False)
    assert CompareJob.objects.count() == 1
    # other settings, the other order, or side by side are other sets
    services.start_compare_job(child, base, limit=4, seed=7, enqueue=False)
    services.start_compare_job(base, child, limit=4, enqueue=False)
    services.start_compare_job(child, base, limit=4, blind=False, enqueue=False)
    # one compare_versions runs in its own process is the same set too; one inside a loop run is the loop's
    CompareJob.objects.filter(pk=first.pk).update(part_of="foreground")
    with pytest.raises(services.CompareError, match=f"comparison set {first.pk} "):
        services.start_compare_job(child, base, limit=4, enqueue=False)
    CompareJob.objects.filter(pk=first.pk).update(part_of="loop.looprun:1")
    inside = services.start_compare_job(child, base, limit=4, enqueue=False)
    services.cancel_compare_job(inside)
    # once the first is being stopped, or has ended, it may be run again
    CompareJob.objects.filter(pk=first.pk).update(part_of="", status="cancelling")
    stopping_then = services.start_compare_job(child, base, limit=4, enqueue=False)
    services.cancel_compare_job(stopping_then)
    services.cancel_compare_job(first)
    assert services.start_compare_job(child, base, limit=4, enqueue=False).pk != first.pk


def test_default_versions_are_the_current_one_and_its_parent(versions):
    base, child = versions
    assert services.default_versions() == (child, base)


def test_one_vote_per_person(versions, staff, annotator):
    base, child = versions
    comparison = make_comparison(child, base)
    services.record_vote(comparison, annotator, "a")
    with pytest.raises(services.CompareError, match="already voted"):
        services.record_vote(comparison, annotator, "b")
    services.record_vote(comparison, staff, "tie")
    assert sorted(comparison.votes.values_list("outcome", flat=True)) == ["a", "tie"]
    with pytest.raises(services.CompareError, match="outcome must be one of"):
        services.record_vote(make_comparison(child, base), staff, "left")


def test_keys_map_to_outcomes_through_the_sides(versions):
    base, child = versions
    flipped = make_comparison(child, base, left_is_a=False)
    assert services.outcome_for_side(flipped, "left") == "b"
    assert services.outcome_for_side(flipped, "right") == "a"
    assert services.outcome_for_side(flipped, "both_bad") == "both_bad"
    assert services.side_for_outcome(flipped, "b") == "left"


def test_a_judge_voting_on_a_chat_prompt_sees_the_whole_conversation(versions):
    """The evaluation's judge was given the chat's last user turn alone (Prompt.text), without its system prompt and
    history, while labelling and pairing show the whole conversation."""
    from prefcore.chat import prompt_text

    base, child = versions
    comparison = make_comparison(child, base)
    chat = [{"role": "system", "content": "Answer as a pirate."}, {"role": "user", "content": "Name a fruit."},
            {"role": "assistant", "content": "Arr, a mango."}, {"role": "user", "content": "Another one?"}]
    comparison.prompt.messages, comparison.prompt.text = chat, "Another one?"
    comparison.prompt.save()
    seen = []
    services.judge_comparisons([comparison], lambda prompt, a, b: seen.append(prompt) or "a", "tests.seen",
                               judge_account("tests.seen"))
    assert seen == [prompt_text(chat)] and "Answer as a pirate." in seen[0] and "Arr, a mango." in seen[0]


def test_judges_vote_like_people_in_the_order_people_saw(versions):
    base, child = versions
    job = make_job(child, base, n=4, left_is_a=(True, False))
    seen = []

    def prefer_first(prompt, first, second):
        seen.append(first)
        return "a"

    voter = judge_account("tests.prefer_first")
    votes = services.judge_comparisons(job.comparisons.order_by("pk"), prefer_first, "tests.prefer_first", voter)
    assert len(votes) == 4 and all(v.is_automatic and v.judge == "tests:prefer_first" for v in votes)
    # the judge always picked the left answer: version A where A was on the left, B elsewhere
    assert [v.outcome for v in votes] == ["a", "b", "a", "b"]
    assert seen[1] == "answer of B number 1"
    assert voter.annotator_profile.is_automatic
    assert services.judge_comparisons(job.comparisons.all(), prefer_first, "tests.prefer_first", voter) == []


def test_a_bad_judge_answer_names_the_judge_and_the_comparison_and_keeps_earlier_votes(versions):
    base, child = versions
    job = make_job(child, base, n=3)
    comparisons = list(job.comparisons.order_by("pk"))
    answers = iter(["tie", "maybe"])
    voter = judge_account("flaky")
    with pytest.raises(services.JudgeError) as info:
        services.judge_comparisons(comparisons, lambda p, a, b: next(answers), "flaky", voter)
    assert str(info.value) == (f"judge 'flaky' on comparison {comparisons[1].pk} returned 'maybe'; "
                               "expected 'a', 'b', 'tie', 'both_bad' or a probability in [0, 1]")
    assert list(Vote.objects.values_list("comparison_id", "outcome")) == [(comparisons[0].pk, "tie")]

    def crashing(prompt, a, b):
        raise ValueError("model not loaded")

    with pytest.raises(services.JudgeError, match=f"judge 'flaky' on comparison {comparisons[1].pk} raised "
                                                  "ValueError: model not loaded"):
        services.judge_comparisons(comparisons, crashing, "flaky", voter)
    assert Vote.objects.count() == 1


def test_load_judge_errors_are_clear(settings):
    assert services.load_judge("judges.rules:shorter_text")("p", "a", "bb") == "a"
    with pytest.raises(services.JudgeError, match="judge 'nowhere.judge' is not allowed"):
        services.load_judge("nowhere.judge")
    settings.PREFLOOP_JUDGES = ["nowhere.judge", "compare.services.OUTCOMES"]  # listed: loading is tried
    with pytest.raises(services.JudgeError, match="judge 'nowhere.judge': cannot import module 'nowhere'"):
        services.load_judge("nowhere.judge")
    with pytest.raises(services.JudgeError, match="is not callable"):
        services.load_judge("compare.services.OUTCOMES")


def test_the_task_answers_a_set(versions, monkeypatch):
    from compare import tasks

    base, child = versions
    make_prompt()
    job = services.start_compare_job(child, base, enqueue=False)
    monkeypatch.setattr(services, "_default_answerer", lambda: fake_answerer([]))
    tasks.answer_compare_job.apply(args=[job.pk])
    job.refresh_from_db()
    assert job.status == CompareJob.SUCCEEDED and job.comparisons.count() == 1


def test_both_versions_answer_with_the_tiny_model(tiny_model_dir, versions):
    """The real answering path: generation.services.answers_for on a tiny random Llama, answers reused."""
    from generation.models import ModelVersion

    base, child = versions
    ModelVersion.objects.filter(pk__in=[base.pk, child.pk]).update(path=str(tiny_model_dir))
    prompts = [make_prompt(f"Say something about the number {k}.") for k in range(2)]
    job = services.start_compare_job(child, base, limit=2, seed=3, sampling={"max_new_tokens": 6}, enqueue=False)
    job = services.run_compare_job(job.pk)
    assert job.status == CompareJob.SUCCEEDED and job.done == 4
    comparisons = list(job.comparisons.select_related("response_a", "response_b"))
    assert {c.prompt_id for c in comparisons} == {p.pk for p in prompts}
    assert all(0 < c.response_a.token_count <= 6 and c.response_b.version == base for c in comparisons)
    again = services.start_compare_job(child, base, limit=2, seed=3, sampling={"max_new_tokens": 6}, enqueue=False)
    services.run_compare_job(again.pk)
    assert Response.objects.count() == 4  # the same version, prompt, seed and settings: answers reused


def test_a_prompt_too_long_for_the_context_is_left_out_of_a_set_and_named_in_its_log(tiny_model_dir, versions):
    """One such prompt among the eval set refused its batch and failed the set, and a loop's evaluation with it."""
    from generation.models import ModelVersion

    base, child = versions
    ModelVersion.objects.filter(pk__in=[base.pk, child.pk]).update(path=str(tiny_model_dir))
    short = [make_prompt(f"Say something about the number {k}.") for k in range(2)]
    long = make_prompt("tell me " + "about the sea " * 400)  # past the tiny model's 512 tokens
    job = services.start_compare_job(child, base, limit=3, seed=3, sampling={"max_new_tokens": 6}, enqueue=False)
    job = services.run_compare_job(job.pk)
    assert job.status == CompareJob.SUCCEEDED, job.error
    assert {c.prompt_id for c in job.comparisons.all()} == {p.pk for p in short}
    assert f"left out 1 prompt too long to leave room for max_new_tokens 6 in the model's context (ids {long.pk})" in job.log
    assert job.done == 4 and not Response.objects.filter(prompt=long).exists()


def test_a_set_started_without_sampling_settings_leaves_a_long_prompt_out_and_loads_no_model_for_it_again(
        tiny_model_dir, versions, monkeypatch):
    """The API and the client start sets without settings (the defaults): the left-out line read them from None and
    the set failed. And a prompt with no answer sent the next set's answering to load the model only to find it too
    long again (each loop round's measuring of base did): the finding is kept."""
    from generation import services as gen
    from generation.models import ModelVersion

    base, child = versions
    ModelVersion.objects.filter(pk__in=[base.pk, child.pk]).update(path=str(tiny_model_dir))
    make_prompt("Say something about the number 1.")
    long = make_prompt("tell me " + "about the sea " * 400)
    job = services.run_compare_job(services.start_compare_job(child, base, limit=2, enqueue=False).pk)
    assert job.status == CompareJob.SUCCEEDED, job.error
    assert "max_new_tokens 128" in job.log and f"(ids {long.pk})" in job.log
    assert (job.done, job.total) == (2, 2)  # the answers of the one prompt compared: "2 / 2", not "2 / 4"

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded: every answer is stored, the long prompt known too long")

    monkeypatch.setattr(gen, "backend_for", no_model)
    again = services.run_compare_job(services.start_compare_job(child, base, limit=2, enqueue=False).pk)
    assert again.status == CompareJob.SUCCEEDED, again.error
    assert again.comparisons.count() == 1


def test_judge_command_votes_once_and_reports_bad_judges(versions):
    from io import StringIO

    from django.core.management import CommandError, call_command

    base, child = versions
    make_job(child, base, n=3)
    out = StringIO()
    call_command("judge_votes", "--judge", "judges.rules:longer_text", stdout=out, stderr=StringIO())
    assert "3 new votes" in out.getvalue()
    call_command("judge_votes", "--judge", "judges.rules:longer_text", stdout=out, stderr=StringIO())
    assert "0 new votes" in out.getvalue()
    assert Vote.objects.filter(is_automatic=True, judge="judges.rules:longer_text").count() == 3
    with pytest.raises(CommandError, match="judge 'judges.rules.nope' is not allowed: the judges are .*PREFLOOP_JUDGES"):
        call_command("judge_votes", "--judge", "judges.rules.nope", stderr=StringIO())
    # --set 0 named no set and judged every set (it was read as "no --set"); out of range was a traceback
    other = make_job(child, base, n=2)
    for bad in ("0", "-1", str(other.pk + 1000), "99999999999999999999"):
        with pytest.raises(CommandError, match=f"--set {bad}: no such comparison set"):
            call_command("judge_votes", "--judge", "judges.rules:shorter_text", "--set", bad, stderr=StringIO())
    assert not Vote.objects.filter(judge="judges.rules:shorter_text").exists()
    call_command("judge_votes", "--judge", "judges.rules:shorter_text", "--set", str(other.pk), stdout=out,
                 stderr=StringIO())
    assert {v.comparison.job_id for v in Vote.objects.filter(judge="judges.rules:shorter_text")} == {other.pk}
    # a side-by-side set shows the names: people's votes on it are refused, and a judge's are left out too (they
    # counted on the leaderboard's automatic view)
    plain = make_job(child, base, n=2, blind=False)
    with pytest.raises(CommandError, match=f"--set {plain.pk}: a side-by-side set shows the versions' names"):
        call_command("judge_votes", "--judge", "judges.rules:shorter_text", "--set", str(plain.pk), stderr=StringIO())
    call_command("judge_votes", "--judge", "judges.rules:longer_text", stdout=out, stderr=StringIO())
    assert out.getvalue().endswith("2 new votes\n")  # the other blind set's, not the side-by-side one's
    assert not Vote.objects.filter(comparison__job=plain).exists()


def test_compare_command_answers_here(versions, monkeypatch):
    from io import StringIO

    from django.core.management import CommandError, call_command

    base, child = versions
    make_prompt()
    monkeypatch.setattr(services, "_default_answerer", lambda: fake_answerer([]))
    out = StringIO()
    call_command("compare_versions", child.name, base.name, stdout=out, stderr=StringIO())
    job = CompareJob.objects.get()
    assert job.status == CompareJob.SUCCEEDED and f"/compare/sets/{job.pk}/" in out.getvalue()
    with pytest.raises(CommandError, match="no version named 'nobody'"):
        call_command("compare_versions", "nobody", base.name, stderr=StringIO())
    # bad settings are refused before a job exists (they were stored on a job that then failed)
    for args, words in ((["--max-new-tokens", "-5"], "max_new_tokens"), (["--seed", "-1"], "seed must be")):
        with pytest.raises(CommandError, match=words):
            call_command("compare_versions", child.name, base.name, *args, stderr=StringIO())
    assert CompareJob.objects.count() == 1


def test_a_set_whose_judge_failed_after_answering_stays_open_to_votes_and_says_so(versions, client, annotator,
                                                                                    listed_test_judges):
    """The set's comparisons were made before its judge failed (or was stopped); the stage said the set "stays
    votable", but the page showed it as a failed answering with nothing to vote on."""
    base, child = versions
    for _ in range(2):
        make_prompt()
    job = services.start_compare_job(child, base, limit=2, enqueue=False, judge="tests.judges.test_contract:explodes")
    with pytest.raises(services.JudgeError):
        services.run_compare_job(job.pk, answer=fake_answerer([]))
    job.refresh_from_db()
    assert job.status == CompareJob.FAILED and job.comparisons.count() == 2
    client.force_login(annotator)
    page = client.get(f"/compare/sets/{job.pk}/").content.decode()
    assert "Answering failed" not in page
    # the worker's error is for staff (it can name hosts, users and paths): the annotator is told it failed
    assert "The set is answered and open to votes; its judge failed (staff can see why)" in page
    assert "model server down" not in page
    assert 'name="side" value="left"' in page  # a comparison to vote on
    comparison = job.comparisons.order_by("pk").first()
    answer = client.post(f"/compare/comparisons/{comparison.pk}/vote/", {"side": "left"})
    assert answer.status_code == 200 and Vote.objects.filter(voter=annotator).count() == 1


def test_a_sets_bar_moves_with_each_vote_of_its_judge(versions, monkeypatch):
    """The answers took the whole bar: it stood at 99% while the judge voted, and the time left said nothing of the
    votes to come."""
    from jobs import lifecycle

    base, child = versions
    for _ in range(3):
        make_prompt()
    reports, real = [], lifecycle.Tracker.report

    def spy(self, *args, **kwargs):
        if kwargs.get("progress") is not None:
            reports.append((kwargs.get("stage") or "", kwargs["progress"]))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(lifecycle.Tracker, "report", spy)
    job = services.start_compare_job(child, base, limit=3, enqueue=False, judge="judges.rules:longer_text")
    assert services.run_compare_job(job.pk, answer=fake_answerer([])).status == CompareJob.SUCCEEDED
    voting = [k for k, (stage, _) in enumerate(reports) if stage.startswith("judging with")]
    assert len(voting) == 3, reports  # one report a vote
    for k in voting:
        assert reports[k][1] > reports[k - 1][1], reports  # each vote moves the bar
    assert reports[voting[-1]][1] == 1.0


def test_a_judge_votes_on_blind_sets_only(versions):
    """A side-by-side set with a judge had it vote on comparisons people may not vote on (they show the names), and
    those votes counted on the leaderboard's automatic view."""
    from compare.leaderboard import build_board

    base, child = versions
    make_prompt()
    with pytest.raises(services.CompareError, match="a judge votes on blind sets only"):
        services.start_compare_job(child, base, blind=False, judge="judges.rules:longer_text", enqueue=False)
    assert not CompareJob.objects.exists()
    plain = make_job(child, base, n=2, blind=False)  # a judge's votes on one, from before the refusal
    judge = services.judge_account("judges.rules:longer_text")
    for comparison in plain.comparisons.all():
        Vote.objects.create(comparison=comparison, voter=judge, outcome="a", is_automatic=True,
                            judge="judges.rules:longer_text")
    assert build_board(include_automatic=True, bootstrap=20).votes == 0


def test_a_set_whose_prompts_were_all_deleted_fails_saying_so(versions):
    """Its progress divided by its zero prompts; spared that, it ended "succeeded" with nothing compared."""
    base, child = versions
    prompts = [make_prompt() for _ in range(2)]
    job = services.start_compare_job(child, base, limit=10, enqueue=False)
    Prompt.objects.filter(pk__in=[p.pk for p in prompts]).delete()
    with pytest.raises(services.CompareError, match="all 2 prompts of this set were deleted after it was queued"):
        services.run_compare_job(job.pk, answer=fake_answerer([]))
    job.refresh_from_db()
    assert job.status == CompareJob.FAILED and "nothing to compare" in job.error
