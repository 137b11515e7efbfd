"""Labelling through the API for a custom front end: the same lease rules as the label page (one person per pair at
a time, only one's own leased pair can be labelled), undo and skip, and labels that export like the page's."""
from __future__ import annotations

import pytest

from annotate.judging import judge_account
from annotate.models import Assignment, Label
from prefloop_client import APIError, Client
from tests.annotate.factories import make_pair, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def _pair(lease: dict) -> int:
    """The pair of a lease the API gave (it names the lease only, never the pair: see test_gold_tells)."""
    return Assignment.objects.get(pk=lease["lease"]).pair_id


def test_two_front_ends_never_get_the_same_pair_and_label_only_their_own(live_server, annotator_api, token_for):
    first, second = make_pair(text_a="alpha", text_b="beta"), make_pair()
    other = Client(live_server.url, token_for(make_user("other")))
    mine, theirs = annotator_api.next_pair(), other.next_pair()
    assert "pair" not in mine and {_pair(mine), _pair(theirs)} == {first.pk, second.pk}
    assert annotator_api.next_pair()["lease"] == mine["lease"]  # asking again shows the same lease
    with pytest.raises(APIError) as refused:
        annotator_api.label(theirs["lease"], "left")
    assert refused.value.status == 409 and f"lease {theirs['lease']} is not yours" in refused.value.detail
    with pytest.raises(APIError) as refused:  # nor by its pair's id: only staff and automatic labellers name pairs so
        annotator_api.post("/label/submit", {"pair": _pair(theirs), "side": "left"})
    assert refused.value.status == 400 and "name the pair by its lease" in refused.value.detail
    label = annotator_api.label(mine["lease"], "left", strength="clear")
    assert label["lease"] == mine["lease"] and Label.objects.get(pair_id=_pair(mine)).choice == label["choice"]
    shown_left = mine["left"]
    pair = first if _pair(mine) == first.pk else second
    assert label["choice"] == ("a" if shown_left == pair.response_a.text else "b")
    assert annotator_api.next_pair() is None  # the other pair is leased to the other person


def test_undo_gives_the_pair_back_and_skip_passes_it_on(annotator_api):
    pair = make_pair()
    lease = annotator_api.next_pair()
    annotator_api.label(lease["lease"], "tie")
    again = annotator_api.undo()
    assert again["lease"] == lease["lease"] and _pair(again) == pair.pk and not Label.objects.exists()
    with pytest.raises(APIError) as nothing:
        annotator_api.undo()
    assert nothing.value.status == 409
    assert annotator_api.skip(lease["lease"])["remaining"] == 1  # on the skipped list, to return to
    assert annotator_api.next_pair() is None
    with pytest.raises(APIError) as nothing:  # a skipped lease holds no label and is on no screen (docs/api.md)
        annotator_api.post("/label/undo", {"lease": lease["lease"]})
    assert nothing.value.status == 409
    with pytest.raises(APIError) as refused:
        annotator_api.label(lease["lease"], "left")
    assert refused.value.status == 409 and "skipped" in refused.value.detail
    # a lease that was never the caller's is said to be so, not "for a minute" (found by an outside review)
    for unknown in (lease["lease"] + 1000,):
        with pytest.raises(APIError) as nothing:
            annotator_api.undo(unknown)
        assert nothing.value.status == 409 and f"lease {unknown} is not one of yours" in nothing.value.detail


def test_an_undo_sent_again_does_not_undo_the_label_before(annotator_api):
    """A retry of an undo whose reply was lost took back the label before it too, and with it the lease the first
    undo had given back. Naming the lease, the retry answers that lease again and undoes nothing more."""
    make_pair(), make_pair()
    first = annotator_api.next_pair()["lease"]
    annotator_api.label(first, "left")
    second = annotator_api.next_pair()["lease"]
    annotator_api.label(second, "right")
    body = {"lease": second}
    assert annotator_api.post("/label/undo", body)["lease"] == second
    assert annotator_api.post("/label/undo", body)["lease"] == second  # the retry
    assert list(Label.objects.values_list("pair_id", flat=True)) == [Assignment.objects.get(pk=first).pair_id]
    assert Assignment.objects.get(pk=second).state == Assignment.LEASED
    with pytest.raises(APIError) as refused:  # not the caller's lease: nothing undone
        annotator_api.post("/label/undo", {"lease": first + second + 1000})
    assert refused.value.status == 409 and Label.objects.count() == 1
    annotator_api.label(second, "tie")  # the lease given back takes its correction
    assert annotator_api.post("/label/undo", {"lease": first})["lease"] == first  # an earlier one, named
    assert list(Label.objects.values_list("choice", flat=True)) == ["tie"]


