"""The promotion gate at its bounds (docs/defaults.md "The promotion gate"), found by an outside review: a figure
exactly at its bound failed by a float rounding error, base's length was read on other prompts than the candidate's,
and the leaderboard's cell rounded a half down."""
from fractions import Fraction

from compare.gate import GateEvidence, GateRule, decide
from compare.services import record_vote
from tests.annotate.factories import make_user
from tests.compare.conftest import make_job, make_version
from training import promotion
from training.models import TrainingRun


def _vote(comparison, voter, candidate, win: bool):
    candidate_is_a = comparison.response_a.version_id == candidate.pk
    record_vote(comparison, voter, ("a" if candidate_is_a else "b") if win else ("b" if candidate_is_a else "a"))


def test_even_split_over_three_voters_on_94_pairs_passes(candidate, settings):
    """94 pairs of answers, three voters on each (the product's rule: 16, 0.5, 0.4). On the first 47 pairs one of the
    three preferred the candidate, on the last 47 two did: the candidate's score is exactly 47/94 = 50%, and from 93
    pairs on "an even 50% passes too, as 'at least as good'" (docs/defaults.md)."""
    base, new, run = candidate
    settings.PREFLOOP_GATE_MIN_VOTES, settings.PREFLOOP_GATE_MIN_WIN_RATE = 16, 0.5
    settings.PREFLOOP_GATE_MIN_LOWER_BOUND, settings.PREFLOOP_GATE_MAX_LENGTH_GROWTH = 0.4, 0.25
    job = make_job(base, new, n=94)
    voters = [make_user() for _ in range(3)]
    for k, comparison in enumerate(job.comparisons.order_by("pk")):
        wins = 1 if k < 47 else 2
        for j, voter in enumerate(voters):
            _vote(comparison, voter, new, j < wins)
    evidence = promotion.gate_evidence(base, new)
    exact = Fraction(47, 1) / 94
    assert evidence.n == 94 and exact == Fraction(1, 2)
    assert evidence.pair_score == 47 and evidence.win_rate == 0.5  # was 46.99999999999998
    result = promotion.check_gate(run)
    assert result.passed, result.reason


def test_cut_share_exactly_ten_points_above_base_passes():
    """The docs: the candidate's cut share "may be at most 10 points above the current version's, or base's where
    base's is higher". 20 answers: current 4 cut (20%), base 6 (30%), candidate 8 (40%): 10 points above base's."""
    rule = GateRule()
    held_to_base = GateEvidence(candidate_wins=20, candidate_truncated=8, current_truncated=4, answers=20,
                                base_truncated=6, base_answers=20)
    held_to_current = GateEvidence(candidate_wins=20, candidate_truncated=8, current_truncated=6, answers=20)
    assert decide(held_to_current, rule).passed  # 40% against the current version's 30%: passes
    result = decide(held_to_base, rule)
    assert result.passed, result.reason  # 40% against base's 30%: the same distance, the same rule
    one_more = GateEvidence(candidate_wins=20, candidate_truncated=9, current_truncated=4, answers=20,
                            base_truncated=6, base_answers=20)
    assert not decide(one_more, rule).passed  # 15 points above base's: over the bound still





def test_base_length_is_read_only_on_the_prompts_the_candidate_answered(db, settings):
    """Round 2 (candidate) against round 1 (current) on 16 eval prompts from a compare set; base answered only 2 of
    them under the same settings and seed (an earlier, smaller set). Candidate 140 tokens on every prompt, current 100,
    base 150 on its 2. The bound reads the candidate's mean over 16 prompts against base's mean over 2 and passes
    (-7% "on base's, the longer"). Base's figures are read only where base answered every voted prompt, so here the
    candidate is held to the current version's length on the same 16 prompts: 40% longer, kept."""
    from generation.models import Response
    from tests.compare.conftest import make_response

    settings.PREFLOOP_GATE_MIN_VOTES = 16
    base = make_version("base")
    r1 = make_version("round-1", parent=base, is_current=True)
    r2 = make_version("round-2", parent=r1)
    run = TrainingRun.objects.create(input_version=r1, reference_version=r1, output_version=r2,
                                     status=TrainingRun.SUCCEEDED, decision=TrainingRun.Decision.CANDIDATE)
    job = make_job(r1, r2, n=16)
    voter = make_user()
    for k, comparison in enumerate(job.comparisons.order_by("pk")):
        Response.objects.filter(pk=comparison.response_a_id).update(token_count=100, sampling_key="s")
        Response.objects.filter(pk=comparison.response_b_id).update(token_count=140, sampling_key="s")
        if k < 2:
            base_answer = make_response(comparison.prompt, base, tokens=150)
            Response.objects.filter(pk=base_answer.pk).update(sampling_key="s")
        comparison.refresh_from_db()
        _vote(comparison, voter, r2, True)
    evidence = promotion.gate_evidence(r1, r2)
    assert (evidence.base_answers, evidence.base_tokens, evidence.answers) == (0, None, 16)
    result = promotion.check_gate(run)
    assert not result.passed and "grew more than 25%" in result.reason, result.reasons
    # base answering every voted prompt, and longer: held to base's length on them, as before
    for comparison in job.comparisons.order_by("pk")[2:]:
        answer = make_response(comparison.prompt, base, tokens=150)
        Response.objects.filter(pk=answer.pk).update(sampling_key="s")
    evidence = promotion.gate_evidence(r1, r2)
    assert (evidence.base_answers, evidence.base_tokens, evidence.length_anchor) == (16, 150, "base")


def test_win_rate_cell_rounds_halves_up_as_it_says():
    """Leaderboard matrix cell: 10 wins, 7 losses, 3 ties = 11.5 of 20 = 57.5%. Cell.percent says "halves up, as the
    pages' floatformat rounds"; floatformat:0 of 57.5 gives 58, the cell shows 57 (100 * 0.575 = 57.49999999999999)."""
    from django.template import Context, Template

    from compare.leaderboard import Cell, pair_win_rates

    rows = [("x", "y", outcome, 1, 1, frozenset({("x", k), ("y", k)}))
            for k, outcome in enumerate(["a"] * 10 + ["b"] * 7 + ["tie"] * 3)]
    rate, n, _ = pair_win_rates(rows)[("x", "y")]
    assert n == 20 and abs(rate - 0.575) < 1e-15
    shown = Template("{{ v|floatformat:0 }}").render(Context({"v": 57.5}))
    assert Cell(rate, n).percent == int(shown) == 58


def test_one_judge_named_two_ways_is_one_source_of_the_gates_evidence(candidate):
    """Votes were stored under the judge path as typed, so one judge named "judges.rules.length_target" for one set
    and "judges.rules:length_target" for another was listed twice among the gate's sources."""
    from annotate.judging import judge_account
    from compare.models import Vote
    from compare.services import judge_comparisons

    base, new, _ = candidate
    for typed in ("judges.rules.length_target", " judges.rules:length_target "):
        job = make_job(base, new, n=2)
        judge_comparisons(job.comparisons.order_by("pk"), lambda prompt, first, second: "a", typed,
                          judge_account(typed))
    assert set(Vote.objects.values_list("judge", flat=True)) == {"judges.rules:length_target"}
    assert promotion.gate_evidence(base, new).sources == ["judges.rules:length_target"]
    # a vote stored as typed before (the dotted spelling) is read as the same judge
    Vote.objects.filter(pk=Vote.objects.order_by("pk").first().pk).update(judge="judges.rules.length_target")
    assert promotion.gate_evidence(base, new).sources == ["judges.rules:length_target"]
