"""The promotion gate as a service and on the Train page: a candidate earns its place from blind votes against the
current version, staff can promote by hand (with a reason, recorded), and any earlier version is one click away."""
import re

import pytest
from django.urls import reverse

from compare.models import CompareJob
from compare.services import record_vote
from generation.models import Prompt, Response, VersionChange
from generation.services import change_current, current_version
from tests.annotate.factories import make_user
from tests.compare.conftest import make_job, make_prompt, make_response, make_version
from training import promotion
from training.models import TrainingRun


def _votes(job: CompareJob, voters, outcome_for_candidate: list[str], candidate) -> None:
    """Each voter votes on every comparison; outcome_for_candidate[k] is "win", "loss" or "tie" for comparison k."""
    for k, comparison in enumerate(job.comparisons.order_by("pk")):
        wanted = outcome_for_candidate[k % len(outcome_for_candidate)]
        candidate_is_a = comparison.response_a.version_id == candidate.pk
        outcome = {"win": "a" if candidate_is_a else "b", "loss": "b" if candidate_is_a else "a", "tie": "tie"}[wanted]
        for voter in voters:
            record_vote(comparison, voter, outcome)


def _small_gate(settings, votes=8):
    settings.PREFLOOP_GATE_MIN_VOTES, settings.PREFLOOP_GATE_MIN_WIN_RATE = votes, 0.5
    settings.PREFLOOP_GATE_MIN_LOWER_BOUND, settings.PREFLOOP_GATE_MAX_LENGTH_GROWTH = 0.2, 0.25


def test_a_worse_candidate_is_kept_out_and_the_run_says_why(candidate, settings):
    base, new, run = candidate
    _small_gate(settings)
    job = make_job(base, new, n=12)
    _votes(job, [make_user()], ["loss", "loss", "win", "loss"], new)
    result = promotion.check_gate(run)
    assert not result.passed and result.reason == "win rate 25% [9%, 53%] on 12 votes is below 50%"
    run.refresh_from_db()
    assert run.decision == "kept" and run.gate["against"] == "base" and run.gate["evidence"]["votes"] == 12
    assert run.gate["evidence"]["sources"] == ["people"] and run.gate["rule"]["min_votes"] == 8
    assert current_version() == base and not VersionChange.objects.exists()


def test_a_better_candidate_passes_and_becomes_current(candidate, settings):
    base, new, run = candidate
    _small_gate(settings)
    job = make_job(new, base, n=12)  # the candidate shown as A this time: votes are counted for it all the same
    _votes(job, [make_user()], ["win", "win", "win", "tie"], new)
    result = promotion.check_gate(run)
    assert result.passed, result.reason
    assert current_version() == new
    change = VersionChange.objects.get()
    assert change.action == "gate" and change.previous == base and change.user is None
    assert change.reason.startswith("passed the gate against base: win rate 88%")
    run.refresh_from_db()
    assert run.decision == "promoted"


def test_only_blind_votes_on_eval_prompts_count(candidate, settings):
    base, new, run = candidate
    _small_gate(settings, votes=2)
    shown = make_job(base, new, n=2, blind=False)  # names were visible: not evidence
    from compare.models import Vote

    voter = make_user()  # stored as votes on such sets were before record_vote refused them
    for comparison in shown.comparisons.all():
        Vote.objects.create(comparison=comparison, voter=voter,
                            outcome="a" if comparison.response_a.version_id == new.pk else "b")
    training = make_job(base, new, n=2)
    Prompt.objects.filter(comparisons__job=training).update(split=Prompt.TRAIN)
    _votes(training, [make_user()], ["win"], new)
    assert promotion.gate_evidence(base, new).votes == 0
    assert not promotion.check_gate(run).passed


def test_longer_answers_are_kept_out_by_the_length_bound(candidate, settings):
    base, new, run = candidate
    _small_gate(settings, votes=2)
    job = make_job(base, new, n=2)
    for comparison in job.comparisons.all():  # the candidate's answers are twice as long
        comparison.response_b = make_response(comparison.prompt, new, tokens=20)
        comparison.save()
    _votes(job, [make_user()], ["win"], new)
    result = promotion.check_gate(run)
    assert not result.passed and result.reason == "answers 10.0 → 20.0 tokens (+100%) grew more than 25%"


