"""The quality page for one round: gold pairs served in it count there, round 0 is shown as 0, judge agreement is
that round's, and an unknown round is refused as the export page refuses it."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from annotate import quality, services
from annotate.models import AnnotatorProfile
from annotate.services import label_pair

from .factories import make_pair, make_round, make_user

pytestmark = pytest.mark.django_db


class _Draws:
    """An rng whose random() gives these numbers in turn (next_pair_for draws a gold pair below the gold rate)."""

    def __init__(self, *draws: float):
        self.draws = iter(draws)

    def random(self) -> float:
        return next(self.draws)


def test_a_gold_pair_of_no_round_counts_in_the_round_it_was_served_in(client, staff):
    pat, kim = make_user("pat"), make_user("kim")
    round_ = make_round(number=3, gold_rate=0.5)
    make_pair(round=round_)
    gold = make_pair(is_gold=True, gold_choice="a", labels_needed=2)
    lease = services.next_pair_for(pat, rng=_Draws(0.1, 0.9))
    assert lease.pair_id == gold.pk and lease.shown_round == round_
    services.record_label(services.Lease(lease.pk), pat, "left" if lease.left_is_a else "right")  # the right answer
    label_pair(gold.pk, kim, "right")  # given outside any round: not round 3's

    in_round = {s.username: s for s in quality.annotator_stats([3])}
    assert set(in_round) == {"pat"} and (in_round["pat"].gold_seen, in_round["pat"].gold_correct) == (1, 1)
    assert quality.label_noise([3]).gold == 1
    assert not quality.annotator_stats([4])
    client.force_login(staff)
    page = client.get(reverse("annotate:quality"), {"round": 3}).content.decode()
    assert re.search(r'data-annotator="pat">.*?1/1 \(1\.00\)', page, re.S)
    assert 'data-annotator="kim"' not in page


def test_a_pair_of_round_zero_shows_round_0_among_the_disagreements(client, staff):
    pair = make_pair(round=make_round(number=0), labels_needed=2)
    loose = make_pair(labels_needed=2)
    for p in (pair, loose):
        label_pair(p.pk, make_user(), "left")
        label_pair(p.pk, make_user(), "right")
    client.force_login(staff)
    page = client.get(reverse("annotate:quality")).content.decode()

    def round_cell(p) -> str:
        row = re.search(rf'<tr data-pair="{p.pk}">(.*?)</tr>', page, re.S).group(1)
        return re.findall(r"<td>(.*?)</td>", row, re.S)[1]

    assert round_cell(pair) == "0"
    assert round_cell(loose) == "—"  # in no round


def test_a_rounds_page_shows_judge_agreement_measured_in_that_round_only(client, staff):
    judge = make_user("judge")
    AnnotatorProfile.objects.create(user=judge, is_automatic=True, judge_path="tests.quality:j")
    one, two = make_round(number=1), make_round(number=2)
    for i in range(3):
        pair = make_pair(round=one, labels_needed=2)
        label_pair(pair.pk, judge, "left")
        label_pair(pair.pk, make_user(), "left" if i else "right")
    pair = make_pair(round=two, labels_needed=2)
    label_pair(pair.pk, judge, "left")
    label_pair(pair.pk, make_user(), "left")
    client.force_login(staff)

    def judge_rows(query: dict) -> list[list[str]]:
        page = client.get(reverse("annotate:quality"), query).content.decode()
        rows = re.findall(r'<tr data-judge="tests.quality:j"[^>]*>(.*?)</tr>', page, re.S)
        return [re.findall(r"<td>(.*?)</td>", row, re.S)[2:4] for row in rows]  # pairs, agreement

    assert judge_rows({"round": 2})[0] == ["1", "1.000"]
    assert judge_rows({"round": 1})[0] == ["3", "0.667"]
    assert judge_rows({})[0] == ["4", "0.750"]  # every round: what routing trusts the judge by
    make_round(number=5)
    assert judge_rows({"round": 5}) == []
    assert "No pair labelled by both a judge and people in this round yet." in client.get(
        reverse("annotate:quality"), {"round": 5}).content.decode()


def test_a_per_round_judge_agreement_matches_routings_when_one_round_holds_every_label():
    from annotate import routing

    judge = make_user("judge")
    AnnotatorProfile.objects.create(user=judge, is_automatic=True, judge_path="tests.quality:j")
    one = make_round(number=1)
    for choice in ("left", "right", "left"):
        pair = make_pair(round=one, labels_needed=3)
        label_pair(pair.pk, judge, "left")
        label_pair(pair.pk, make_user(), choice)
        label_pair(pair.pk, make_user(), "tie")
    assert quality.judge_agreements([1]) == routing.judge_agreements()


def test_an_unknown_round_on_the_quality_page_is_refused_naming_it(client, staff):
    make_round(number=2)
    client.force_login(staff)
    refused = client.get(reverse("annotate:quality"), {"round": 99})
    assert refused.status_code == 400 and "no labelling round 99" in refused.content.decode()
    assert client.get(reverse("annotate:quality"), {"round": 2}).status_code == 200
    assert client.get(reverse("annotate:quality"), {"round": "x"}).status_code == 400


def test_the_overlap_line_counts_the_people_who_share_a_pair_not_everyone(client, staff):
    # "1 pairs labelled by two or more of 2 people" read as if two people had labelled at all, where three had
    shared, alone = make_pair(labels_needed=2), make_pair()
    label_pair(shared.pk, make_user("pat"), "left")
    label_pair(shared.pk, make_user("kim"), "right")
    label_pair(alone.pk, make_user("lee"), "left")
    client.force_login(staff)
    page = client.get(reverse("annotate:quality")).content.decode()
    line = re.search(r'<p id="overlap">(.*?)</p>', page, re.S).group(1)
    assert line == "1 pair labelled by two or more people, 2 people between them (automatic labellers left out)."
