"""Judge–human routing: the judge's measured agreement with people (Wilson interval, per prompt tag) decides which
pairs people see; elsewhere the judge's label stands, weighed by that agreement."""
from __future__ import annotations

import pytest

from annotate import routing, services
from annotate.dataset import decisions
from annotate.models import Label, Pair, Route

from .factories import make_pair, make_prompt, make_round, make_user

pytestmark = pytest.mark.django_db
JUDGE = "judges.rules:length_target"


def _judge():
    from annotate.judging import judge_account

    return judge_account(JUDGE)


def test_the_wilson_interval_matches_its_formula_and_narrows_with_more_pairs():
    low, high = routing.wilson_interval(45, 50)
    # p = 0.9, n = 50, z = 1.96: centre (0.9 + z²/100) / (1 + z²/50), half-width as in Wilson (1927)
    assert low == pytest.approx(0.7864, abs=1e-4) and high == pytest.approx(0.9565, abs=1e-4)
    assert routing.wilson_interval(450, 500)[0] > low
    assert routing.wilson_interval(0, 0) == (0.0, 1.0)
    assert routing.wilson_interval(10, 10)[1] == pytest.approx(1.0) and routing.wilson_interval(10, 10)[0] < 1.0


def _measured(tag: str, agree: int, disagree: int) -> None:
    """Pairs on prompts with `tag` labelled by the judge (choice a) and by a person (a where they agree, else b)."""
    judge, person = _judge(), make_user()
    for k in range(agree + disagree):
        pair = make_pair(prompt=make_prompt(tag=tag), labels_needed=2)
        services.label_pair(pair.pk, judge, "left")
        services.label_pair(pair.pk, person, "left" if k < agree else "right")


def test_agreement_is_measured_per_tag_against_people_and_gold():
    _measured("math", agree=18, disagree=2)
    _measured("chat", agree=3, disagree=3)
    gold = make_pair(prompt=make_prompt(tag="chat"), is_gold=True, gold_choice="b")
    services.label_pair(gold.pk, _judge(), "left")  # the judge says a, the gold answer is b
    undecided = make_pair(prompt=make_prompt(tag="chat"), labels_needed=3)
    services.label_pair(undecided.pk, _judge(), "left")
    services.label_pair(undecided.pk, make_user(), "left")
    services.label_pair(undecided.pk, make_user(), "right")  # people tie: decides nothing
    found = routing.judge_agreement(JUDGE)
    assert (found["math"].pairs, found["math"].agreed) == (20, 18)
    assert (found["chat"].pairs, found["chat"].agreed) == (7, 3)
    assert (found[None].pairs, found[None].agreed) == (27, 21)
    assert found["math"].interval == routing.wilson_interval(18, 20)
    assert found["math"].preference_prob == pytest.approx(0.9)
    assert found["chat"].preference_prob == 0.5  # 3/7 agreement: never below a coin


def test_people_get_only_the_pairs_where_the_judge_is_not_trusted(settings):
    _measured("math", agree=60, disagree=0)  # lower bound 0.94
    _measured("chat", agree=6, disagree=4)  # lower bound 0.31
    round_ = make_round(route_judge=JUDGE, route_threshold=0.8, audit_share=0.0)
    math_pairs = [make_pair(round=round_, prompt=make_prompt(tag="math")) for _ in range(3)]
    chat_pairs = [make_pair(round=round_, prompt=make_prompt(tag="chat")) for _ in range(2)]
    waiting = make_pair(round=round_, prompt=make_prompt(tag="chat"))
    person = make_user()
    assert services.next_pair_for(person) is None  # nothing routed yet: people wait for the judge
    judge = _judge()
    for pair in (*math_pairs, *chat_pairs):
        services.label_pair(pair.pk, judge, "right")
    routed = routing.route_round(round_)
    assert (routed.to_judge, routed.to_people) == (3, 2)
    for pair in math_pairs:
        pair.refresh_from_db()
        assert pair.route == Route.JUDGE and pair.labels_needed == pair.labels_done == 1
        assert Label.objects.get(pair=pair).preference_prob == pytest.approx(1.0)
    served = []
    while (lease := services.next_pair_for(person)) is not None:
        served.append(lease.pair)
        services.record_label(lease, person, "left" if lease.left_is_a else "right")  # a: the judge said b
    assert sorted(p.pk for p in served) == sorted(p.pk for p in chat_pairs)
    assert waiting not in served
    # the decision on a pair sent to people is theirs; on the others it is the judge's, weighed by agreement
    decided = {d.pair.pk: d for d in decisions(rounds=[round_.number])}
    for pair in chat_pairs:
        assert decided[pair.pk].chosen == pair.response_a
    for pair in math_pairs:
        assert decided[pair.pk].chosen == pair.response_b


def test_an_audit_share_sends_trusted_pairs_to_people_the_same_way_every_time():
    _measured("math", agree=60, disagree=0)
    round_ = make_round(route_judge=JUDGE, route_threshold=0.8, audit_share=0.3)
    pairs = [make_pair(round=round_, prompt=make_prompt(tag="math")) for _ in range(40)]
    judge = _judge()
    for pair in pairs:
        services.label_pair(pair.pk, judge, "left")
    routed = routing.route_round(round_)
    expected = {p.pk for p in pairs if routing.audited(p.pk, 0.3)}
    assert 0 < len(expected) < 40
    assert routed.audited == routed.to_people == len(expected)
    assert set(Pair.objects.filter(round=round_, route=Route.PEOPLE).values_list("pk", flat=True)) == expected
    assert routing.route_round(round_).to_judge == 0  # routed pairs stay routed


def test_the_loop_routes_after_its_judge_labelled(settings):
    from annotate.judging import label_pairs

    round_ = make_round(route_judge=JUDGE, route_threshold=0.8, audit_share=0.0)
    pairs = [make_pair(round=round_, text_a="short", text_b="a much longer answer to the question") for _ in range(3)]
    summary = label_pairs(JUDGE)
    assert summary.labels == 3
    # nothing measured yet: the lower bound is 0, so every pair goes to people after the judge
    assert set(Pair.objects.filter(pk__in=[p.pk for p in pairs]).values_list("route", "labels_needed")) == {
        (Route.PEOPLE, 2)}
    assert services.next_pair_for(make_user()).pair in pairs


def test_routing_leaves_a_round_closed_meanwhile_alone():
    """Routing read the round open, closing settled its pairs, and routing then asked them for people's labels
    again: they stayed open in the closed round."""
    from django.db.models import F

    from annotate import closing
    from annotate.models import LabellingRound

    round_ = make_round(route_judge=JUDGE, route_threshold=0.5)
    pair = make_pair(round=round_)
    services.label_pair(pair.pk, _judge(), "left")  # no agreement measured yet: routing would ask people
    stale = LabellingRound.objects.get(pk=round_.pk)  # as routing holds it, read before the closing
    closing.close_round(round_, "enough")
    assert routing.route_round(stale).to_people == 0
    assert not Pair.objects.filter(round=round_, labels_done__lt=F("labels_needed")).exists()