def test_staff_promote_by_hand_with_a_reason_and_roll_back_in_one_click(candidate, client, staff):
    base, new, run = candidate
    client.force_login(staff)
    response = client.post(reverse("training:promote", args=[run.pk]), {"reason": "  "}, follow=True)
    assert "say why you promote this version by hand" in response.content.decode()
    assert current_version() == base
    client.post(reverse("training:promote", args=[run.pk]), {"reason": "the judge misreads code answers"})
    assert current_version() == new
    run.refresh_from_db()
    assert run.decision == "by_hand" and run.decided_by == staff and run.decision_note == "the judge misreads code answers"
    change = VersionChange.objects.get()
    assert (change.action, change.user, change.previous) == ("by_hand", staff, base)

    page = client.get(reverse("training:runs")).content.decode()
    assert "promoted by hand" in page and "the judge misreads code answers" in page
    client.post(reverse("training:rollback", args=[base.pk]))
    assert current_version() == base
    rollback = VersionChange.objects.first()
    assert (rollback.action, rollback.user, rollback.previous, rollback.version) == ("rollback", staff, new, base)
    response = client.post(reverse("training:rollback", args=[base.pk]), follow=True)
    assert "already the current one" in response.content.decode()


def test_the_rollback_button_does_not_make_a_candidate_current_past_the_gate(candidate, client, staff):
    """The rollback URL made a candidate awaiting the gate current with no reason, recorded as a rollback, its run
    still "candidate" (the API refused the same change)."""
    base, new, run = candidate
    client.force_login(staff)
    response = client.post(reverse("training:rollback", args=[new.pk]), {"reason": ""}, follow=True)
    assert "awaiting the promotion gate" in response.content.decode()
    assert current_version() == base and not VersionChange.objects.exists()
    run.refresh_from_db()
    assert run.decision == "candidate"


def test_annotators_cannot_promote_or_roll_back(candidate, client, annotator):
    base, new, run = candidate
    client.force_login(annotator)
    for url in (reverse("training:promote", args=[run.pk]), reverse("training:check_gate", args=[run.pk]),
                reverse("training:rollback", args=[new.pk])):
        response = client.post(url, {"reason": "because"})
        assert response.status_code == 403
    assert current_version() == base and not VersionChange.objects.exists()


def test_the_train_page_shows_the_gate_and_the_check_button(candidate, client, staff, settings):
    base, new, run = candidate
    _small_gate(settings)
    client.force_login(staff)
    response = client.post(reverse("training:check_gate", args=[run.pk]), follow=True)
    page = response.content.decode()
    assert "round-1 is kept out: needs 8 blind votes against the current version, has 0" in page
    assert "at least 8 blind votes against the current version (on as many pairs of answers: several voters on the " \
        "same two answers count once, at their mean), win rate ≥ 50%" in page
    assert 'class="check-gate"' in page and 'class="promote"' in page


def test_the_train_page_offers_choices_help_and_what_will_train(client, staff, settings):
    from annotate.services import label_pair
    from tests.annotate.factories import make_pair

    settings.PREFLOOP_HELDOUT_MIN_PAIRS = 20
    base = make_version("base", is_current=True)
    for k in range(3):
        pair = make_pair()
        Response = type(pair.response_a)
        Response.objects.filter(pk__in=[pair.response_a_id, pair.response_b_id]).update(token_count=10 + k)
        label_pair(pair.pk, staff, "left")
    client.force_login(staff)
    page = client.get(reverse("training:runs")).content.decode()
    for name, options in (("loss_type", "sigmoid ipo hinge robust kto rrhf"), ("lr_schedule", "cosine linear constant"),
                          ("dtype", "auto float32 bfloat16")):
        select = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', page, re.S)
        assert select and re.findall(r'<option value="([^"]+)"', select.group(1)) == options.split(), name
    assert "How far the policy may move from the reference" in page  # help text from DPOConfig
    row = re.search(r'<tr data-choice="all">(.*?)</tr>', page, re.S).group(1)
    assert re.search(r'class="num pairs">3<', row) and re.search(r'class="num tokens">66<', row)
    assert "fewer than 20 pairs: nothing held out" in row
    assert base.name in page


