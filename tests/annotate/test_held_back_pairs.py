"""Pairs held back as near-duplicates (annotate.selection) or decided by the judge: never on anyone's screen, never
labelled, never trained on or exported, however they came in (generated or imported) and whoever held them then."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from annotate import importers, selection, services
from annotate.dataset import decided_pairs, decisions
from annotate.models import Assignment, Label, Pair, Route

from .factories import make_pair, make_round, make_user

pytestmark = pytest.mark.django_db
TWIN = ("Paris is the capital of France.", "paris is the capital of france")


def _hold_back(round_) -> int:
    return selection.hold_back_near_duplicates(list(selection.open_pairs([round_]).select_related(
        "response_a", "response_b")))


def test_holding_a_pair_back_ends_the_lease_on_it_and_its_label_is_refused():
    round_ = make_round()
    twin = make_pair(round=round_, text_a=TWIN[0], text_b=TWIN[1])
    other = make_pair(round=round_)
    person = make_user()
    lease = services.next_pair_for(person)
    assert lease.pair_id == twin.pk
    assert _hold_back(round_) == 1
    assert Assignment.objects.get(pk=lease.pk).state == Assignment.EXPIRED
    with pytest.raises(services.LabelError, match="held back: its two answers are nearly the same"):
        services.record_label(services.Lease(lease.pk), person, "left")
    assert not Label.objects.exists()
    assert services.next_pair_for(person).pair_id == other.pk  # the next pair, not the held-back one again


def test_a_run_out_lease_on_a_held_back_pair_is_not_renewed():
    round_ = make_round()
    make_pair(round=round_, text_a=TWIN[0], text_b=TWIN[1])
    person = make_user()
    lease = services.next_pair_for(person)
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    _hold_back(round_)
    assert services.next_pair_for(person) is None
    with pytest.raises(services.LabelError):
        services.record_label(services.Lease(lease.pk), person, "left")
    assert not Label.objects.exists()


@pytest.mark.parametrize("route", [Route.DUPLICATE, Route.JUDGE])
def test_a_lease_given_as_its_pair_was_withdrawn_is_ended_and_refused(route):
    """A lease that slipped past the hold-back or the routing (given between their read and their write): the page
    does not show it again, and its label is refused."""
    round_ = make_round()
    pair, other = make_pair(round=round_), make_pair(round=round_)
    person = make_user()
    lease = services.next_pair_for(person)
    assert lease.pair_id == pair.pk
    Pair.objects.filter(pk=pair.pk).update(route=route)
    with pytest.raises(services.LabelError, match="held back" if route == Route.DUPLICATE else "automatic judge"):
        services.record_label(services.Lease(lease.pk), person, "left")
    assert services.next_pair_for(person).pair_id == other.pk
    assert Assignment.objects.get(pk=lease.pk).state == Assignment.EXPIRED
    assert not Label.objects.exists()


def test_a_near_duplicate_held_back_after_one_label_is_neither_trained_on_nor_exported():
    round_ = make_round()
    pair = make_pair(round=round_, text_a=TWIN[0], text_b=TWIN[1], labels_needed=3)
    kept = make_pair(round=round_, labels_needed=1)
    for target in (pair, kept):
        services.label_pair(target.pk, make_user(), "left")  # one of its three labels, for the twin
    assert _hold_back(round_) == 1
    assert [d.pair.pk for d in decided_pairs()] == [kept.pk]  # training
    assert [d.pair.pk for d in decisions(same_answers=False)] == [kept.pk]  # exports
    assert [d.pair.pk for d in decisions(include_eval=True)] == [kept.pk]  # pages


def test_imported_near_duplicate_pairs_are_held_back_from_people(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "What is the capital of France?", "response_a": TWIN[0], "response_b": TWIN[1]},
            {"prompt": "What is the capital of Spain?", "response_a": "Madrid.", "response_b": "It is Barcelona."}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = importers.import_pairs(path, round_number=3)
    assert (result.created, result.held_back) == (2, (1,))
    assert "1 of those added held back from people because their two answers are nearly the same" in str(result)
    twin = Pair.objects.get(response_a__text=TWIN[0])
    assert twin.route == Route.DUPLICATE
    person = make_user()
    lease = services.next_pair_for(person)
    assert lease.pair.response_a.text == "Madrid."
    services.record_label(lease, person, "left")
    assert services.next_pair_for(person) is None  # the near-duplicate never reaches a person
    # imported again: already present, and held back still
    again = importers.import_pairs(path, round_number=3)
    assert (again.created, again.skipped, again.held_back) == (0, 2, ())


def test_undo_leaves_a_label_on_a_pair_held_back_since_it_was_given():
    """"u" took the label back and put the held-back pair on screen again, where no label is taken: the label was gone
    for good and the person was asked for one they could not give."""
    round_ = make_round(labels_per_pair=3)
    twin = make_pair(round=round_, text_a=TWIN[0], text_b=TWIN[1], labels_needed=3)
    other = make_pair(round=round_, labels_needed=3)
    person = make_user()
    lease = services.next_pair_for(person)
    assert lease.pair_id == twin.pk
    services.record_label(services.Lease(lease.pk), person, "left")
    assert services.next_pair_for(person).pair_id == other.pk
    assert _hold_back(round_) == 1
    assert services.undo_last_label(person) is None  # nothing to undo: the label stays, as given
    assert services.undo_last_label(person, lease=lease.pk) is None
    twin.refresh_from_db()
    assert Label.objects.filter(pair=twin).count() == 1 and twin.labels_done == 1
    assert services.next_pair_for(person).pair_id == other.pk


def test_a_labelled_row_on_a_held_back_pair_releases_it_and_trains(tmp_path):
    """Pairs pushed unlabelled, then the same answers imported as preferences: the label was counted "added" but the
    pair stayed held back, so it never trained nor was exported (a labelled near-duplicate imported new is kept)."""
    pairs, prefs = tmp_path / "pairs.jsonl", tmp_path / "prefs.jsonl"
    pairs.write_text(json.dumps({"prompt": "What is the capital of France?", "response_a": TWIN[0],
                                 "response_b": TWIN[1]}) + "\n")
    prefs.write_text(json.dumps({"prompt": "What is the capital of France?", "chosen": TWIN[1],
                                 "rejected": TWIN[0]}) + "\n")
    importers.import_pairs(pairs)
    assert Pair.objects.get().route == Route.DUPLICATE
    result = importers.import_preferences(prefs)
    assert result.created == 1
    twin = Pair.objects.get()
    assert twin.route == Route.NONE and twin.labels_done == 1
    (decided,) = decisions()
    assert decided.chosen.text == TWIN[1]


def test_skipping_the_pair_on_screen_after_it_was_held_back_says_so():
    """It answered "that pair is not leased to you: only the pair on your screen can be skipped" for the pair on their
    screen."""
    round_ = make_round()
    twin = make_pair(round=round_, text_a=TWIN[0], text_b=TWIN[1])
    person = make_user()
    lease = services.next_pair_for(person)
    assert lease.pair_id == twin.pk and _hold_back(round_) == 1
    with pytest.raises(services.LabelError, match="that pair is held back as a near-duplicate of another pair: "
                                                  "nothing to skip; here is the next one"):
        services.skip(person, services.Lease(lease.pk))
