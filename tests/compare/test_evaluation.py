"""evaluate: both versions' answers under the same per-prompt seeds, judged blind, counted into one JSON line."""
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from compare.evaluation import evaluate
from compare.models import Comparison, Vote
from generation.backends.base import SamplingConfig
from generation.models import ModelVersion, Prompt, Response
from generation.services import prompt_seed, sampling_key
from judges import JudgeError

# The judges these tests label and vote with (tests/loop/judges_for_tests.py) are listed in settings.
pytestmark = pytest.mark.usefixtures("listed_test_judges")

GOOD = "tests.loop.judges_for_tests:prefers_good"
# b better on 6 prompts, a on 2, a tie and a both-bad: win rate of b = (6 + 0.5 * 2) / 10 = 0.7
TABLE = [("plain", "GOOD")] * 6 + [("GOOD", "plain")] * 2 + [("TIE", "TIE"), ("BAD", "BAD")]


def _stored_answers(version, prompts, texts, seed=0):
    """Answers already stored under the evaluation's sampling key, so no model needs to run."""
    config = SamplingConfig(n=1)
    for prompt, text in zip(prompts, texts, strict=True):
        s = prompt_seed(seed, prompt.pk)
        Response.objects.create(prompt=prompt, version=version, text=f"{text} answer", token_count=len(text),
                                sampling_key=sampling_key(config, s), sampling_params=dict(config.to_dict(), seed=s))


@pytest.fixture
def table(db):
    base = ModelVersion.objects.create(name="base", path="/nowhere/base")
    new = ModelVersion.objects.create(name="round-1", path="/nowhere/round-1", parent=base, round=1)
    prompts = [Prompt.objects.create(text=f"eval prompt {k}", split="eval") for k in range(len(TABLE))]
    Prompt.objects.create(text="a train prompt", split="train")
    _stored_answers(base, prompts, [a for a, _ in TABLE])
    _stored_answers(new, prompts, [b for _, b in TABLE])
    return base, new


def test_counts_win_rate_and_interval(table):
    base, new = table
    result = evaluate(base, new, GOOD)
    s = result.summary
    assert (s["n"], s["b_wins"], s["a_wins"], s["ties"], s["both_bad"]) == (10, 6, 2, 1, 1)
    assert s["win_rate_b"] == 0.7 and s["ci95"][0] < 0.7 < s["ci95"][1]
    # votes are compare votes of the judge's account, marked automatic, on comparisons of the two versions
    votes = Vote.objects.filter(comparison__job=result.job)
    assert votes.count() == 10 and all(v.is_automatic and v.judge == GOOD for v in votes)
    assert {v.voter.username for v in votes} == {f"judge:{GOOD}"}
    assert all(c.response_a.version == base and c.response_b.version == new
               for c in Comparison.objects.filter(job=result.job))
    # no answer was sampled: the stored ones under the same seeds were reused
    assert Response.objects.count() == 20


def test_sides_are_randomised_and_the_judge_sees_them_blind(table):
    base, new = table
    seen = []

    def spy(prompt, first, second):
        seen.append((first, second))
        return "tie"

    patterns = []
    for _ in range(3):  # the same seed each time: the sides are not drawn from it
        result = evaluate(base, new, "spy", judge=spy, limit=10, seed=0)
        patterns.append(tuple(Comparison.objects.filter(job=result.job).order_by("prompt_id")
                              .values_list("left_is_a", flat=True)))
        assert result.summary["win_rate_b"] == 0.5
    # a seeded draw gave every evaluation with one seed the same sides, so the reveals of one blind set told
    # people the sides of the next (each assertion fails by chance once in 2**20 runs or fewer)
    assert len(set(patterns)) > 1
    assert {True, False} <= {side for pattern in patterns for side in pattern}
    assert all("base" not in f and "round" not in f for pair in seen for f in pair)


