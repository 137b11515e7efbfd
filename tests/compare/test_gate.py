"""The promotion gate's rule on fixed vote tables: each bound holds or fails with the measured figure named."""
import math

from compare.gate import GateEvidence, GateRule, decide
from compare.ratings import wilson_interval

RULE = GateRule(min_votes=16, min_win_rate=0.5, min_lower_bound=0.4, max_length_growth=0.25)


def test_a_clear_win_with_steady_length_passes():
    evidence = GateEvidence(candidate_wins=45, current_wins=15, ties=4, candidate_tokens=110, current_tokens=100)
    result = decide(evidence, RULE)
    assert result.passed
    assert evidence.votes == 64 and evidence.win_rate == (45 + 2) / 64
    assert evidence.interval == wilson_interval(47, 64)
    # no KL given (its run ended before measuring it, say): the pass says the drift budget was not checked
    assert result.reasons == ["win rate 73% [62%, 83%] on 64 votes", "answers 100.0 → 110.0 tokens (+10%)",
                              "KL not measured: the drift budget was not checked"]
    evidence.kl_to_reference, evidence.kl_answer_tokens = 11.0, 110.0
    assert decide(evidence, RULE).reasons[2] == "KL to the reference 11 nats an answer (0.1 a token)"


def test_a_loss_is_kept_out_and_the_reason_names_the_figures():
    # round-1 of the issue: 17 wins to 83 losses against base.
    result = decide(GateEvidence(candidate_wins=17, current_wins=83), RULE)
    assert not result.passed and result.reason == "win rate 17% [11%, 26%] on 100 votes is below 50%"


def test_a_narrow_win_needs_an_interval_above_the_lower_bound():
    narrow = GateEvidence(candidate_wins=9, current_wins=7)  # 56% on 16 votes: the interval reaches 33%
    result = decide(narrow, RULE)
    assert not result.passed and "the interval's lower end is below 40%" in result.reason
    assert decide(GateEvidence(candidate_wins=90, current_wins=70), RULE).passed  # the same rate on 160 votes


def test_too_few_votes_say_how_many_are_needed():
    result = decide(GateEvidence(candidate_wins=3), RULE)
    assert not result.passed and result.reason == "needs 16 blind votes against the current version, has 3"


def test_ties_and_both_bad_count_half():
    evidence = GateEvidence(candidate_wins=8, current_wins=0, ties=4, both_bad=4)
    assert evidence.win_rate == 0.75 and evidence.votes == 16


def test_a_win_bought_with_length_is_kept_out():
    evidence = GateEvidence(candidate_wins=60, current_wins=4, candidate_tokens=128.0, current_tokens=80.0)
    result = decide(evidence, RULE)
    assert not result.passed and result.reasons == ["answers 80.0 → 128.0 tokens (+60%) grew more than 25%"]
    assert decide(evidence, GateRule(max_length_growth=1.0)).passed


def test_no_votes_is_no_rate():
    evidence = GateEvidence()
    assert evidence.votes == 0 and math.isnan(evidence.win_rate)
    assert evidence.as_dict()["win_rate"] is None and evidence.as_dict()["ci95"] == [None, None]


def test_the_drift_budget_keeps_out_a_win_that_runs_into_the_token_limit():
    # 90% of the candidate's answers cut at the limit against 20% of the current one's: a win bought with cut answers
    evidence = GateEvidence(candidate_wins=50, current_wins=14, candidate_tokens=120.0, current_tokens=110.0,
                            candidate_truncated=58, current_truncated=13, answers=64)
    result = decide(evidence, RULE)
    assert not result.passed
    assert result.reasons == ["answers cut at the token limit 13 → 58 of 64: the cut share rose +70 points, more than 10 points"]
    evidence.candidate_truncated = 17  # +6%: within the budget, and the pass names the figure
    passed = decide(evidence, RULE)
    assert passed.passed and "answers cut at the token limit 13 → 17 of 64" in passed.reasons


def test_the_drift_budget_bounds_kl_per_answer_token():
    evidence = GateEvidence(candidate_wins=50, current_wins=14, kl_to_reference=76.8, kl_answer_tokens=128.0)
    result = decide(evidence, RULE)  # 76.8 nats an answer of 128 tokens: 0.6 a token
    assert not result.passed and result.reasons == [
        "KL to the reference 76.8 nats an answer (0.6 a token): over the budget of 0.5 nats a token"]
    evidence.kl_to_reference = 12.8
    assert decide(evidence, RULE).passed
    assert evidence.as_dict()["kl_per_token"] == 0.1


