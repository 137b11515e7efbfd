"""Stop when enough: a round closes its labelling once the held-out reward-accuracy interval is narrower than its
set width, and says why; people are then given nothing more from it."""
from __future__ import annotations

import pytest
from django.db.models import F
from django.utils import timezone

from annotate import closing, services
from annotate.models import LabellingRound, Pair
from annotate.routing import wilson_interval
from tests.threads import run_at_once

from .factories import make_pair, make_round, make_user

pytestmark = pytest.mark.django_db


def test_a_narrow_enough_interval_closes_the_round_and_says_why():
    round_ = make_round(close_width=0.15)
    labelled, still_open = make_pair(round=round_), make_pair(round=round_, labels_needed=3)
    person = make_user()
    services.label_pair(labelled.pk, person, "left")
    services.label_pair(still_open.pk, person, "left")
    # 200 pairs at 0.8: Wilson [0.739, 0.850], width 0.111 < 0.15
    reason = closing.close_if_enough(round_, {"heldout/pairs": 200, "heldout/reward_accuracy": 0.8})
    low, high = wilson_interval(160, 200)
    assert high - low < 0.15
    assert reason is not None and "0.800 on 200 pairs" in reason and f"{high - low:.3f}" in reason
    round_.refresh_from_db()
    assert round_.closed_at is not None and round_.closed_reason == reason
    still_open.refresh_from_db()
    assert still_open.labels_needed == still_open.labels_done == 1  # the label given stays, none more is asked
    assert services.next_pair_for(make_user()) is None


@pytest.mark.parametrize("metrics", [
    {"heldout/pairs": 40, "heldout/reward_accuracy": 0.8},  # width 0.24: more labels would still tell
    {},  # nothing held out was measured
    {"heldout/pairs": 0, "heldout/reward_accuracy": float("nan")},
])
def test_a_wide_or_missing_interval_leaves_the_round_open(metrics):
    round_ = make_round(close_width=0.15)
    pair = make_pair(round=round_)
    assert closing.close_if_enough(round_, metrics) is None
    assert LabellingRound.objects.get(pk=round_.pk).closed_at is None
    assert services.next_pair_for(make_user()).pair == pair


def test_without_a_width_set_a_round_never_closes_by_itself():
    round_ = make_round()
    assert closing.close_if_enough(round_, {"heldout/pairs": 10_000, "heldout/reward_accuracy": 0.9}) is None


def test_closing_by_hand_needs_a_reason_and_happens_once():
    round_ = make_round()
    make_pair(round=round_)
    with pytest.raises(closing.ClosingError, match="say why"):
        closing.close_round(round_, "  ")
    closing.close_round(round_, "budget spent")
    with pytest.raises(closing.ClosingError, match="closed already"):
        closing.close_round(round_, "again")
    assert Pair.objects.get(round=round_).labels_needed == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", ["close", "save"])
def test_changing_a_round_while_an_import_labels_and_adds_to_it_deadlocks_neither(tmp_path, monkeypatch, change):
    """A preference import labels pairs of a round that are already there, then inserts new pairs into it, while
    someone closes the round or changes its overlap (an update of its pairs). On PostgreSQL two cycles ended one side
    with a deadlock error (a 500 on the rounds page, or a failed import): the round locked FOR UPDATE, which the new
    pairs' references waited on, while the update waited on a pair the import held; and the import taking its pairs
    in file order (the second pair first) while the update took them in scan order. The round is now locked FOR NO
    KEY UPDATE, and both sides take the pairs in id order (models.lock_pairs)."""
    import json
    import threading
    import time

    from annotate import importers, rounds
    from annotate.models import Label

    round_ = LabellingRound.objects.create(number=7)
    first, second = (make_pair(text_a=f"kept answer {i}", text_b=f"other answer {i}", round=round_) for i in (1, 2))
    path = tmp_path / "prefs.jsonl"
    rows = [{"prompt": pair.prompt.text, "chosen": f"kept answer {i}", "rejected": f"other answer {i}"}
            for i, pair in ((2, second), (1, first))]  # the higher id first, as a file may have it
    path.write_text("".join(json.dumps(row) + "\n" for row in
                            [*rows, {"prompt": "a new question", "chosen": "yes", "rejected": "no"}]))
    importers.import_account()
    holding = threading.Event()
    create = Label.objects.create

    def held_create(**fields):  # the import's first label: the pairs it has locked by now stay locked a while
        if threading.current_thread().name == "import" and not holding.is_set():
            holding.set()
            time.sleep(1.5)  # meanwhile the round's update takes what pairs it can and waits on the rest
        return create(**fields)

    monkeypatch.setattr(Label.objects, "create", held_create)

    def change_round() -> None:
        holding.wait(60)
        stored = LabellingRound.objects.get(pk=round_.pk)
        if change == "close":
            closing.close_round(stored, "enough labels")
        else:
            stored.labels_per_pair = 3
            rounds.save_round(stored, ["labels_per_pair"])

    errors = run_at_once({"import": lambda: importers.import_preferences(path, round_number=7), change: change_round},
                         release=holding)
    assert errors == []
    assert Pair.objects.filter(round=round_).count() == 3 and Label.objects.count() == 3
    if change == "close":
        assert LabellingRound.objects.get(pk=round_.pk).closed_at is not None
    else:
        assert LabellingRound.objects.get(pk=round_.pk).labels_per_pair == 3


