"""Labelling rounds set up from the app's own pages: guidelines reach the label page, a change of overlap reaches the
round's pairs, gold pairs are chosen with their right answer; bad input is refused naming the field and stores
nothing; annotators are refused."""
from __future__ import annotations

import html
import re

import pytest
from django.utils import timezone

from annotate.models import LabellingRound, Pair
from annotate.services import label_pair, next_pair_for, record_label

from .factories import make_pair, make_round, make_staff, make_user

pytestmark = pytest.mark.django_db

SETTINGS = {"number": "7", "guidelines": "Prefer **short**, correct answers.", "labels_per_pair": "1",
            "gold_rate": "0.1", "queue_order": "random", "route_judge": "", "route_threshold": "0.8",
            "audit_share": "0.1", "close_width": ""}


@pytest.fixture
def boss(client):
    user = make_staff("boss", "annotate.add_labellinground", "annotate.change_labellinground", "annotate.change_pair",
                      "annotate.add_label")
    client.force_login(user)
    return user


def test_a_round_made_on_its_page_shows_its_guidelines_above_its_pairs(client, boss):
    response = client.post("/annotate/rounds/", SETTINGS)
    assert response.status_code == 302 and response["Location"] == "/annotate/rounds/7/"
    round_ = LabellingRound.objects.get(number=7)
    assert (round_.guidelines, round_.labels_per_pair, round_.gold_rate) == ("Prefer **short**, correct answers.", 1, 0.1)
    listing = client.get("/annotate/rounds/").content.decode()
    row = re.search(r'<tr data-round="7">(.*?)</tr>', listing, re.S).group(1)
    assert "Prefer **short**, correct answers." in row and '<td class="num overlap">1</td>' in row

    make_pair(round=round_)
    anna = make_user("anna", password="pw-anna-123")
    client.force_login(anna)
    page = client.get("/annotate/").content.decode()
    assert "Guidelines for round 7" in page and "<strong>short</strong>" in page


def test_more_overlap_brings_finished_pairs_back_for_more_labels(client, boss):
    round_ = make_round(number=3)
    done, waiting = make_pair(round=round_), make_pair(round=round_)
    label_pair(done.pk, make_user("anna"), "left")
    gold = make_pair(round=round_, is_gold=True, gold_choice="a")
    response = client.post("/annotate/rounds/3/", dict(SETTINGS, number="3", labels_per_pair="2"))
    assert response.status_code == 302
    follow = client.get(response["Location"]).content.decode()
    assert "Labelling round 3 saved; 2 pairs people label now need 1 label more." in follow
    assert {p.pk: p.labels_needed for p in Pair.objects.all()} == {done.pk: 2, waiting.pk: 2, gold.pk: 1}
    bob = make_user("bob")
    first = next_pair_for(bob)
    record_label(first, bob, "left")
    served = {first.pair_id, next_pair_for(bob).pair_id}
    assert done.pk in served, "the pair anna finished comes back for a second person"


def test_an_overlap_change_respects_routing_and_imported_labels(client, boss, tmp_path):
    from django.core.management import call_command

    from annotate.models import Route

    round_ = make_round(number=8, labels_per_pair=2)
    judge_decided = make_pair(round=round_, route=Route.JUDGE, labels_needed=1, labels_done=1)
    to_people = make_pair(round=round_, route=Route.PEOPLE, labels_needed=3, labels_done=1)  # judge's + 2 people
    held_back = make_pair(round=round_, route=Route.DUPLICATE, labels_needed=0)
    plain = make_pair(round=round_, labels_needed=2)
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}\n')
    call_command("import_preferences", str(path), round=8)
    imported = Pair.objects.get(prompt__text="Hi?")

    client.post("/annotate/rounds/8/", dict(SETTINGS, number="8", labels_per_pair="3"))
    needed = dict(Pair.objects.values_list("pk", "labels_needed"))
    assert needed[plain.pk] == 3 and needed[to_people.pk] == 4, "one more person each, the judge's label still counted"
    assert (needed[judge_decided.pk], needed[held_back.pk], needed[imported.pk]) == (1, 0, 1)

    client.post("/annotate/rounds/8/", dict(SETTINGS, number="8", labels_per_pair="1"))
    needed = dict(Pair.objects.values_list("pk", "labels_needed"))
    assert needed[plain.pk] == 1 and needed[to_people.pk] == 2, "never below the judge's label plus one person"
    assert (needed[judge_decided.pk], needed[imported.pk]) == (1, 1)


def test_a_refused_change_shows_the_round_as_stored(client, boss):
    make_round(number=9, gold_rate=0.2)
    response = client.post("/annotate/rounds/9/", dict(SETTINGS, number="9", gold_rate="1.5"))
    assert response.status_code == 400
    assert "at the gold rate (0.20)" in response.content.decode()
    assert LabellingRound.objects.get(number=9).gold_rate == 0.2


def test_a_closed_round_keeps_its_pairs_when_its_overlap_changes(client, boss):
    round_ = make_round(number=4, closed_at=timezone.now(), closed_reason="enough labels")
    pair = make_pair(round=round_, labels_needed=0)
    client.post("/annotate/rounds/4/", dict(SETTINGS, number="4", labels_per_pair="3"))
    assert LabellingRound.objects.get(number=4).labels_per_pair == 3
    assert Pair.objects.get(pk=pair.pk).labels_needed == 0


