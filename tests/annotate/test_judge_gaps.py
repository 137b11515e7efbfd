"""A judge labelling pairs: what it labelled is routed however its batch ends, a pair taken from it while it thinks
is passed over, and a judge has one account, agreement and routing under every spelling of its path."""
import json

import pytest
from django.core.management import call_command

from annotate import judging, services
from annotate.closing import close_round
from annotate.forms import LabellingRoundForm
from annotate.judging import judge_account, label_pairs
from annotate.management.commands.label_pairs import give_back_lease
from annotate.models import AnnotatorProfile, Assignment, Label, Pair, Route
from jobs.lifecycle import JobCancelled
from judges import JudgeError
from tests.annotate.factories import make_pair, make_round, make_user
from tests.loop import judges_for_tests

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("listed_test_judges")]
GOOD = "tests.loop.judges_for_tests:prefers_good"
FAILS = "tests.loop.judges_for_tests:fails_on_third"


@pytest.fixture(autouse=True)
def _reset_calls():
    judges_for_tests.CALLS["n"] = 0


def _routing_round(judge: str, n: int = 5):
    round_ = make_round(route_judge=judge, route_threshold=0.8, audit_share=0.0)
    return round_, [make_pair(round=round_) for _ in range(n)]


def _routes(pairs) -> list[str]:
    return [Pair.objects.get(pk=p.pk).route for p in pairs]


# ---- what a judge labelled before its batch stopped is routed -------------------------------------------------------

def test_pairs_a_failing_judge_labelled_are_routed_and_people_are_given_them():
    round_, pairs = _routing_round(FAILS)
    with pytest.raises(JudgeError, match="raised ConnectionError"):
        label_pairs(FAILS)
    labelled = set(Label.objects.values_list("pair_id", flat=True))
    assert len(labelled) == 2
    # the judge has no measured agreement: people decide what it labelled (before, those pairs waited unrouted)
    assert {p.pk: p.route for p in Pair.objects.filter(pk__in=labelled)} == dict.fromkeys(labelled, Route.PEOPLE)
    lease = services.next_pair_for(make_user())
    assert lease is not None and lease.pair_id in labelled


def test_pairs_labelled_before_a_cancel_are_routed():
    round_, pairs = _routing_round(GOOD, n=3)

    def stop_after_two():
        return Label.objects.count() == 2

    with pytest.raises(JobCancelled):
        label_pairs(GOOD, should_stop=stop_after_two)
    assert sorted(_routes(pairs)) == [Route.NONE, Route.PEOPLE, Route.PEOPLE]


def test_routing_that_fails_after_the_judge_failed_does_not_hide_the_judges_error(monkeypatch):
    _routing_round(FAILS)

    def broken(path):
        raise RuntimeError("database went away")

    monkeypatch.setattr(judging, "route_pairs", broken)
    with pytest.raises(JudgeError, match="raised ConnectionError: judge service unreachable") as failed:
        label_pairs(FAILS)
    assert any("routing the rounds of judge" in note and "RuntimeError: database went away" in note
               for note in failed.value.__notes__)


# ---- one judge under every spelling of its path --------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["judges.rules.length_target", "  judges.rules:length_target  "])
def test_a_judge_named_another_way_labels_as_the_round_routing_judge_and_routes_it(spelling):
    round_ = make_round(route_judge="judges.rules:length_target", route_threshold=0.8, audit_share=0.0)
    pairs = [make_pair(round=round_, text_a="One two three.", text_b="Four five six.") for _ in range(3)]
    summary = label_pairs(spelling)
    assert summary.labels == 3 and summary.judge == "judges.rules:length_target"
    assert _routes(pairs) == [Route.PEOPLE] * 3
    # one account for every spelling: the pairs it labelled are its own, so another spelling finds nothing to do
    assert label_pairs("judges.rules:length_target").labels == 0
    assert AnnotatorProfile.objects.filter(is_automatic=True).count() == 1
    assert judge_account(spelling) == judge_account("judges.rules:length_target")
    assert judge_account(spelling).annotator_profile.judge_path == "judges.rules:length_target"


def test_an_account_kept_under_an_old_spelling_keeps_its_labels():
    """An account made before judge paths were kept in one spelling is found by that spelling and re-marked."""
    old = make_user("judge:judges.rules.length_target")
    AnnotatorProfile.objects.create(user=old, is_automatic=True, judge_path="judges.rules.length_target")
    assert judge_account("judges.rules.length_target") == old
    assert judge_account("judges.rules:length_target") == old
    assert AnnotatorProfile.objects.get(user=old).judge_path == "judges.rules:length_target"


