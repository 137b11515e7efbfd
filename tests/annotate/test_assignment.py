"""Leasing pairs: one at a time, never twice to one person, never beyond need, oldest round first, gold mixed in."""
import random
from datetime import timedelta

import pytest
from django.utils import timezone

from annotate import services
from annotate.models import Assignment, Label, Pair

from .factories import make_pair, make_pairs, make_round, make_user

pytestmark = pytest.mark.django_db


def test_a_lease_is_kept_until_labelled_then_the_next_pair_comes():
    pairs = make_pairs(3)
    user = make_user()
    first = services.next_pair_for(user)
    assert first.pair == pairs[0]
    assert services.next_pair_for(user).pk == first.pk  # a reload shows the same pair
    services.record_label(first, user, "left")
    second = services.next_pair_for(user)
    assert second.pair == pairs[1]


def test_a_pair_needing_one_label_is_leased_to_one_person_only():
    pair = make_pair()
    alice, bob = make_user(), make_user()
    assert services.next_pair_for(alice).pair == pair
    assert services.next_pair_for(bob) is None


def test_an_expired_lease_frees_the_pair_and_the_late_label_is_refused():
    pair = make_pair()
    alice, bob = make_user(), make_user()
    lease = services.next_pair_for(alice)
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.next_pair_for(bob).pair == pair
    services.record_label(pair.pk, bob, "right")
    with pytest.raises(services.LabelError):
        services.record_label(lease, alice, "left")
    pair.refresh_from_db()
    assert pair.labels_done == 1 and pair.labels.count() == 1


def test_an_expired_lease_comes_back_to_its_holder_while_the_pair_has_room():
    pair = make_pair()
    alice = make_user()
    lease = services.next_pair_for(alice)
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    again = services.next_pair_for(alice)
    assert again.pk == lease.pk and again.pair == pair and again.expires_at > timezone.now()


def test_k_labels_means_k_people_and_never_the_same_person_twice():
    pair = make_pair(labels_needed=2)
    users = [make_user() for _ in range(3)]
    for user in users[:2]:
        lease = services.next_pair_for(user)
        assert lease.pair == pair
        services.record_label(lease, user, "tie")
        assert services.next_pair_for(user) is None  # never shown again to the same person
    assert services.next_pair_for(users[2]) is None
    pair.refresh_from_db()
    assert pair.labels_done == 2


def test_oldest_round_first_then_smallest_margin_when_the_round_asks():
    late, early = make_round(number=7), make_round(number=3, queue_order="uncertain")
    newer_round_pair = make_pair(round=late)
    wide = make_pair(round=early, margin=-4.0)
    narrow = make_pair(round=early, margin=0.1)
    unknown = make_pair(round=early)
    user = make_user()
    order = []
    while (lease := services.next_pair_for(user)) is not None:
        order.append(lease.pair)
        services.record_label(lease, user, "left")
    assert order == [narrow, wide, unknown, newer_round_pair]


def test_sides_are_randomised_per_pair_and_the_choice_follows_the_sides():
    make_pairs(40)
    user = make_user()
    shown = []
    while (lease := services.next_pair_for(user)) is not None:
        shown.append(lease.left_is_a)
        label = services.record_label(lease, user, "left")
        assert label.side == "left" and label.left_is_a == lease.left_is_a
        assert label.choice == ("a" if lease.left_is_a else "b")
    assert 5 < sum(shown) < 35


@pytest.mark.parametrize("left_is_a,side,choice", [
    (True, "left", "a"), (True, "right", "b"), (False, "left", "b"), (False, "right", "a"),
    (True, "tie", "tie"), (False, "both_bad", "both_bad"),
])
def test_each_key_maps_to_its_outcome(left_is_a, side, choice):
    pair = make_pair()
    user = make_user()
    lease = services.next_pair_for(user)
    Assignment.objects.filter(pk=lease.pk).update(left_is_a=left_is_a)
    label = services.record_label(pair.pk, user, side, strength="slight")
    assert label.choice == choice and label.side == side and label.left_is_a == left_is_a
    assert label.preference_prob == (0.75 if choice in ("a", "b") else None)


