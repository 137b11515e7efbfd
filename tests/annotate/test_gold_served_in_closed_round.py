"""A gold pair of no round, served in a round (shown as that round's), goes with that round when it closes: its lease
ends, its label is refused, and it leaves the skipped list, as the round's own pairs do; staying, it was the one pair
left, and gold."""
from __future__ import annotations

import pytest

from annotate import closing, services

from .factories import make_pair, make_round, make_user

pytestmark = pytest.mark.django_db


class _Draws:
    def __init__(self, *draws):
        self.draws = iter(draws)

    def random(self):
        return next(self.draws)


def _served_gold(person):
    round_ = make_round(number=3, gold_rate=0.5, guidelines="G")
    regular = make_pair(round=round_)
    gold = make_pair(is_gold=True, gold_choice="a")
    lease = services.next_pair_for(person, rng=_Draws(0.1, 0.9))
    assert lease.pair_id == gold.pk and lease.shown_round == round_
    return round_, regular, gold, lease


def test_close_ends_the_lease_of_a_gold_pair_served_in_the_round():
    person = make_user()
    round_, regular, gold, lease = _served_gold(person)
    closing.close_round(round_, "enough")
    # a regular pair's lease would be ended here; the gold one stays, still shown as (closed) round 3
    again = services.next_pair_for(person)
    assert again is None, f"still served after close: lease {again.pk}, shown as round {again.shown_round.number}"


def test_a_gold_pair_served_in_a_closed_round_is_not_labelled_after_the_close():
    person = make_user()
    round_, regular, gold, lease = _served_gold(person)
    closing.close_round(round_, "enough")
    with pytest.raises(services.LabelError):
        services.record_label(services.Lease(lease.pk), person, "left")


def test_skipped_list_treats_a_gold_pair_served_in_a_closed_round_as_the_rounds_other_pairs():
    person = make_user()
    round_ = make_round(number=3, gold_rate=0.5, guidelines="G")
    regular = make_pair(round=round_)
    make_pair(round=round_)
    gold = make_pair(is_gold=True, gold_choice="a")
    first = services.next_pair_for(person, rng=_Draws(0.9, 0.9))  # regular
    assert first.pair_id == regular.pk
    services.skip(person, services.Lease(first.pk))
    second = services.next_pair_for(person, rng=_Draws(0.1, 0.9))  # gold, drawn into round 3
    assert second is not None and second.pair_id == gold.pk
    services.skip(person, services.Lease(second.pk))
    assert {a.pair_id for a in services.skipped_pairs(person)} == {regular.pk, gold.pk}
    closing.close_round(round_, "enough")
    # both were skipped in round 3: once it closes, the regular one drops off the list; the gold one must too
    assert [a.pair_id for a in services.skipped_pairs(person)] == []


def test_a_gold_pair_answered_in_a_round_since_closed_leaves_remaining_as_the_rounds_pairs_do():
    """The round's own pairs leave "remaining" when it closes; the gold pair answered in it (of no round) was still
    taken off, one less than the queue had, per gold pair answered there."""
    person = make_user()
    round_ = make_round(number=3, gold_rate=0.5)
    regular, _ = make_pair(round=round_), make_pair(round=round_)
    gold = make_pair(is_gold=True, gold_choice="a")
    later = make_round(number=4, gold_rate=0.0)
    make_pair(round=later)
    make_pair(round=later)
    served = services.next_pair_for(person, rng=_Draws(0.1, 0.9))
    assert served.pair_id == gold.pk and served.shown_round == round_
    services.record_label(services.Lease(served.pk), person, "left")
    first = services.next_pair_for(person, rng=_Draws(0.9, 0.9))
    assert first.pair_id == regular.pk
    services.record_label(services.Lease(first.pk), person, "left")
    assert services.progress_for(person).remaining == 2  # round 3's other pair and round 4's two, less the gold
    closing.close_round(round_, "enough")
    assert services.progress_for(person).remaining == 2  # round 4's two pairs