def test_the_admin_cannot_slip_a_candidate_past_the_gate_and_records_what_it_does(candidate, client, staff):
    base, new, run = candidate
    older = make_version("older", parent=base)
    client.force_login(staff)
    url = reverse("admin:generation_modelversion_changelist")
    response = client.post(url, {"action": "make_current", "_selected_action": [new.pk]}, follow=True)
    assert "awaiting the promotion gate" in response.content.decode() and current_version() == base
    client.post(url, {"action": "make_current", "_selected_action": [older.pk]}, follow=True)
    assert current_version() == older
    change = VersionChange.objects.get()
    assert (change.action, change.user, change.previous, change.reason) == ("rollback", staff, base,
                                                                           "made current from the admin")


def test_a_round_over_its_drift_budget_is_not_promoted(candidate, settings):
    base, new, run = candidate
    _small_gate(settings)
    job = make_job(new, base, n=12)
    _votes(job, [make_user()], ["win", "win", "win", "tie"], new)  # it wins the votes
    run.metrics = {"kl_to_reference": 60.0, "sampled/mean_tokens": 100.0}  # 0.6 nats a token, measured at its end
    run.save(update_fields=["metrics"])
    result = promotion.check_gate(run)
    assert not result.passed
    assert result.reasons == ["KL to the reference 60 nats an answer (0.6 a token): over the budget of 0.5 nats a token"]
    run.refresh_from_db()
    assert run.decision == "kept" and current_version() == base
    settings.PREFLOOP_GATE_MAX_KL_PER_TOKEN = 0.7
    assert promotion.check_gate(run).passed and current_version() == new


def test_a_round_over_its_drift_from_base_is_not_promoted(candidate, settings):
    base, new, run = candidate
    _small_gate(settings)
    job = make_job(new, base, n=12)
    _votes(job, [make_user()], ["win", "win", "win", "tie"], new)
    # within its budget to its reference (a later version), over the budget from base
    run.metrics = {"kl_to_reference": 20.0, "kl_to_base": 120.0, "sampled/mean_tokens": 100.0}
    run.save(update_fields=["metrics"])
    result = promotion.check_gate(run)
    assert not result.passed and result.reasons == [
        "KL to base 120 nats an answer (1.2 a token): over the budget of 1 nats a token from base (the rounds' drift "
        "added up)"]
    run.refresh_from_db()
    assert run.decision == "kept" and current_version() == base
    assert run.gate["rule"]["max_kl_to_base_per_token"] == 1.0 and run.gate["evidence"]["kl_to_base"] == 120.0
    settings.PREFLOOP_GATE_MAX_KL_TO_BASE_PER_TOKEN = 1.5
    assert promotion.check_gate(run).passed and current_version() == new


def test_a_round_measured_before_kl_to_base_whose_reference_is_base_is_held_to_it(candidate, settings):
    """Its KL to the reference is its KL to base: the gate reads it as both, and does not say it was not checked."""
    base, new, run = candidate  # the run's reference is base
    _small_gate(settings)
    settings.PREFLOOP_GATE_MAX_KL_PER_TOKEN = 2.0  # only the bound to base can hold it
    _votes(make_job(new, base, n=12), [make_user()], ["win", "win", "win", "tie"], new)
    run.metrics = {"kl_to_reference": 120.0, "sampled/mean_tokens": 100.0}
    run.save(update_fields=["metrics"])
    result = promotion.check_gate(run)
    assert not result.passed and result.reasons == [
        "KL to base 120 nats an answer (1.2 a token): over the budget of 1 nats a token from base (the rounds' drift "
        "added up)"]