def test_a_repeated_label_returns_the_stored_one_and_another_answer_is_a_409(annotator_api):
    make_pair()
    lease = annotator_api.next_pair()["lease"]
    first = annotator_api.label(lease, "left", strength="slight")
    assert annotator_api.label(lease, "left", strength="slight") == first  # a retried request
    with pytest.raises(APIError) as refused:
        annotator_api.label(lease, "right")
    assert refused.value.status == 409 and "already (left, slightly better)" in refused.value.detail
    assert Label.objects.get().side == "left"


def test_a_script_leases_a_chosen_pair_under_the_same_rules(live_server, staff_api, token_for):
    pair = make_pair()
    assert staff_api.post("/label/lease", {"pair": pair.pk})["pair"] == pair.pk
    judge = Client(live_server.url, token_for(judge_account("judges.rules:length_target")))
    with pytest.raises(APIError) as refused:
        judge.post("/label/lease", {"pair": pair.pk})
    assert refused.value.status == 409 and "already has all the labels" in refused.value.detail
    assert judge.post("/label/lease", {"pair": make_pair().pk})["pair"]  # an automatic labeller may choose
    with pytest.raises(APIError) as junk:
        staff_api.post("/label/submit", {"pair": pair.pk, "side": "up"})
    assert junk.value.status == 400 and junk.value.errors[0]["field"] == "side"


def test_a_person_cannot_choose_the_pair_they_label(annotator_api, staff_api):
    """The attack: an annotator's script leases pairs by id, so it never meets the gold pairs the queue mixes in,
    always sees the first answer on the left, and labels the prompts it picks into the training data."""
    from annotate.models import Assignment, LabellingRound

    round_ = LabellingRound.objects.create(number=1, gold_rate=1.0)
    gold, plain = make_pair(round=round_, is_gold=True, gold_choice="a"), make_pair(round=round_)
    with pytest.raises(APIError) as refused:
        annotator_api.lease(plain.pk)
    assert refused.value.status == 403 and "POST /label/next" in refused.value.detail
    assert not Assignment.objects.exists()
    assert _pair(annotator_api.next_pair()) == gold.pk  # the queue serves the gold pair first, as its rate says
    assert staff_api.lease(plain.pk)["pair"] == plain.pk  # staff scripts may choose


def test_a_chosen_lease_cannot_reach_what_the_queue_holds_back(staff_api):
    """The attack: a script leases by id the pairs the label page never serves (a closed round's, a near-duplicate,
    one the judge decides or is still to decide) and labels them into the training data."""
    from django.utils import timezone

    from annotate.models import Assignment, LabellingRound, Route

    closed = LabellingRound.objects.create(number=1, closed_at=timezone.now())
    routed = LabellingRound.objects.create(number=2, route_judge="judges.rules:length_target")
    held_back = {
        make_pair(round=closed).pk: "which is closed",
        make_pair(route=Route.DUPLICATE).pk: "near-duplicate",
        make_pair(route=Route.JUDGE).pk: "decided by the automatic judge",
        make_pair(round=routed).pk: "waits for round 2's judge",
    }
    for pair, why in held_back.items():
        with pytest.raises(APIError) as refused:
            staff_api.lease(pair)
        assert refused.value.status == 409 and why in refused.value.detail
        with pytest.raises(APIError):
            staff_api.post("/label/submit", {"pair": pair, "side": "left"})
    assert not Assignment.objects.exists() and not Label.objects.exists()
    served = make_pair(round=routed, route=Route.PEOPLE)  # what the judge sent to people may be chosen
    lease = staff_api.lease(served.pk)
    assert lease["pair"] == served.pk
    assert staff_api.label(lease["lease"], "left")["choice"] == "a"


