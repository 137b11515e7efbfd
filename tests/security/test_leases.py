"""Rows 2 and 3 of issue 17, over HTTP. Row 2: an annotator labelled any pair by id (one never handed to them, gold
included) with any `seconds`, and undo then showed that pair. Now a label, skip or undo is accepted only for the
pair leased to that person, with a clear message and nothing stored, and `seconds` never exceeds the server's lease
time. Row 3: 20 parallel GET /annotate/ by one person took 12 leases; now one, however many race (real threads, on
SQLite and, in the PostgreSQL pass, on PostgreSQL)."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotate.models import Assignment, Label, Pair
from annotate.services import lease_pair
from tests.annotate.factories import lease_of, make_pair, make_pairs, make_round, make_user, shown_pair

HTMX = {"HTTP_HX_REQUEST": "true"}


def _shown_pair(html: str) -> int:
    return shown_pair(html)


@pytest.fixture
def ann_client(annotator) -> Client:
    client = Client()
    client.force_login(annotator)
    return client


@pytest.mark.django_db
def test_a_pair_never_leased_to_me_cannot_be_labelled_skipped_or_brought_back_by_undo(ann_client, annotator):
    round_ = make_round(gold_rate=0.0)
    mine, other = make_pairs(2, round=round_)
    gold = make_pair(round=round_, is_gold=True, gold_choice="a", text_a="GOLD ANSWER ONE", text_b="GOLD ANSWER TWO")
    assert _shown_pair(ann_client.get(reverse("annotate:label")).content.decode()) == mine.pk
    someone = make_user("someone")
    for target in (other, gold):
        theirs = lease_pair(target.pk, someone).pk  # another person's lease of it, named by its id
        for named, refusal in (({"lease": theirs}, f"Lease {theirs} is not yours: only the pair on your screen"),
                               ({"pair": target.pk}, "Name the pair by its lease")):
            response = ann_client.post(reverse("annotate:submit"), {**named, "side": "left", "seconds": "0.001"},
                                       **HTMX)
            body = response.content.decode()
            assert response.status_code == 200
            assert refusal in body
            assert shown_pair(body) == mine.pk  # the pair on screen stays
            response = ann_client.post(reverse("annotate:skip"), named, **HTMX)
            assert refusal in response.content.decode()
        Assignment.objects.filter(annotator=someone).delete()  # one open lease a person
    assert not Label.objects.exists()
    assert list(Assignment.objects.values_list("pair_id", "state")) == [(mine.pk, Assignment.LEASED)]
    assert not Pair.objects.filter(labels_done__gt=0).exists()
    # nothing to undo: undo cannot be used to bring the gold pair (or any other) onto the screen
    body = ann_client.post(reverse("annotate:undo"), **HTMX).content.decode()
    assert "Nothing to undo" in body and "GOLD ANSWER" not in body


@pytest.mark.django_db
def test_refusals_without_htmx_come_back_as_a_message_on_the_page(ann_client):
    mine, other = make_pairs(2)
    ann_client.get(reverse("annotate:label"))
    response = ann_client.post(reverse("annotate:submit"), {"pair": other.pk, "side": "right"}, follow=True)
    assert "Name the pair by its lease" in response.content.decode()
    for field in ("pair", "lease"):
        for junk in ("-1", "0", str(2**63), "abc"):
            response = ann_client.post(reverse("annotate:submit"), {field: junk, "side": "left"}, follow=True)
            assert response.status_code in (200, 400)
            response = ann_client.post(reverse("annotate:skip"), {field: junk}, follow=True)
            assert response.status_code in (200, 400)
    assert not Label.objects.exists()
    assert Assignment.objects.get().pair == mine


@pytest.mark.django_db
def test_seconds_never_exceed_the_time_the_server_leased_the_pair(ann_client, annotator):
    first, second = make_pairs(2)
    ann_client.get(reverse("annotate:label"))
    Assignment.objects.filter(annotator=annotator).update(leased_at=timezone.now() - timedelta(seconds=7))
    ann_client.post(reverse("annotate:submit"), {"lease": lease_of(first), "side": "left", "seconds": "86400"}, **HTMX)
    label = Label.objects.get()
    assert 7 <= label.seconds < 60  # the lease time, not the claimed day
    ann_client.post(reverse("annotate:submit"), {"lease": lease_of(second), "side": "left", "seconds": "nan"}, **HTMX)
    assert Label.objects.count() == 1  # not a number: refused by the form, nothing stored


@pytest.mark.django_db
def test_undo_brings_back_only_my_own_leased_label(ann_client, annotator):
    first, second = make_pairs(2)
    ann_client.get(reverse("annotate:label"))
    ann_client.post(reverse("annotate:submit"), {"lease": lease_of(first), "side": "left"}, **HTMX)
    body = ann_client.post(reverse("annotate:undo"), **HTMX).content.decode()
    assert "Label undone" in body and shown_pair(body) == first.pk
    assert not Label.objects.exists()


# ---- row 3: one lease per person however many requests race ---------------------------------------------------

PARALLEL = 20


def _race(user_id: int, barrier: threading.Barrier, shown: list, errors: list) -> None:
    from django.contrib.auth import get_user_model

    try:
        client = Client()
        client.force_login(get_user_model().objects.get(pk=user_id))
        barrier.wait()
        response = client.get(reverse("annotate:label"))
        shown.append(_shown_pair(response.content.decode()))
    except BaseException as exc:  # handed back to the test
        errors.append(exc)
    finally:
        connection.close()


def _in_thread(fn):
    box = {}

    def run():
        try:
            box["value"] = fn()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return box["value"]


def test_twenty_parallel_page_loads_by_one_person_take_one_lease(transactional_db):
    user_id = _in_thread(lambda: (make_pairs(30), make_user("racer").pk)[1])
    barrier = threading.Barrier(PARALLEL)
    shown, errors = [], []
    threads = [threading.Thread(target=_race, args=(user_id, barrier, shown, errors)) for _ in range(PARALLEL)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[:3]
    leases = _in_thread(lambda: list(Assignment.objects.filter(annotator_id=user_id).values_list("pair_id", "state")))
    assert len(leases) == 1 and leases[0][1] == Assignment.LEASED
    assert set(shown) == {leases[0][0]} and len(shown) == PARALLEL  # every tab shows the one leased pair


@pytest.mark.django_db
def test_the_database_itself_refuses_a_second_open_lease(annotator):
    from django.db import IntegrityError, transaction

    first, second = make_pairs(2)
    Assignment.objects.create(pair=first, annotator=annotator, left_is_a=True, expires_at=timezone.now())
    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(pair=second, annotator=annotator, left_is_a=True, expires_at=timezone.now())