@pytest.mark.parametrize(("field", "value", "message"), [
    ("gold_rate", "1.5", "less than or equal to 1"),
    ("gold_rate", "nan", "Enter a number"),
    ("labels_per_pair", "0", "greater than or equal to 1"),
    ("labels_per_pair", "99999999999", "less than or equal to 20"),
    ("number", "-1", "greater than or equal to 0"),
    ("route_judge", "os:system", "judge 'os:system' is not allowed"),
    # a judge's arguments, checked without building it (which may load a model): routing failed on them later
    ("route_judge", "judges.rules:PreferShorter?tie_words=abc", "tie_words must be a whole number (got 'abc')"),
    ("route_judge", "judges.rules:PreferShorter?tie_word=3", "got an unexpected keyword argument 'tie_word'"),
    ("close_width", "0", "expected a width above 0"),
    ("queue_order", "fastest", "Select a valid choice"),
    ("guidelines", "x" * 20_001, "expected up to 20,000 characters"),
])
def test_bad_settings_are_refused_naming_the_field_and_nothing_is_stored(client, boss, field, value, message):
    response = client.post("/annotate/rounds/", dict(SETTINGS, **{field: value}))
    assert response.status_code == 400
    page = html.unescape(response.content.decode())
    assert message in page and f'name="{field}"' in page
    assert not LabellingRound.objects.exists()


def test_a_rounds_number_is_unique_and_fixed_once_made(client, boss):
    make_round(number=7)
    response = client.post("/annotate/rounds/", SETTINGS)
    assert response.status_code == 400 and "already exists" in response.content.decode()
    client.post("/annotate/rounds/7/", dict(SETTINGS, number="8"))
    assert list(LabellingRound.objects.values_list("number", flat=True)) == [7], "the number of a made round stays"


def test_gold_pairs_are_chosen_with_their_right_answer_and_can_be_made_regular(client, boss):
    round_, other = make_round(number=5), make_round(number=6)
    pair, elsewhere, loose = make_pair(round=round_), make_pair(round=other), make_pair()
    response = client.post("/annotate/rounds/5/gold/", {"pair": pair.pk, "answer": "b"})
    assert response.status_code == 302
    assert Pair.objects.filter(pk=pair.pk, is_gold=True, gold_choice="b").exists()
    client.post("/annotate/rounds/5/gold/", {"pair": loose.pk, "answer": "a"})
    assert Pair.objects.get(pk=loose.pk).round == round_, "a pair of no round joins the round it is gold in"
    page = client.get("/annotate/rounds/5/").content.decode()
    assert re.search(rf'<tr data-pair="{pair.pk}">.*?<td class="right-answer">b</td>', page, re.S)

    refused = client.post("/annotate/rounds/5/gold/", {"pair": elsewhere.pk, "answer": "a"})
    assert refused.status_code == 400
    assert f"pair {elsewhere.pk} belongs to round 6, not round 5" in refused.content.decode()
    missing = client.post("/annotate/rounds/5/gold/", {"pair": 10**12, "answer": "a"})
    assert missing.status_code == 400 and f"pair {10**12}: no such pair" in missing.content.decode()
    junk = client.post("/annotate/rounds/5/gold/", {"pair": "x", "answer": "c"})
    assert junk.status_code == 400 and not Pair.objects.filter(pk=elsewhere.pk, is_gold=True).exists()

    assert client.post("/annotate/rounds/5/gold/unset/", {"pair": pair.pk}).status_code == 302
    assert Pair.objects.filter(pk=pair.pk, is_gold=False, gold_choice="").exists()
    again = client.post("/annotate/rounds/5/gold/unset/", {"pair": pair.pk})
    assert again.status_code == 400 and f"Pair {pair.pk}: not a gold pair of round 5." in again.content.decode()
    junk = client.post("/annotate/rounds/5/gold/unset/", {"pair": "x"})
    assert junk.status_code == 400 and "Pair: Enter a whole number." in junk.content.decode()


def test_annotators_are_refused_and_unknown_rounds_are_404(client):
    make_round(number=1)
    client.force_login(make_user("anna"))
    for url in ("/annotate/rounds/", "/annotate/rounds/1/"):
        assert client.get(url).status_code == 403
    assert client.post("/annotate/rounds/", SETTINGS).status_code == 403
    assert client.post("/annotate/rounds/1/gold/", {"pair": 1, "answer": "a"}).status_code == 403
    assert client.post("/annotate/rounds/1/gold/unset/", {"pair": 1}).status_code == 403
    assert not LabellingRound.objects.filter(number=7).exists()
    client.force_login(make_user("boss", is_staff=True))
    assert client.get("/annotate/rounds/999/").status_code == 404


def test_two_saves_of_one_round_step_from_what_is_stored_and_a_close_meanwhile_stays():
    """Each save read the round, then wrote every field: two overlap changes at once both stepped from the value
    they had read (1 -> 2 and 1 -> 3 left pairs needing 4 in a round saying 3), and a round closed between the read
    and the write was opened again."""
    from annotate.rounds import save_round

    round_ = make_round(6)
    pair = make_pair(round=round_)
    first, second = LabellingRound.objects.get(pk=round_.pk), LabellingRound.objects.get(pk=round_.pk)
    first.labels_per_pair, second.labels_per_pair = 2, 3
    assert save_round(first).step == 1
    LabellingRound.objects.filter(pk=round_.pk).update(closed_at=timezone.now(), closed_reason="narrow enough")
    second.guidelines = "New guidelines."
    assert save_round(second).step == 1  # from the 2 stored, not the 1 it read
    stored = LabellingRound.objects.get(pk=round_.pk)
    assert (stored.labels_per_pair, stored.guidelines, stored.closed_reason) == (3, "New guidelines.", "narrow enough")
    assert Pair.objects.get(pk=pair.pk).labels_needed == 2  # closing froze the pairs after the first step
