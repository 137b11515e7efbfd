"""The admin applies the checks the pages and the API apply: its round form saved an overlap of 0 or 2**31, a gold
rate of 5, a judge not allowed (and the round could then not be edited on its page or by the API), its pair form a
pair of one answer twice or of another prompt's answer, and its label form a probability of 7 and -5 seconds."""
from __future__ import annotations

import html

import pytest

from annotate.models import Label, LabellingRound, Pair
from generation.models import Response

from .factories import make_pair, make_user

pytestmark = pytest.mark.django_db

ROUND = {"number": "50", "guidelines": "", "labels_per_pair": "1", "gold_rate": "0", "queue_order": "random",
         "route_judge": "", "route_threshold": "0.8", "audit_share": "0.1", "close_width": ""}


@pytest.mark.parametrize("field, value, message", [
    ("labels_per_pair", "0", "greater than or equal to 1"),
    ("labels_per_pair", "2147483647", "less than or equal to 20"),
    ("gold_rate", "5", "less than or equal to 1"),
    ("route_judge", "os:system", "judge 'os:system' is not allowed"),
    ("route_threshold", "-3", "greater than or equal to 0"),
    ("audit_share", "7", "less than or equal to 1"),
    ("close_width", "-1", "greater than or equal to 0"),
])
def test_a_round_added_in_the_admin_gets_the_rounds_pages_checks(client, staff, field, value, message):
    client.force_login(staff)
    response = client.post("/admin/annotate/labellinground/add/", {**ROUND, field: value})
    assert response.status_code == 200 and message in html.unescape(response.content.decode())
    assert not LabellingRound.objects.exists()


def test_a_new_overlap_set_in_the_admin_reaches_the_rounds_pairs_as_on_its_page(client, staff):
    round_ = LabellingRound.objects.create(number=3, labels_per_pair=1)
    pair = make_pair(round=round_, labels_needed=1)
    client.force_login(staff)
    response = client.post(f"/admin/annotate/labellinground/{round_.pk}/change/", {**ROUND, "labels_per_pair": "3"})
    assert response.status_code == 302
    assert LabellingRound.objects.get().labels_per_pair == 3 and Pair.objects.get(pk=pair.pk).labels_needed == 3


def test_the_admin_refuses_a_pair_of_one_answer_twice_or_of_another_prompts_answer(client, staff):
    pair, other = make_pair(), make_pair()
    client.force_login(staff)
    form = {"prompt": pair.prompt_id, "response_a": pair.response_a_id, "labels_needed": "1", "labels_done": "0",
            "round": "", "gold_choice": "", "route": "", "margin": "", "margin_version": "", "job": ""}
    for response_b, message in [(pair.response_a_id, "a pair needs two different answers"),
                                (other.response_b_id, f"this answer is to prompt {other.prompt_id}")]:
        # (added: a stored pair keeps its prompt and answers, test_admin_records)
        response = client.post("/admin/annotate/pair/add/", {**form, "response_b": response_b})
        assert response.status_code == 200 and message in html.unescape(response.content.decode())
    assert Pair.objects.count() == 2 and Response.objects.count() == 4


def test_the_admin_adds_no_label_so_none_escapes_the_bounds_or_the_pairs_count(client, staff):
    """A label added in the admin (a probability of 7, a time of -5 s) escaped the labelling pages' checks, and left
    the pair's labels_done behind it: labels are made on the labelling pages and by the API alone."""
    pair, person = make_pair(), make_user("labeller")
    client.force_login(staff)
    form = {"pair": pair.pk, "annotator": person.pk, "choice": "a", "side": "left", "left_is_a": "on",
            "strength": "", "comment": "", "preference_prob": "7", "seconds": "-5"}
    assert client.post("/admin/annotate/label/add/", form).status_code == 403
    assert not Label.objects.exists()