def test_the_drift_budget_bounds_kl_to_base_the_rounds_added_up():
    """Each round within its KL to its reference (the version before it) still adds up, round after round."""
    evidence = GateEvidence(candidate_wins=50, current_wins=14, kl_to_reference=25.6, kl_answer_tokens=128.0,
                            kl_to_base=140.8)
    result = decide(evidence, RULE)  # 0.2 a token to its reference, 1.1 to base
    assert not result.passed and result.reasons == [
        "KL to base 141 nats an answer (1.1 a token): over the budget of 1 nats a token from base (the rounds' drift "
        "added up)"]
    assert evidence.as_dict()["kl_to_base_per_token"] == 1.1
    evidence.kl_to_base = 102.4
    passed = decide(evidence, RULE)
    assert passed.passed and passed.reasons[-1] == "KL to base 102 nats an answer (0.8 a token)"
    assert not decide(evidence, GateRule(max_kl_to_base_per_token=0.75)).passed
    evidence.kl_to_base = None  # a round measured before this bound: said, not hidden
    assert decide(evidence, RULE).reasons[-1] == "KL to base not measured: the drift from base was not checked"
    evidence.kl_to_reference, evidence.kl_to_base = None, 64.0  # the other way round, likewise
    assert decide(evidence, RULE).reasons[-2:] == [
        "KL to the reference not measured: the step from the reference was not checked",
        "KL to base 64 nats an answer (0.5 a token)"]


def test_a_kl_that_is_no_number_fails_its_bound_and_is_stored_as_none():
    """A broken measurement (NaN, infinity) passed both bounds (NaN > bound is False), and its NaN in the gate's
    evidence is no JSON PostgreSQL's jsonb stores."""
    for broken in (math.nan, math.inf):
        evidence = GateEvidence(candidate_wins=50, current_wins=14, kl_to_reference=broken, kl_answer_tokens=100.0,
                                kl_to_base=12.0)
        result = decide(evidence, RULE)
        assert not result.passed and result.reasons == [
            f"KL to the reference measured as {broken} nats an answer: not a finite figure, so the step from the "
            "reference cannot be shown within its budget"]
        stored = evidence.as_dict()
        assert stored["kl_to_reference"] is None and stored["kl_per_token"] is None and stored["kl_to_base"] == 12.0


def test_a_round_that_returns_toward_base_after_a_collapse_is_held_to_base_length():
    # The current version collapsed to 42-token answers; base answers in 70 on the same prompts. A candidate of 61
    # is 45% longer than the current version's but shorter than base's: no drift to bound, so it passes.
    evidence = GateEvidence(candidate_wins=50, current_wins=14, candidate_tokens=61.0, current_tokens=42.0,
                            base_tokens=70.0, base_answers=64)
    result = decide(evidence, RULE)
    assert result.passed, result.reason
    assert "answers 42.0 → 61.0 tokens (+45%), base's 70.0 (-13% on base's, the longer)" in result.reasons
    assert evidence.as_dict()["length_anchor"] == "base"
    evidence.candidate_tokens = 95.0  # 36% above base's: over the bound whichever anchors it
    assert decide(evidence, RULE).reasons == [
        "answers 42.0 → 95.0 tokens (+126%), base's 70.0 (+36% on base's, the longer) grew more than 25%"]
    # without base's answers the same candidate is held to the current version's length, as before
    assert not decide(GateEvidence(candidate_wins=50, current_wins=14, candidate_tokens=61.0,
                                   current_tokens=42.0), RULE).passed


def test_base_never_loosens_the_bound_when_the_current_version_is_the_longer():
    evidence = GateEvidence(candidate_wins=50, current_wins=14, candidate_tokens=128.0, current_tokens=80.0,
                            base_tokens=60.0, base_answers=64)
    assert evidence.length_anchor == "current" and evidence.bounded_length_growth == evidence.length_growth
    assert decide(evidence, RULE).reasons == ["answers 80.0 → 128.0 tokens (+60%) grew more than 25%"]


