"""Labelling rounds from code over real HTTP: created and changed through the rounds page's own checks, an overlap
change reaching the round's pairs, and every refusal named with nothing changed."""
from __future__ import annotations

import pytest

from annotate.models import LabellingRound, Pair
from annotate.services import label_pair
from prefloop_client import APIError
from tests.annotate.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_pipeline_sets_up_a_round_pushes_its_pairs_and_raises_its_overlap(staff_api):
    made = staff_api.create_round(4, guidelines="Prefer the **shorter** answer.", labels_per_pair=2, gold_rate=0.1,
                                  queue_order="uncertain", close_width=0.15)
    assert made["number"] == 4 and made["labels_per_pair"] == 2 and made["queue_order"] == "uncertain"
    assert made["audit_share"] == 0.1 and made["route_judge"] == ""  # the rounds page's defaults for the rest
    assert staff_api.create_round()["number"] == 5  # one more than the highest
    staff_api.push_pairs([{"prompt": f"Q{i}?", "response_a": f"a{i}", "response_b": f"b{i}"} for i in range(3)],
                         round=4)
    assert [p.labels_needed for p in Pair.objects.filter(round__number=4)] == [2, 2, 2]
    first = Pair.objects.filter(round__number=4).order_by("pk").first()
    label_pair(first.pk, make_user(), "left")
    label_pair(first.pk, make_user(), "right")
    assert staff_api.labelling_round(4) | {} == {**made, "pairs": 3, "open_pairs": 2, "gold_pairs": 0}
    changed = staff_api.change_round(4, labels_per_pair=3, close_width=None)
    assert (changed["labels_per_pair"], changed["close_width"], changed["guidelines"]) == (
        3, None, "Prefer the **shorter** answer.")  # only what was sent changed
    assert sorted(p.labels_needed for p in Pair.objects.filter(round__number=4)) == [3, 3, 3]
    assert changed["open_pairs"] == 3  # the finished pair came back for its third label
    assert [r["number"] for r in staff_api.labelling_rounds()] == [5, 4]


@pytest.mark.parametrize(("body", "field"), [
    ({"labels_per_pair": 0}, "labels_per_pair"),
    ({"labels_per_pair": True}, "labels_per_pair"),
    ({"gold_rate": 1.5}, "gold_rate"),
    ({"queue_order": "newest"}, "queue_order"),
    ({"route_judge": "os:system"}, "route_judge"),
    ({"guidelines": None}, "guidelines"),
    ({"guidlines": "typo"}, "guidlines"),
])
def test_a_refused_setting_is_named_and_nothing_changes(staff_api, body, field):
    staff_api.create_round(2, guidelines="Kept.")
    for send in (lambda: staff_api.post("/labelling-rounds", {"number": 3, **body}),
                 lambda: staff_api.patch("/labelling-rounds/2", body)):
        with pytest.raises(APIError) as refused:
            send()
        assert refused.value.status == 400 and field in refused.value.detail
    assert list(LabellingRound.objects.values_list("number", "guidelines", "labels_per_pair")) == [(2, "Kept.", 1)]


def test_rounds_are_staff_business_and_unknown_or_taken_numbers_are_named(staff_api, annotator_api):
    staff_api.create_round(1)
    with pytest.raises(APIError) as taken:
        staff_api.create_round(1, guidelines="again")
    assert taken.value.status == 409 and "labelling round 1 exists already" in taken.value.detail
    for call in (lambda: staff_api.labelling_round(9), lambda: staff_api.change_round(9, gold_rate=0.2)):
        with pytest.raises(APIError) as missing:
            call()
        assert missing.value.status == 404 and "no labelling round 9" in missing.value.detail
    for call in (annotator_api.labelling_rounds, lambda: annotator_api.create_round(2),
                 lambda: annotator_api.change_round(1, guidelines="mine")):
        with pytest.raises(APIError) as refused:
            call()
        assert refused.value.status == 403
    assert list(LabellingRound.objects.values_list("number", "guidelines")) == [(1, "")]


def test_a_patch_writes_only_what_it_sends(staff_api, monkeypatch):
    """A PATCH filled the fields it left out from the round as it read it, then wrote them all: one that sent only
    guidelines, read before another request raised the overlap, put the old overlap back and stepped the pairs down."""
    from annotate import rounds as labelling_rounds

    staff_api.create_round(3, labels_per_pair=2)
    staff_api.push_pairs([{"prompt": "Q?", "response_a": "a", "response_b": "b"}], round=3)
    real = labelling_rounds.save_round

    def slow_reader(round_, fields):  # another request raises the overlap after this one read the round
        LabellingRound.objects.filter(number=3).update(labels_per_pair=3)
        Pair.objects.filter(round__number=3).update(labels_needed=3)
        return real(round_, fields)

    monkeypatch.setattr(labelling_rounds, "save_round", slow_reader)
    changed = staff_api.change_round(3, guidelines="Be kind.")
    assert (changed["labels_per_pair"], changed["guidelines"]) == (3, "Be kind.")
    assert Pair.objects.get(round__number=3).labels_needed == 3


def test_a_round_without_a_number_after_the_last_number_there_is_says_so(staff_api):
    """It answered "number: Ensure this value is less than or equal to ..." of a number nobody sent."""
    from annotate.models import MAX_NUMBER

    LabellingRound.objects.create(number=MAX_NUMBER)
    with pytest.raises(APIError) as refused:
        staff_api.create_round()
    assert refused.value.status == 409 and "no round number is left" in refused.value.detail
    assert staff_api.create_round(7)["number"] == 7