def test_a_label_undone_after_its_round_closed_leaves_no_pair_open_in_it():
    round_ = make_round()
    finished, other = make_pair(round=round_), make_pair(round=round_, labels_needed=2)
    person = make_user()
    services.label_pair(other.pk, make_user(), "left")
    services.label_pair(finished.pk, person, "left")
    closing.close_round(round_, "enough")
    undone = services.undo_last_label(person)  # within the minute, the round closed meanwhile
    assert undone.pair_id == finished.pk
    assert not Pair.objects.filter(round=round_, labels_done__lt=F("labels_needed")).exists()
    finished.refresh_from_db()
    assert finished.labels_done == finished.labels_needed == 0
    other.refresh_from_db()
    assert (other.labels_done, other.labels_needed) == (1, 1)  # another pair's labels are not touched
    # the pair is leased back to them, and their new answer is kept
    assert services.record_label(finished.pk, person, "right").side == "right"
    finished.refresh_from_db()
    assert finished.labels_done == 1


def test_a_label_undone_in_an_open_round_is_asked_for_again():
    round_ = make_round()
    pair = make_pair(round=round_)
    person = make_user()
    services.label_pair(pair.pk, person, "left")
    services.undo_last_label(person)
    pair.refresh_from_db()
    assert (pair.labels_done, pair.labels_needed) == (0, 1)
    assert services.next_pair_for(person).pair_id == pair.pk  # leased back to them, still wanted


@pytest.mark.django_db(transaction=True)
def test_an_undo_and_a_closing_at_the_same_moment_leave_no_pair_open():
    """The undo reads whether the round is closed, then takes its label back; a closing that commits in between
    found the pair finished (so left it alone) and was not seen by the undo, and the pair stayed open in the closed
    round (on PostgreSQL; on SQLite one writer at a time). The undo now locks the round first, as closing does."""
    import threading
    import time

    from django.db.models.signals import pre_delete

    from annotate.models import Label

    round_ = make_round()
    pair = make_pair(round=round_)
    person = make_user()
    services.label_pair(pair.pk, person, "left")
    holding = threading.Event()
    held = []

    def hold(sender, instance, **kwargs):  # the undo, between its look at the round and its change of the pair
        held.append(instance.pk)
        holding.set()
        time.sleep(1.5)

    # a signal, not a stand-in for Label.delete: the undo deletes through a query, which no model method sees
    pre_delete.connect(hold, sender=Label, weak=False)

    def close() -> None:
        holding.wait(60)
        closing.close_round(LabellingRound.objects.get(pk=round_.pk), "enough labels")

    try:
        errors = run_at_once({"undo": lambda: services.undo_last_label(person), "close": close}, release=holding)
    finally:
        pre_delete.disconnect(hold, sender=Label)
    assert held, "the undo was never held: the test did not interleave the two"
    assert errors == []
    pair.refresh_from_db()
    assert LabellingRound.objects.get(pk=round_.pk).closed_at is not None
    assert pair.labels_done == 0 and pair.labels_needed == 0


def test_closing_a_round_reaches_every_open_pair_whatever_the_batches(monkeypatch):
    from annotate import models

    monkeypatch.setattr(models, "UPDATE_BATCH", 2)  # five pairs: three updates of at most two
    round_ = make_round()
    pairs = [make_pair(round=round_, labels_needed=2) for _ in range(5)]
    closing.close_round(round_, "enough")
    assert [p.labels_needed for p in Pair.objects.filter(pk__in=[p.pk for p in pairs])] == [0] * 5


def test_a_pair_on_screen_when_its_round_closes_is_not_labelled_after_the_close():
    """A lease taken before the close stayed live: the page (or the API's next pair) showed it again, and the key
    press was stored, a label more than the pair needed, deciding a round already frozen."""
    round_ = make_round()
    pair, _ = make_pair(round=round_), make_pair(round=round_)
    person = make_user()
    lease = services.next_pair_for(person)
    assert lease.pair.round_id == round_.pk
    closing.close_round(round_, "enough")
    assert services.next_pair_for(person) is None  # not served again; nothing else is open
    with pytest.raises(services.LabelError, match="lease on that pair has ended"):
        services.record_label(lease, person, "left")
    assert not pair.labels.exists() and not Pair.objects.filter(labels_done__gt=0).exists()


def test_a_lease_given_while_its_round_closed_is_refused_its_label():
    """A lease written as the round closed (after the close ended the leases it found, before it committed) is refused
    by its time: leased before the round's closing time."""
    round_ = make_round()
    pair = make_pair(round=round_)
    person = make_user()
    lease = services.next_pair_for(person)
    LabellingRound.objects.filter(pk=round_.pk).update(closed_at=timezone.now(), closed_reason="enough")
    with pytest.raises(services.LabelError, match="labelling round has closed"):
        services.record_label(lease, person, "left")
    assert not pair.labels.exists()