def test_gold_pairs_are_mixed_in_at_the_rounds_rate():
    always, never = make_round(gold_rate=1.0), make_round(gold_rate=0.0)
    gold = make_pair(round=always, is_gold=True, gold_choice="a", labels_needed=1)
    make_pairs(3, round=always)
    user = make_user()
    assert services.next_pair_for(user).pair == gold
    other = make_user()
    services.record_label(gold.pk, user, "left")
    # Gold pairs are answered by everyone, whatever their labels_needed.
    assert services.next_pair_for(other).pair == gold
    quiet_user = make_user()
    never_pairs = make_pairs(2, round=never)
    make_pair(round=never, is_gold=True, gold_choice="b")
    Pair.objects.filter(round=always).delete()
    served = []
    while (lease := services.next_pair_for(quiet_user)) is not None:
        served.append(lease.pair)
        services.skip(quiet_user, lease.pair)
    assert served == never_pairs


def test_gold_rate_is_roughly_honoured():
    round_ = make_round(gold_rate=0.25)
    make_pairs(120, round=round_)
    make_pairs(60, round=round_, is_gold=True, gold_choice="a")
    user = make_user()
    rng = random.Random(7)
    gold = 0
    for _ in range(80):
        lease = services.next_pair_for(user, rng=rng)
        gold += lease.pair.is_gold
        services.record_label(lease, user, "left")
    assert 10 <= gold <= 32


def test_double_submit_gives_one_label():
    pair = make_pair()
    user = make_user()
    lease = services.next_pair_for(user)
    first = services.record_label(lease, user, "left", comment="good")
    second = services.record_label(lease.pair_id, user, "left", comment="good ")  # the same request again
    assert first.pk == second.pk and second.side == "left"
    pair.refresh_from_db()
    assert pair.labels_done == 1 and Label.objects.count() == 1


@pytest.mark.parametrize("again", [dict(side="right"), dict(side="left", strength="clear"),
                                   dict(side="left", comment="on second thought")])
def test_another_answer_for_a_labelled_pair_is_refused_not_dropped(again):
    """A second key press with another answer was answered with the first label, and the page said the second was
    saved: the correction was lost without a word. It is refused, naming the stored answer and the way to change it."""
    make_pair()
    user = make_user()
    lease = services.next_pair_for(user)
    services.record_label(lease, user, "left")
    with pytest.raises(services.LabelError, match=r"already \(left\).*undo"):
        services.record_label(lease.pair_id, user, again["side"], strength=again.get("strength"),
                              comment=again.get("comment", ""))
    assert [(label.side, label.strength, label.comment) for label in Label.objects.all()] == [("left", "", "")]


def test_undo_within_a_minute_gives_the_pair_back():
    pairs = make_pairs(2)
    user = make_user()
    lease = services.next_pair_for(user)
    services.record_label(lease, user, "left")
    services.next_pair_for(user)  # the next pair is on screen when "u" is pressed
    undone = services.undo_last_label(user)
    assert undone.pair == pairs[0] and undone.state == Assignment.LEASED
    pairs[0].refresh_from_db()
    assert pairs[0].labels_done == 0 and not Label.objects.exists()
    assert services.next_pair_for(user).pair == pairs[0]
    label = services.record_label(pairs[0].pk, user, "right")
    assert label.side == "right"


def test_undo_after_a_minute_does_nothing():
    make_pair()
    user = make_user()
    label = services.record_label(services.next_pair_for(user), user, "left")
    Label.objects.filter(pk=label.pk).update(created=timezone.now() - timedelta(seconds=61))
    assert services.undo_last_label(user) is None
    assert Label.objects.filter(pk=label.pk).exists()


def test_skip_frees_the_pair_for_others_and_hides_it_from_me():
    pair = make_pair()
    alice, bob = make_user(), make_user()
    lease = services.next_pair_for(alice)
    services.skip(alice, lease.pair)
    assert services.next_pair_for(alice) is None
    assert services.next_pair_for(bob).pair == pair
    with pytest.raises(services.LabelError):
        services.record_label(pair.pk, alice, "left")


def test_imported_labels_count_as_seen():
    pair = make_pair(labels_needed=2)
    user = make_user()
    services.label_pair(pair.pk, user, "left")  # a pair chosen by code: leased, then labelled
    assert services.next_pair_for(user) is None


def test_a_pair_never_leased_to_me_takes_no_label_and_no_skip():
    pair = make_pair()
    user = make_user()
    with pytest.raises(services.LabelError, match="not leased to you"):
        services.record_label(pair.pk, user, "left")
    with pytest.raises(services.LabelError, match="not leased to you"):
        services.skip(user, pair.pk)
    assert not Label.objects.exists() and not Assignment.objects.exists()


def test_progress_counts_done_today_and_remaining():
    make_pairs(3)
    user = make_user()
    services.record_label(services.next_pair_for(user), user, "left")
    progress = services.progress_for(user)
    assert (progress.done, progress.today) == (1, 1)
    assert progress.remaining == 2