def test_a_round_recovering_from_a_collapsed_current_version_is_held_to_base_length(candidate, settings):
    """round-1 became current with answers that collapsed to 5 tokens; round-2 answers in 9 on the same prompts,
    80% longer than round-1's but shorter than base's 10 (stored by the evaluation against base): it passes."""
    base, collapsed, run = candidate
    change_current(collapsed, action=VersionChange.Action.GATE, reason="round 1 passed")
    recovering = make_version("round-2", parent=collapsed)
    run2 = TrainingRun.objects.create(input_version=collapsed, reference_version=base, output_version=recovering,
                                      status=TrainingRun.SUCCEEDED, decision=TrainingRun.Decision.CANDIDATE)
    _small_gate(settings, votes=2)
    job = make_job(collapsed, recovering, n=2)
    for comparison in job.comparisons.all():
        comparison.response_a.token_count, comparison.response_b.token_count = 5, 9
        for answer in (comparison.response_a, comparison.response_b):
            answer.sampling_key = f"eval settings, prompt {comparison.prompt_id}"
            answer.save()
    _votes(job, [make_user(), make_user()], ["win"], recovering)
    evidence = promotion.gate_evidence(collapsed, recovering)
    assert evidence.base_answers == 0  # base has answered none of these prompts yet: held to round-1's length
    assert not promotion.check_gate(run2).passed
    for prompt in Prompt.objects.filter(comparisons__job=job):  # base's answers to the same prompts, 10 tokens
        Response.objects.filter(pk=make_response(prompt, base, tokens=10).pk).update(
            sampling_key=f"eval settings, prompt {prompt.pk}")
        # an answer under other settings (a side-by-side set at a longer token limit): not the same measure
        Response.objects.filter(pk=make_response(prompt, base, tokens=400).pk).update(sampling_key="4096 tokens")
    make_response(make_prompt(), base, tokens=500)  # another prompt's answer: not evidence
    evidence = promotion.gate_evidence(collapsed, recovering)
    assert (evidence.base_answers, evidence.base_tokens, evidence.length_anchor) == (2, 10.0, "base")
    result = promotion.check_gate(run2)
    assert result.passed, result.reason
    assert "answers 5.0 → 9.0 tokens (+80%), base's 10.0 (-10% on base's, the longer)" in result.reason
    assert current_version() == recovering


def test_a_version_still_being_measured_waits_for_its_run_before_the_gate_or_a_promotion(candidate, client, staff):
    """Registered, so a candidate, while its run still measured it: the gate could be checked without the KL the
    run was measuring, and the run's end then wrote "candidate" over the gate's decision."""
    from training import promotion

    base, new, run = candidate
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.RUNNING)
    run.refresh_from_db()
    for act in (lambda: promotion.check_gate(run), lambda: promotion.promote_by_hand(run, user=staff, reason="ok"),
                lambda: promotion.rollback(new, user=staff)):
        with pytest.raises(promotion.PromotionError):
            act()
    row = next(r for r in promotion.version_table() if r["version"] == new)
    assert not row["pending"] and not row["can_roll_back"]  # no button for it while it is measured
    assert current_version() == base and not VersionChange.objects.exists()
    run.refresh_from_db()
    assert run.decision == "candidate" and run.gate in ({}, None)


def test_a_decided_run_cannot_have_its_decision_written_over_from_the_page(candidate, client, staff):
    """The page offers "check the gate" and "promote by hand" only for a candidate awaiting the gate, but the views
    took any run: after a promotion by hand and a rollback, posting the gate form again wrote "kept" (or
    "promoted", making the version current again) over the decision by hand, its author and its reason."""
    base, new, run = candidate
    client.force_login(staff)
    client.post(reverse("training:promote", args=[run.pk]), {"reason": "it reads better"})
    run.refresh_from_db()
    assert (run.decision, run.decided_by, current_version()) == ("by_hand", staff, new)
    client.post(reverse("training:rollback", args=[base.pk]), {"reason": "back"})
    assert current_version() == base

    for url, data in ((reverse("training:check_gate", args=[run.pk]), {}),
                      (reverse("training:promote", args=[run.pk]), {"reason": "again"})):
        page = client.post(url, data, follow=True).content.decode()
        assert "has had its gate decision (by_hand)" in page and "roll back to it" in page
        run.refresh_from_db()
        assert (run.decision, run.decided_by, run.decision_note) == ("by_hand", staff, "it reads better")
        assert current_version() == base
    assert VersionChange.objects.count() == 2  # the promotion by hand and the rollback, nothing since