def test_the_cut_share_is_held_to_base_where_base_cuts_more_often():
    # The current version cuts none of 64 (its answers collapsed short); base cuts 12 of 64 on the same prompts.
    evidence = GateEvidence(candidate_wins=50, current_wins=14, candidate_truncated=16, current_truncated=0,
                            answers=64, base_truncated=24, base_answers=128)  # base: 18.75%, candidate 25%
    result = decide(evidence, RULE)
    assert result.passed, result.reason
    assert "answers cut at the token limit 0 → 16 of 64 (base's 24 of 128, the higher share: +6 points on it)" in (
        result.reasons)
    evidence.candidate_truncated = 20  # 31%: 12.5 points over base's share
    assert not decide(evidence, RULE).passed
    evidence.base_truncated = 0  # base cuts no more than the current version: the bound is the current version's
    evidence.candidate_truncated = 7
    assert decide(evidence, RULE).reasons == [
        "answers cut at the token limit 0 → 7 of 64: the cut share rose +11 points, more than 10 points"]


def test_a_figure_missing_its_bound_never_reads_as_the_bound():
    # 100 wins to 101 losses is 49.75%: "win rate 50% ... is below 50%" contradicted itself
    below = decide(GateEvidence(candidate_wins=100, current_wins=101), RULE)
    assert not below.passed and below.reason == "win rate 49.8% [42.9%, 56.6%] on 201 votes is below 50.0%"
    # 20 to 16: the Wilson interval's lower end is 39.58%, not "40%"
    low = decide(GateEvidence(candidate_wins=20, current_wins=16), RULE)
    assert not low.passed and "[39.6%, 70.5%] on 36 votes: the interval's lower end is below 40.0%" in low.reason
    grew = decide(GateEvidence(candidate_wins=60, current_wins=4, candidate_tokens=100.3, current_tokens=80.0), RULE)
    assert not grew.passed and grew.reason == "answers 80.0 → 100.3 tokens (+25.4%) grew more than 25.0%"


def test_a_kl_just_over_its_budget_does_not_read_as_the_budget():
    """0.5004 a token was shown "0.5 a token: over the budget of 0.5 nats a token"."""
    evidence = GateEvidence(candidate_wins=50, current_wins=14, kl_to_reference=50.04, kl_answer_tokens=100.0)
    assert decide(evidence, RULE).reasons == [
        "KL to the reference 50 nats an answer (0.5004 a token): over the budget of 0.5 nats a token"]


def test_the_rule_as_the_train_page_states_it_gives_the_cut_bound_in_points():
    """The cut share's bound is a difference of two shares (10 points: 20% of answers cut may become 30%), as the
    gate's reasons say; the Train page's statement of the rule called it "up by at most 10%", a relative rise."""
    text = GateRule(max_cut_share_growth=0.10).describe()
    assert "the share cut at the token limit up by at most 10 points" in text
    # and it is the bound decide() holds: +10 points passes, +11 points does not
    evidence = GateEvidence(candidate_wins=14, current_wins=2, candidate_tokens=100.0, current_tokens=100.0,
                            candidate_truncated=30, current_truncated=20, answers=100)
    assert decide(evidence, GateRule(max_cut_share_growth=0.10)).passed
    evidence.candidate_truncated = 31
    assert "more than 10 points" in decide(evidence, GateRule(max_cut_share_growth=0.10)).reason


def test_the_rule_as_the_train_page_states_it_gives_each_bound_as_it_is():
    """Bounds set with a decimal (PREFLOOP_GATE_*) were rounded to whole per cent in the rule's statement: a minimum
    win rate of 0.425 read "≥ 42%", and a candidate at 42.2% was kept out below it."""
    text = GateRule(min_win_rate=0.425, min_lower_bound=0.3, max_length_growth=0.125,
                    max_cut_share_growth=0.075).describe()
    assert "win rate ≥ 42.5% with the 95% interval's lower end ≥ 30%" in text
    assert "answers at most 12.5% longer" in text
    assert "up by at most 7.5 points" in text
    evidence = GateEvidence(candidate_wins=422, current_wins=578)  # 42.2%
    assert "is below 42.5%" in decide(evidence, GateRule(min_win_rate=0.425, min_lower_bound=0.3)).reason