@pytest.mark.parametrize("typed", ["judges.rules.length_target", " judges.rules:length_target "])
def test_a_round_stores_its_routing_judge_in_the_spelling_its_labels_are_kept_under(typed):
    form = LabellingRoundForm({"number": 7, "guidelines": "", "labels_per_pair": 1, "gold_rate": 0.1,
                               "queue_order": "random", "route_judge": typed, "route_threshold": 0.8,
                               "audit_share": 0.1, "close_width": ""})
    assert form.is_valid(), form.errors
    assert form.save().route_judge == "judges.rules:length_target"


def test_the_command_gives_back_a_lease_whatever_the_judge_is_called():
    pair = make_pair()
    account = judge_account("judges.rules:length_target")
    services.next_pair_for(account)
    assert give_back_lease("judges.rules.length_target") == 1
    assert not Assignment.objects.filter(pair=pair).exists()


# ---- a pair taken from the judge while it thinks ----------------------------------------------------------------------

def _closes_the_round_of_the_first_pair(closing):
    calls = []

    def judge(prompt, first, second):
        calls.append(1)
        if len(calls) == 1:  # staff close the round of the pair on the judge's "screen"
            close_round(closing, "enough labels")
        return "a"

    return judge


def test_a_round_closed_while_the_judge_thinks_is_passed_over_and_the_batch_goes_on():
    closing, other = make_round(), make_round()
    first = make_pair(round=closing)
    later = [make_pair(round=other) for _ in range(3)]
    summary = label_pairs(GOOD, judge=_closes_the_round_of_the_first_pair(closing))
    assert (summary.labels, summary.withdrawn) == (3, 1)
    assert set(Label.objects.values_list("pair_id", flat=True)) == {p.pk for p in later}
    assert not Label.objects.filter(pair=first).exists()
    assert not Assignment.objects.filter(state=Assignment.LEASED).exists()


def test_a_pair_held_back_while_the_judge_thinks_is_passed_over():
    held, kept = make_pair(), make_pair()

    def judge(prompt, first, second):
        Pair.objects.filter(pk=held.pk).update(route=Route.DUPLICATE)
        return "a"

    summary = label_pairs(GOOD, judge=judge)
    assert (summary.labels, summary.withdrawn) == (1, 1)
    assert list(Label.objects.values_list("pair_id", flat=True)) == [kept.pk]


def test_a_pair_whose_label_is_refused_every_time_is_never_asked_for_again(monkeypatch):
    pairs = [make_pair() for _ in range(3)]

    def refuses(*args, **kwargs):
        raise services.LabelError("your lease on that pair has ended; here is the next one")

    monkeypatch.setattr(judging, "record_label", refuses)
    summary = label_pairs(GOOD)
    assert (summary.labels, summary.withdrawn) == (0, 3)
    assert not Assignment.objects.filter(pair__in=pairs, state=Assignment.LEASED).exists()


def test_the_label_pairs_command_goes_on_past_a_round_closed_meanwhile(monkeypatch, capsys):
    closing, other = make_round(), make_round()
    make_pair(round=closing, text_a="GOOD answer", text_b="plain answer")
    make_pair(round=other, text_a="GOOD answer", text_b="plain answer")
    real = judging.load_judge
    closes = _closes_the_round_of_the_first_pair(closing)
    monkeypatch.setattr(judging, "load_judge", lambda path, **kw: closes if path == GOOD else real(path, **kw))
    call_command("label_pairs", judge=GOOD)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (printed["judge"], printed["labels"], printed["a"] + printed["b"]) == (GOOD, 1, 1)


def test_a_judge_still_gets_the_gold_pairs_after_a_pair_was_withdrawn_from_it():
    """The withdrawn pairs were passed as `only`, which stops the gold pairs mixed into the queue: after one pair was
    held back mid-batch the judge got no gold pair, and gold pairs are part of the agreement routing trusts it by."""
    round_ = make_round(gold_rate=1.0)
    for _ in range(3):
        make_pair(round=round_)
    gold = [make_pair(round=round_, is_gold=True, gold_choice="a") for _ in range(3)]
    calls = []

    def judge(prompt, first, second):
        calls.append(1)
        if len(calls) == 1:  # the pair on the judge's "screen" is held back meanwhile (annotate.selection)
            held = Assignment.objects.get(state=Assignment.LEASED).pair_id
            Pair.objects.filter(pk=held).update(route=Route.DUPLICATE)
        return "a"

    summary = label_pairs(GOOD, judge=judge)
    assert summary.withdrawn == 1
    assert Label.objects.filter(pair__in=gold).count() == 3 - Pair.objects.filter(pk__in=[g.pk for g in gold],
                                                                                 route=Route.DUPLICATE).count()
