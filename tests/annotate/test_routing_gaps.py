"""Routing gaps: a round given a routing judge after people began it, and a judge's label on a pair routed to people
(not trusted, or drawn for audit) before any person labelled it."""
from __future__ import annotations

import pytest

from annotate import closing, routing, services
from annotate.dataset import decided_pairs, decisions
from annotate.judging import judge_account
from annotate.models import Pair, Route
from annotate.rounds import save_round

from .factories import make_pair, make_prompt, make_round, make_user

pytestmark = pytest.mark.django_db
JUDGE = "judges.rules:length_target"


def _measured(agree: int, disagree: int, tag: str = "") -> None:
    """Pairs (in no round) the judge labelled a and a person labelled a where they agree, else b."""
    judge, person = judge_account(JUDGE), make_user()
    for k in range(agree + disagree):
        pair = make_pair(prompt=make_prompt(tag=tag), labels_needed=2)
        services.label_pair(pair.pk, judge, "left")
        services.label_pair(pair.pk, person, "left" if k < agree else "right")


def test_a_pair_people_began_before_the_round_had_a_judge_still_reaches_people():
    round_ = make_round(labels_per_pair=3)
    pair = make_pair(round=round_, labels_needed=3)
    first = make_user()
    services.record_label(services.next_pair_for(first), first, "left")  # 1 of 3 labels
    round_.route_judge = JUDGE  # routing turned on mid-round, as the rounds page saves it
    save_round(round_, ["route_judge"])
    judge = judge_account(JUDGE)
    services.record_label(services.next_pair_for(judge), judge, "left")  # the judge labels every open pair
    routed = routing.route_round(round_)
    pair.refresh_from_db()
    # people's, as they began it: the judge's label comes on top of the three people the pair needs
    assert (routed.to_people, pair.route, pair.labels_done, pair.labels_needed) == (1, Route.PEOPLE, 2, 4)
    people = [first]
    for _ in range(2):
        person = make_user()
        lease = services.next_pair_for(person)
        assert lease is not None and lease.pair_id == pair.pk
        services.record_label(lease, person, "left")
        people.append(person)
    assert services.next_pair_for(make_user()) is None and services.open_pair_count() == 0
    decided = {d.pair.pk: d for d in decisions()}[pair.pk]
    assert {label.annotator_id for label in decided.labels} == {p.pk for p in people}  # people's labels decide


def test_a_round_with_a_judge_from_the_start_still_waits_for_the_judge():
    round_ = make_round(route_judge=JUDGE, labels_per_pair=2)
    make_pair(round=round_, labels_needed=2)
    assert services.next_pair_for(make_user()) is None  # nobody began it: it is routed once the judge labels it


def _routed_to_people(share: float = 0.0, threshold: float = 0.9) -> Pair:
    """A pair the judge labelled a, sent to people: its agreement (3 of 4) is below `threshold`, or it was drawn for
    the audit `share`."""
    _measured(agree=3, disagree=1)
    round_ = make_round(route_judge=JUDGE, route_threshold=threshold, audit_share=share)
    pair = make_pair(round=round_)
    services.label_pair(pair.pk, judge_account(JUDGE), "left")
    routing.route_round(round_)
    pair.refresh_from_db()
    assert pair.route == Route.PEOPLE
    return pair


def test_an_untrusted_judges_label_alone_decides_nothing_until_a_person_labels():
    pair = _routed_to_people()
    assert pair.pk not in {d.pair.pk for d in decided_pairs()}  # it trained at 1.0, above a trusted judge's 0.75
    person = make_user()
    lease = services.next_pair_for(person)
    assert lease.pair_id == pair.pk
    services.record_label(lease, person, "right" if lease.left_is_a else "left")  # b, against the judge's a
    decided = {d.pair.pk: d for d in decided_pairs()}[pair.pk]
    assert decided.chosen == pair.response_b and decided.preference_prob == 1.0


def test_a_pair_drawn_to_audit_a_trusted_judge_waits_for_people_too():
    _measured(agree=3, disagree=1)  # lower bound 0.30: trusted at a threshold of 0.25
    round_ = make_round(route_judge=JUDGE, route_threshold=0.25, audit_share=0.5)
    pairs = [make_pair(round=round_) for _ in range(16)]
    for pair in pairs:
        services.label_pair(pair.pk, judge_account(JUDGE), "left")
    routed = routing.route_round(round_)
    drawn = {p.pk for p in pairs if routing.audited(p.pk, 0.5)}
    assert drawn and routed.audited == len(drawn)
    decided = {d.pair.pk for d in decided_pairs()}
    assert not drawn & decided  # waiting for people: the judge's label alone is not the decision
    assert {p.pk for p in pairs} - drawn <= decided  # the judge's own pairs are decided by its label


def test_a_round_that_closes_before_a_person_labels_leaves_the_judges_pair_undecided():
    pair = _routed_to_people()
    closing.close_round(pair.round, "enough")
    pair.refresh_from_db()
    assert pair.labels_needed == pair.labels_done == 1  # closing froze it at the judge's label
    assert pair.pk not in {d.pair.pk for d in decisions()}  # neither trained on nor exported


def test_a_trusted_judges_label_still_decides_weighed_by_its_agreement():
    _measured(agree=3, disagree=1)
    round_ = make_round(route_judge=JUDGE, route_threshold=0.25, audit_share=0.0)
    pair = make_pair(round=round_)
    services.label_pair(pair.pk, judge_account(JUDGE), "left")
    routing.route_round(round_)
    decided = {d.pair.pk: d for d in decided_pairs()}[pair.pk]
    assert decided.chosen == pair.response_a and decided.preference_prob == pytest.approx(0.75)


@pytest.mark.parametrize("labels_per_pair", [1, 2])
def test_a_pair_a_person_skipped_that_the_judge_then_filled_goes_to_people(labels_per_pair):
    """Routing counted the judge's label against the people the pair needed: a pair one person skipped before the
    round had a judge, then filled by the judge, was passed over, and the untrusted judge's label decided it alone."""
    round_ = make_round(labels_per_pair=labels_per_pair)
    pair = make_pair(round=round_, labels_needed=labels_per_pair)
    first = make_user()
    services.skip(first, services.next_pair_for(first).pair)
    round_.route_judge = JUDGE
    save_round(round_, ["route_judge"])
    judge = judge_account(JUDGE)
    for _ in range(labels_per_pair):
        lease = services.next_pair_for(judge)
        if lease is None:
            break
        services.record_label(lease, judge, "left")
    routing.route_round(round_)
    pair.refresh_from_db()
    assert pair.route == Route.PEOPLE and pair.labels_needed == labels_per_pair + 1
    assert pair.pk not in {d.pair.pk for d in decisions()}  # undecided until people label it
    person = make_user()
    assert services.next_pair_for(person).pair_id == pair.pk