def test_limit_and_tag(table):
    base, new = table
    assert evaluate(base, new, GOOD, limit=3).summary["n"] == 3
    from compare.services import CompareError

    with pytest.raises(CompareError, match="no prompts in split 'eval' with tag 'nope'"):
        evaluate(base, new, GOOD, tag="nope")


def test_a_failing_judge_names_itself_and_the_comparison(table):
    base, new = table
    with pytest.raises(JudgeError, match=r"judge 'tests.loop.judges_for_tests:says_maybe' on comparison \d+ "
                                         r"returned 'maybe'"):
        evaluate(base, new, "tests.loop.judges_for_tests:says_maybe")


def test_evaluate_command_prints_one_json_line(table, capsys):
    call_command("evaluate", a="base", b="round-1", judge=GOOD)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == {"a": "base", "b": "round-1", "n": 10, "b_wins": 6, "a_wins": 2, "ties": 1, "both_bad": 1,
                    "win_rate_b": 0.7, "ci95": last["ci95"]}
    assert 0.39 < last["ci95"][0] < 0.7 < last["ci95"][1] < 0.92
    with pytest.raises(CommandError, match=r"evaluate: --b: no version named 'round-9' \(known: base, round-1\)"):
        call_command("evaluate", a="base", b="round-9", judge=GOOD)
    with pytest.raises(CommandError, match=r"evaluate: --seed must be from 0 to 2,147,483,647 \(got -1\)"):
        call_command("evaluate", a="base", b="round-1", judge=GOOD, seed=-1)
    from generation.models import ModelVersion

    ModelVersion.objects.create(name="broken", path="/nonexistent/broken-checkpoint", round=2)
    with pytest.raises(CommandError, match=r"^evaluate: .*broken-checkpoint") as unloadable:  # one line, not a traceback
        call_command("evaluate", a="base", b="broken", judge=GOOD)
    assert "\n" not in str(unloadable.value)



def test_the_set_reads_running_while_its_judge_votes_and_succeeded_only_after(table):
    """The set was stored "succeeded" before its judge voted: a worker lost meanwhile left a set that said it was
    done, with a stage ("the judge votes on ...") that never changed and half its votes."""
    from compare.models import CompareJob

    base, new = table
    seen = []

    def spy(prompt, first, second):
        seen.append(CompareJob.objects.values_list("status", "part_of", "stage", "progress").get())
        return "tie"

    steps = []
    result = evaluate(base, new, "spy", judge=spy, limit=3, part_of="looprun-7",
                      progress=lambda stage, done, total: steps.append((stage, done, total)))
    # a lost loop worker's next attempt ends it (end_parts); each vote is progress written, so a slow judge does
    # not read as a lost worker (whose job Cancel ends at once)
    assert [s[:2] for s in seen] == [("running", "looprun-7")] * 3
    assert [s[2] for s in seen][1:] == ["the judge voted on 1 of 3 comparisons", "the judge voted on 2 of 3 comparisons"]
    assert steps[-3:] == [("judge", 7, 9), ("judge", 8, 9), ("judge", 9, 9)]  # answers were 6 of the 9 steps
    assert [round(s[3], 3) for s in seen] == [0.667, 0.778, 0.889]  # the set's own bar moves as its judge votes: it
    # read 100% from the first vote
    job = CompareJob.objects.get(pk=result.job.pk)
    assert (job.status, job.stage, job.progress) == ("succeeded", "", 1.0)


def test_a_set_the_evaluate_command_owns_is_never_resumed_by_a_worker(table):
    """It was running with no owner, so a worker starting meanwhile took it as its lost work and judged it too."""
    from compare.models import CompareJob
    from jobs import lifecycle

    base, new = table
    sent = []

    def a_worker_starts(prompt, first, second):
        sent.append(lifecycle.requeue_interrupted())
        return "tie"

    evaluate(base, new, "spy", judge=a_worker_starts, limit=1)
    assert sent == [{}] and CompareJob.objects.get().part_of == "foreground"