def test_a_judge_voting_twice_on_the_same_answers_is_counted_once(candidate, settings):
    """Answers are reused for the same seed and settings, so a second set between the same versions holds the same
    pairs of answers; a judge voting on both said one thing twice, and the gate counted twice the votes (with an
    interval narrower by about the square root of 2): 12 votes, 8 for the candidate, fail a gate of 16 votes, and
    were passing it once repeated."""
    from compare.models import Comparison

    base, new, run = candidate
    _small_gate(settings, votes=16)
    settings.PREFLOOP_GATE_MIN_LOWER_BOUND = 0.4
    judge = make_user("judge:tests.rules:fixed")
    first = make_job(base, new, n=12)
    _votes(first, [judge], ["win", "win", "loss"], new)
    again = CompareJob.objects.create(version_a=base, version_b=new, blind=True, status=CompareJob.SUCCEEDED)
    for comparison in first.comparisons.order_by("pk"):
        Comparison.objects.create(job=again, prompt=comparison.prompt, response_a=comparison.response_a,
                                  response_b=comparison.response_b, left_is_a=not comparison.left_is_a)
    _votes(again, [judge], ["win", "win", "loss"], new)
    evidence = promotion.gate_evidence(base, new)
    assert (evidence.votes, evidence.candidate_wins, evidence.answers) == (12, 8, 12)
    result = promotion.check_gate(run)
    assert not result.passed and current_version() == base
    # another voter on the same answers is another vote, but not another pair of answers (the next test)
    _votes(again, [make_user()], ["win", "win", "loss"], new)
    evidence = promotion.gate_evidence(base, new)
    assert (evidence.votes, evidence.n) == (24, 12)


def test_several_voters_on_the_same_answers_are_one_observation_at_their_mean(candidate, settings):
    """A person and a judge each voting 6 to 2 on the same 8 pairs of answers passed a gate of 16 votes ("win rate
    75% [51%, 90%] on 16 votes"), while either alone was refused: the second voter on the same answers is not a
    second sample of answers, and counted as one its interval was too narrow too."""
    base, new, run = candidate
    _small_gate(settings, votes=16)
    settings.PREFLOOP_GATE_MIN_LOWER_BOUND = 0.4
    job = make_job(base, new, n=8)
    _votes(job, [make_user("judge:tests.rules:fixed"), make_user()], ["win", "win", "win", "loss"], new)
    evidence = promotion.gate_evidence(base, new)
    assert (evidence.votes, evidence.n, evidence.win_rate) == (16, 8, 0.75)
    result = promotion.check_gate(run)
    assert not result.passed and current_version() == base
    assert "needs 16 blind votes against the current version, has 8 pairs of answers voted on (16 votes" in result.reason
    # voters who disagree on a pair count as its mean: a win and a loss are half a win, as a tie is
    settings.PREFLOOP_GATE_MIN_VOTES = 8
    other = make_job(base, new, n=8)
    _votes(other, [make_user("judge:tests.rules:other")], ["win"], new)
    _votes(other, [make_user()], ["loss"], new)
    evidence = promotion.gate_evidence(base, new, jobs=[other])
    assert (evidence.votes, evidence.n, evidence.win_rate) == (16, 8, 0.5)
    from compare.ratings import wilson_interval
    assert evidence.interval == wilson_interval(4, 8)  # on 8 observations, not 16


def test_votes_on_a_prompt_typed_on_the_compare_page_are_not_the_gates_evidence(candidate, settings):
    """Typed prompts are stored in the eval split (no round trains on them) but are not the fixed eval set: one typed
    and voted on, picked by hand, counted for the gate."""
    base, new, run = candidate
    _small_gate(settings, votes=2)
    job = make_job(base, new, n=2)
    _votes(job, [make_user()], ["win"], new)
    assert promotion.gate_evidence(base, new).n == 2
    Prompt.objects.filter(comparisons__job=job).update(tag=Prompt.TYPED_TAG)
    assert promotion.gate_evidence(base, new).n == 0
