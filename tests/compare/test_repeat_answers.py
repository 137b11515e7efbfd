"""The same answer stored twice is one answer for the gate and the leaderboard, as it is for blinding.

Two blind sets can hold word-for-word the same answers in separate Response rows: greedy sampling at another seed,
or another token limit that both answers ended before. People cannot vote on both (compare.blinding); a judge does,
and its one verdict on each pair of answers counted twice let 8 pairs meet a 16-vote minimum.
"""
import pytest

from annotate.judging import judge_account
from compare import blinding
from compare.leaderboard import build_board, vote_rows
from compare.models import CompareJob, Comparison
from compare.services import record_vote
from generation.models import Response
from generation.services import current_version
from tests.compare.conftest import make_prompt, make_version
from training import promotion
from training.models import TrainingRun

pytestmark = pytest.mark.django_db

JUDGE = "tests.rules:fixed"


def _candidate(settings):
    settings.PREFLOOP_GATE_MIN_VOTES = 16
    base = make_version("base", is_current=True)
    new = make_version("round-1", parent=base)
    run = TrainingRun.objects.create(input_version=base, reference_version=base, output_version=new,
                                     status=TrainingRun.SUCCEEDED, decision=TrainingRun.Decision.CANDIDATE)
    return base, new, run


def _judged_sets(new, base, prompts, keys, *, text=lambda version, prompt, key: f"{version.name} on {prompt.pk}",
                 finish_reason=""):
    """A blind set per sampling key, new against base on the prompts, the judge voting for new on each comparison."""
    judge = judge_account(JUDGE)
    for key in keys:
        job = CompareJob.objects.create(version_a=new, version_b=base, blind=True, status=CompareJob.SUCCEEDED,
                                        prompt_ids=[p.pk for p in prompts], params={"sampling_key": key})
        for p in prompts:
            a, b = (Response.objects.create(prompt=p, version=v, text=text(v, p, key), token_count=10,
                                            finish_reason=finish_reason, sampling_key=key) for v in (new, base))
            record_vote(Comparison.objects.create(job=job, prompt=p, response_a=a, response_b=b), judge, "a",
                        is_automatic=True, judge=JUDGE)


def test_the_gate_counts_the_same_words_in_two_sets_once(settings):
    base, new, run = _candidate(settings)
    prompts = [make_prompt() for _ in range(8)]
    # greedy sampling at seeds 0 and 1: new rows, the same words, and the judge votes on both sets
    _judged_sets(new, base, prompts, ["seed-0", "seed-1"], finish_reason="length")
    evidence = promotion.gate_evidence(base, new)
    assert (evidence.n, evidence.votes, evidence.candidate_wins) == (8, 8, 8)
    # the lengths and cut answers are measured on the same 8 pairs the rate rests on
    assert (evidence.answers, evidence.candidate_truncated, evidence.current_truncated) == (8, 8, 8)
    assert evidence.candidate_tokens == evidence.current_tokens == 10

    result = promotion.check_gate(run)
    assert not result.passed and result.reason == "needs 16 blind votes against the current version, has 8"
    assert current_version() == base
    run.refresh_from_db()
    assert run.decision == TrainingRun.Decision.KEPT


def test_other_words_in_the_second_set_are_other_answers(settings):
    base, new, run = _candidate(settings)
    prompts = [make_prompt() for _ in range(8)]
    # sampled at a temperature: another seed, other words, 16 pairs of answers
    _judged_sets(new, base, prompts, ["seed-0", "seed-1"], text=lambda v, p, key: f"{v.name} on {p.pk} at {key}")
    evidence = promotion.gate_evidence(base, new)
    assert (evidence.n, evidence.votes, evidence.answers) == (16, 16, 16)
    assert promotion.check_gate(run).passed


def test_the_two_versions_giving_the_same_words_stay_two_sides(settings):
    base, new, _ = _candidate(settings)
    prompts = [make_prompt() for _ in range(4)]
    # both versions answer each prompt alike, in two sets: one pair of answers a prompt, each side its version's
    _judged_sets(new, base, prompts, ["seed-0", "seed-1"], text=lambda v, p, key: f"the same answer to {p.pk}")
    evidence = promotion.gate_evidence(base, new)
    assert (evidence.n, evidence.votes, evidence.answers) == (4, 4, 4)


def test_the_leaderboard_counts_the_same_words_in_two_sets_once(settings):
    base, new, _ = _candidate(settings)
    prompts = [make_prompt() for _ in range(8)]
    _judged_sets(new, base, prompts, ["limit-128", "limit-256"])  # both answers ended before 128 tokens
    assert vote_rows(include_automatic=True) == [("round-1", "base", "a", 10, 10)] * 8
    assert build_board(include_automatic=True, bootstrap=20).votes == 8


def test_the_leaderboard_keeps_votes_on_another_version_with_the_same_words(settings):
    base, new, _ = _candidate(settings)
    other = make_version("round-1b", parent=base)
    prompts = [make_prompt() for _ in range(3)]
    # base and round-1b answer alike: a verdict for round-1 over each is a vote in a matchup of its own
    _judged_sets(new, base, prompts, ["k"], text=lambda v, p, key: f"{v.name == 'round-1'} on {p.pk}")
    _judged_sets(new, other, prompts, ["k"], text=lambda v, p, key: f"{v.name == 'round-1'} on {p.pk}")
    rows = vote_rows(include_automatic=True)
    assert sorted(rows) == [("round-1", "base", "a", 10, 10)] * 3 + [("round-1", "round-1b", "a", 10, 10)] * 3


def test_answers_are_read_in_batches(monkeypatch):
    version = make_version("base")
    prompt = make_prompt()
    rows = [Response.objects.create(prompt=prompt, version=version, text=f"answer {k % 3}") for k in range(7)]
    monkeypatch.setattr(blinding, "_IDS_PER_QUERY", 2)
    found = blinding.answers_of(r.pk for r in rows)
    assert found == {r.pk: blinding.answer_of(r) for r in rows}
    assert len(set(found.values())) == 3  # three texts, stored seven times