def test_cancel_on_the_sets_own_page_stops_its_judge_and_keeps_the_votes(table, monkeypatch):
    from compare.models import CompareJob
    from compare.services import cancel_compare_job
    from jobs import lifecycle
    from jobs.lifecycle import JobCancelled

    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    base, new = table
    calls = []

    def judge(prompt, first, second):
        calls.append(prompt)
        if len(calls) == 2:  # a person presses Cancel on the set's page while the judge votes
            cancel_compare_job(CompareJob.objects.get())
        return "tie"

    with pytest.raises(JobCancelled):
        evaluate(base, new, "spy", judge=judge, limit=5)
    job = CompareJob.objects.get()
    assert job.status == "cancelled" and len(calls) == 2
    assert "the judge stopped after 1 of 5 comparisons: its votes are partial" in job.stage
    assert Vote.objects.filter(comparison__job=job).count() == 1  # the vote in flight when it stopped is not stored


def test_a_judge_that_fails_leaves_the_set_failed_saying_so(table):
    from compare.models import CompareJob

    base, new = table
    with pytest.raises(JudgeError):
        evaluate(base, new, "tests.loop.judges_for_tests:says_maybe", limit=2)
    job = CompareJob.objects.get()
    assert job.status == "failed" and "returned 'maybe'" in job.error
    assert job.stage == "the judge stopped after 0 of 2 comparisons: its votes are partial"


def test_a_judge_that_fails_while_a_cancel_is_asked_ends_the_set_cancelled_saying_so(table, monkeypatch):
    """Its stage was overwritten with the partial line alone, under a state of cancelled: the page read as if the
    judge had simply stopped, with no word of the cancel or the failure."""
    from compare.models import CompareJob
    from compare.services import cancel_compare_job
    from jobs import lifecycle

    monkeypatch.setattr(lifecycle, "CHECK_EVERY_S", 0.0)
    base, new = table
    calls = []

    def judge(prompt, first, second):
        calls.append(prompt)
        if len(calls) == 2:  # a person presses Cancel, and the judge fails before its next check for a stop
            cancel_compare_job(CompareJob.objects.get())
            raise RuntimeError("judge unreachable")
        return "tie"

    with pytest.raises(Exception, match="judge unreachable"):
        evaluate(base, new, "spy", judge=judge, limit=5)
    job = CompareJob.objects.get()
    assert job.status == "cancelled" and "judge unreachable" in job.error
    assert job.stage == ("cancelled; failed while stopping: "
                         "the judge stopped after 1 of 5 comparisons: its votes are partial")


def test_a_judge_that_fails_after_its_set_ended_leaves_the_sets_stage_alone(table):
    """A set ended meanwhile (its command's process taken for gone, say) had its stage overwritten by the failure."""
    from compare.models import CompareJob

    base, new = table

    def judge(prompt, first, second):
        CompareJob.objects.update(status="cancelled", stage="cancelled: the command running it ended")
        raise RuntimeError("judge unreachable")

    with pytest.raises(Exception, match="judge unreachable"):
        evaluate(base, new, "spy", judge=judge, limit=2)
    job = CompareJob.objects.get()
    assert (job.status, job.stage) == ("cancelled", "cancelled: the command running it ended")


def test_an_evaluation_leaves_out_a_prompt_too_long_for_the_context_and_says_so(table, tiny_model_dir):
    """A round's measuring failed on one such eval prompt, and the loop with it; the rest are compared."""
    base, new = table
    ModelVersion.objects.filter(pk__in=[base.pk, new.pk]).update(path=str(tiny_model_dir))
    base.refresh_from_db()
    new.refresh_from_db()
    long = Prompt.objects.create(text="tell me " + "about the sea " * 400, split="eval")  # past 512 tokens
    result = evaluate(base, new, GOOD)
    assert result.summary["n"] == 10 and long.pk not in result.job.prompt_ids
    assert f"left out 1 prompt too long to leave room for max_new_tokens 128 in the model's context (ids {long.pk})" \
        in result.job.log