def test_a_comment_over_the_label_page_limit_is_refused_not_cut(annotator_api):
    make_pair()
    lease = annotator_api.next_pair()["lease"]
    with pytest.raises(APIError) as refused:
        annotator_api.label(lease, "left", comment="x" * 5001)
    assert refused.value.status in (400, 422) and any(e["field"].endswith("comment") for e in refused.value.errors)
    assert not Label.objects.exists()
    assert annotator_api.label(lease, "left", comment="y" * 5000)["lease"] == lease
    assert len(Label.objects.get().comment) == 5000


def test_true_is_not_an_id(staff_api):
    """JSON true was taken as pair 1 (by staff, who may choose a pair: an annotator is refused before the body)."""
    make_pair()
    with pytest.raises(APIError) as refused:
        staff_api.post("/label/lease", {"pair": True})
    assert refused.value.status in (400, 422) and "true or false" in str(refused.value.errors)


def test_pairs_the_queue_never_serves_are_not_counted_as_remaining(annotator_api, staff_api):
    """A pair held back as near-duplicate answers (or the judge's) was counted in "remaining" and in its round's
    open pairs: a front end looping while remaining > 0 asked for a pair for ever and got none."""
    from annotate.models import LabellingRound, Route
    from annotate.services import open_pair_count

    round_ = LabellingRound.objects.create(number=4)
    make_pair(round=round_, route=Route.DUPLICATE)
    make_pair(round=round_, route=Route.JUDGE)
    assert annotator_api.next_pair() is None
    assert annotator_api.get("/label/progress")["remaining"] == 0
    assert open_pair_count() == 0
    row = next(r for r in staff_api.labelling_rounds() if r["number"] == 4)
    assert row["open_pairs"] == 0 and row["pairs"] == 2
    make_pair(round=round_)
    assert annotator_api.get("/label/progress")["remaining"] == 1 and open_pair_count() == 1
    # a closed round's pairs, and a routing round's the judge has not sent to people, are not given either
    from django.utils import timezone

    make_pair(round=LabellingRound.objects.create(number=5, closed_at=timezone.now()))
    routed = LabellingRound.objects.create(number=6, route_judge="judges.rules:length_target")
    make_pair(round=routed)
    make_pair(round=routed, route=Route.PEOPLE)
    assert annotator_api.get("/label/progress")["remaining"] == 2 and open_pair_count() == 2


class _Draws:
    """An rng whose draws are given: for next_pair_for, the gold coin (below the rate: gold), then the sides coin."""

    def __init__(self, *draws: float):
        self.draws = iter(draws)

    def random(self) -> float:
        return next(self.draws)


def test_a_gold_pair_of_no_round_is_shown_as_the_round_it_was_served_in(annotator_api, annotator, client):
    """The queue mixes gold pairs of no round into every round. Served like that, the label page showed it without the
    round's guidelines and the API with "round": null, where every regular pair of the round had both: an annotator
    told the gold pair before answering it."""
    from annotate import services
    from tests.annotate.factories import make_round

    round_ = make_round(number=3, gold_rate=0.5, guidelines="Prefer the honest answer. GUIDE-MARK")
    make_pair(round=round_)
    gold = make_pair(is_gold=True, gold_choice="a")  # made gold in the admin's Pair page, in no round
    lease = services.next_pair_for(annotator, rng=_Draws(0.1, 0.9))
    assert lease.pair_id == gold.pk
    served = annotator_api.next_pair()
    assert served["lease"] == lease.pk and served["round"] == 3 and "GUIDE-MARK" in served["guidelines"]
    client.force_login(annotator)
    assert "Guidelines for round 3" in client.get("/annotate/").content.decode()
    annotator_api.label(served["lease"], "left")
    regular = annotator_api.next_pair()  # a regular pair of the round: the same round and guidelines
    assert (regular["round"], regular["guidelines"]) == (served["round"], served["guidelines"])
