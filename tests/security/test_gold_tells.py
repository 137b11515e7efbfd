"""An outside probe's attack on gold pairs, the annotators' quality check: tell a gold pair apart, then answer it
with care. The skipped list left gold pairs out (so a skipped pair missing from it was gold, before it was answered)
and undo kept a gold pair's label alone, which told it after it was answered."""
import re

import pytest

from annotate.models import Label
from annotate.services import label_pair, lease_pair, return_to_skipped, skip, skipped_pairs
from tests.annotate.factories import make_pair

pytestmark = pytest.mark.django_db


def _gold():
    return make_pair(is_gold=True, gold_choice="a", labels_needed=1)


def test_a_skipped_gold_pair_is_listed_like_any_other_and_can_be_returned_to(annotator):
    gold, regular = _gold(), make_pair()
    for pair in (gold, regular):
        lease_pair(pair.pk, annotator)
        skip(annotator, pair)
    assert {a.pair_id for a in skipped_pairs(annotator)} == {gold.pk, regular.pk}
    assert return_to_skipped(annotator, gold).pair_id == gold.pk


def test_undo_tells_nothing_a_gold_pairs_label_comes_back_like_any_other(annotator, client):
    """The probe's attack: answer, press "u" at once, read the answer. Gold labels were kept ("nothing to undo"), a
    regular one taken back, so the reply told a gold pair after it was answered: what gold pairs look like, to
    answer those with care and the rest carelessly. Both now come back alike, to the page and to the API."""
    from django.urls import reverse

    from annotate.services import progress_for, record_label

    client.force_login(annotator)
    for _ in range(3):
        make_pair()  # regular pairs that stay in the queue: "remaining" never reaches 0, where it stops moving
    replies = {}
    for kind, pair in (("gold", _gold()), ("regular", make_pair())):
        label_pair(pair.pk, annotator, "right")
        before = progress_for(annotator)
        page = client.post(reverse("annotate:undo"), HTTP_HX_REQUEST="true")
        assert page.status_code == 200 and "Nothing to undo" not in page.content.decode(), kind
        assert not Label.objects.filter(pair=pair).exists(), kind  # taken back, the pair on screen again
        record_label(pair.pk, annotator, "left")  # answered again, then taken back through the API
        api = client.post("/api/v1/label/undo", content_type="application/json")
        assert api.status_code == 200, kind
        replies[kind] = (before.remaining - progress_for(annotator).remaining, sorted(api.json()))
        record_label(pair.pk, annotator, "left")  # the lease answered: the next pair can be served
    assert replies["gold"] == replies["regular"]


def test_what_stays_on_the_skipped_list_tells_nothing(annotator, django_user_model):
    """A list that dropped pairs others had filled kept gold pairs alone: what stayed was gold. Every skipped pair
    of an open round stays; a closed round's all go."""
    from django.utils import timezone

    from annotate.models import LabellingRound
    from annotate.services import LabelError
    from tests.annotate.factories import make_round

    round_ = make_round(number=7)
    gold, regular = make_pair(is_gold=True, gold_choice="a", round=round_), make_pair(round=round_)
    for pair in (gold, regular):
        lease_pair(pair.pk, annotator)
        skip(annotator, pair)
    label_pair(regular.pk, django_user_model.objects.create_user("other"), "left")  # filled by someone else
    assert {a.pair_id for a in skipped_pairs(annotator)} == {gold.pk, regular.pk}
    assert return_to_skipped(annotator, regular).pair_id == regular.pk  # its label is one more
    LabellingRound.objects.filter(pk=round_.pk).update(closed_at=timezone.now())
    assert skipped_pairs(annotator) == []
    with pytest.raises(LabelError, match="closed"):
        return_to_skipped(annotator, gold)


def test_skipping_tells_nothing_through_the_counters(annotator):
    """The probe's attack: note "remaining", skip the pair on screen, read "remaining" again: a regular pair's skip
    lowered it by one and a gold pair's left it, so the annotator knew the gold pair before answering it, returned
    to it from the skipped list and answered it with care (and the rest carelessly). A skip changes no counter now."""
    from annotate.services import progress_for

    pairs = {"gold": _gold(), "regular": make_pair()}
    make_pair()  # one more regular pair stays in the queue throughout
    for kind, pair in pairs.items():
        lease_pair(pair.pk, annotator)
        before = progress_for(annotator)
        skip(annotator, pair)  # what the page and POST /label/skip then show
        assert progress_for(annotator) == before, kind
        return_to_skipped(annotator, pair)
        assert progress_for(annotator) == before, kind
        skip(annotator, pair)
    assert progress_for(annotator).remaining == 2  # both regular pairs: the skipped one is there to return to


class _Alternating:
    """The queue's coin: a regular pair, then a gold one, and so on (each lease draws for gold, then for its sides)."""

    draws = iter([])

    def random(self):
        return next(self.draws)


