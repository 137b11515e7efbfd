"""The Pair admin saves only what the rounds page would: a gold answer, a or b, exactly when the pair is gold; and it
never sets a pair's route (routing and the hold-back of near-duplicates do, with the labels they weigh)."""
from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from annotate.models import Pair, Route

from .factories import make_pair, make_round

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("is_gold, answer, message", [
    (True, "tie", "a gold pair's answer is a or b (got 'tie')"),
    (True, "both_bad", "a gold pair's answer is a or b (got 'both_bad')"),
    (True, "", "a gold pair's answer is a or b (it has none)"),
    (False, "b", "only a gold pair has a gold answer (got 'b')"),
])
def test_a_gold_answer_is_a_or_b_exactly_on_a_gold_pair(is_gold, answer, message):
    pair = make_pair(round=make_round())
    pair.is_gold, pair.gold_choice = is_gold, answer
    with pytest.raises(ValidationError) as refused:
        pair.full_clean()
    assert any(message in text for text in refused.value.message_dict["gold_choice"])
    pair.is_gold, pair.gold_choice = True, "a"
    pair.full_clean()


def _form(pair: Pair, **extra) -> dict:
    return {"prompt": pair.prompt_id, "response_a": pair.response_a_id, "response_b": pair.response_b_id,
            "origin": "generated", "labels_needed": "1", "round": pair.round_id, "job": "", "margin": "",
            "margin_version": "", "labels-TOTAL_FORMS": "0", "labels-INITIAL_FORMS": "0", **extra}


def test_the_pair_admin_refuses_a_gold_answer_the_rounds_page_refuses_and_never_sets_the_route(
        client, django_user_model):
    client.force_login(django_user_model.objects.create_user("st", password="x", is_staff=True, is_superuser=True))
    pair = make_pair(round=make_round())
    url = f"/admin/annotate/pair/{pair.pk}/change/"
    for extra in ({"is_gold": "on", "gold_choice": "tie"}, {"is_gold": "on", "gold_choice": ""},
                  {"gold_choice": "b"}):
        response = client.post(url, _form(pair, **extra))
        assert response.status_code == 200 and "gold_choice" in response.context["adminform"].form.errors
        stored = Pair.objects.get(pk=pair.pk)
        assert (stored.is_gold, stored.gold_choice) == (False, "")
    # route "judge" on a pair with no judge label: not a field of the form, so it is left as it is
    assert client.post(url, _form(pair, route="judge")).status_code == 302
    assert Pair.objects.get(pk=pair.pk).route == Route.NONE
    assert client.post(url, _form(pair, is_gold="on", gold_choice="a")).status_code == 302
    stored = Pair.objects.get(pk=pair.pk)
    assert (stored.is_gold, stored.gold_choice, stored.route) == (True, "a", Route.NONE)