def test_what_the_label_page_shows_of_a_pair_tells_no_gold_one(annotator, monkeypatch):
    """The probe's attack: regular pairs are served oldest first and gold ones drawn at random, and the page named the
    pair on screen by its id (data-pair, the hidden `pair` field), so "an id below the last regular one seen" marked a
    gold pair before it was answered; and "remaining" fell by one after a regular label and stayed after a gold one.
    The page names the lease now (numbered as pairs are served, gold or not), and every label moves "remaining" alike."""
    from django.test import Client
    from django.urls import reverse

    from annotate import services
    from annotate.models import Assignment, Pair
    from tests.annotate.factories import make_round

    round_ = make_round(gold_rate=0.5)
    golds = [make_pair(round=round_, is_gold=True, gold_choice="a") for _ in range(3)]  # older than the regular ones
    for _ in range(7):
        make_pair(round=round_)
    monkeypatch.setattr(_Alternating, "draws", iter([0.9, 0.9, 0.1, 0.9] * 20))
    monkeypatch.setattr(services, "random", type("Coin", (), {"Random": _Alternating}))
    client = Client()
    client.force_login(annotator)
    page = client.get(reverse("annotate:label")).content.decode()
    handles, remaining = [], [int(re.search(r'data-progress="remaining">(\d+)<', page)[1])]
    while 'data-lease="' in page:
        assert "data-pair" not in page and 'name="pair"' not in page
        handles.append(int(re.search(r'data-lease="(\d+)"', page)[1]))
        page = client.post(reverse("annotate:submit"), {"lease": handles[-1], "side": "left"},
                           HTTP_HX_REQUEST="true").content.decode()
        remaining.append(int(re.search(r'data-progress="remaining">(\d+)<', page)[1]))

    served = [Assignment.objects.get(pk=h).pair_id for h in handles]
    is_gold = [Pair.objects.get(pk=p).is_gold for p in served]
    assert is_gold == [False, True] * 3 + [False] * 4 and {p.pk for p in golds} <= set(served)

    def flagged(ids):  # the attack: an id below the last regular one seen is a gold pair
        return [i for i, x in enumerate(ids) if any(ids[j] > x for j in range(i))]

    assert flagged(served) == [1, 3, 5]  # what pair ids told, had the page shown them
    assert flagged(handles) == [] and handles == sorted(handles)  # what it shows tells nothing
    # each label, gold or regular, takes one off; so it reaches 0 as many labels early as gold pairs were answered
    assert remaining == [7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0]


def test_a_person_cannot_probe_pair_ids_through_skip_or_submit(annotator, client):
    """The reviewer's attack on the lease fix: with the older {"pair"} still taken from anyone, a skip by pair id
    succeeded for the pair on one's screen (or skipped already) and failed for every other id, so trying ids found the
    pair on screen, whose place in the serving order told a gold one; a submit by id told the ids one had labelled.
    A person's answer to a pair id is now the same refusal whatever the id."""
    from django.urls import reverse

    from annotate.models import Assignment
    from tests.annotate.factories import shown_lease, shown_pair

    pairs = [make_pair() for _ in range(3)]
    client.force_login(annotator)
    page = client.get(reverse("annotate:label")).content.decode()
    on_screen, lease = shown_pair(page), shown_lease(page)
    answers = set()
    for pair in pairs:
        for view, data in (("annotate:skip", {"pair": pair.pk}),
                           ("annotate:submit", {"pair": pair.pk, "side": "left"})):
            body = client.post(reverse(view), data, HTTP_HX_REQUEST="true").content.decode()
            answers.add(re.search(r'<p class="notice"[^>]*>(.*?)</p>', body, re.S)[1].strip())
    assert len(answers) == 1 and "name the pair by its lease" in answers.pop().lower()
    assert not Label.objects.exists()
    assert Assignment.objects.get(pk=lease).state == Assignment.LEASED and on_screen in {p.pk for p in pairs}
    # the API alike: 400, the same for every id
    from api.tokens import create_token

    auth = {"HTTP_AUTHORIZATION": f"Bearer {create_token(annotator, 'probe')[1]}"}
    for pair in pairs:
        for path, data in (("skip", {"pair": pair.pk}), ("submit", {"pair": pair.pk, "side": "left"})):
            response = client.post(f"/api/v1/label/{path}", data, content_type="application/json", **auth)
            assert response.status_code == 400 and "name the pair by its lease" in response.json()["detail"]
    assert not Label.objects.exists() and Assignment.objects.get(pk=lease).state == Assignment.LEASED


def test_returning_to_skipped_pairs_tells_no_gold_one_when_the_round_gets_a_routing_judge(annotator, client):
    """The probe's attack: skip pairs, wait for staff to give the round a routing judge, then press "Label it now" on
    each. A regular pair was refused ("waits for round N's judge") and a gold one (never routed) served: which pairs
    were gold, before they were answered. Both are served now: routing sends pairs people were given to people."""
    from django.urls import reverse

    from annotate.models import Assignment, Label
    from judges import BUILT_IN_JUDGES
    from tests.annotate.factories import make_round

    round_ = make_round()
    gold, regular = make_pair(round=round_, is_gold=True, gold_choice="a"), make_pair(round=round_)
    for pair in (gold, regular):
        lease_pair(pair.pk, annotator)
        skip(annotator, pair)
    round_.route_judge = BUILT_IN_JUDGES[0]
    round_.save(update_fields=["route_judge"])
    client.force_login(annotator)
    replies = {}
    for kind, pair in (("gold", gold), ("regular", regular)):
        lease = Assignment.objects.get(pair=pair, annotator=annotator).pk
        page = client.post(reverse("annotate:return_to_skipped"), {"lease": lease}, follow=True)
        replies[kind] = (page.redirect_chain[-1][0], [str(m) for m in page.context["messages"]])
        assert client.post(reverse("annotate:submit"), {"lease": lease, "side": "left"}).status_code in (200, 302)
    assert replies["gold"][0] == replies["regular"][0] == reverse("annotate:label")
    assert not [m for kind in replies for m in replies[kind][1] if "return" in m or "judge" in m]
    assert Label.objects.filter(annotator=annotator).count() == 2
