"""What people were shown and judged stays as it was shown, in the admin too (found by an outside probe: each needed
a staff account with change permission, and each kept labels or votes given on something else):
- a labelled pair's two answers swapped turned every label on it into the opposite preference;
- a labelled answer's text rewritten kept the label for a text no one saw;
- an answer in a pair moved to another prompt sat in a pair of that prompt's (what Pair.clean refuses);
- an answered train prompt moved to eval was scored by the gate as unseen after a round had trained on it;
- a voted comparison's answers swapped turned every blind vote on it into a vote for the other version.
Each attack below posts the admin's own change form back with one field changed."""
from __future__ import annotations

import pytest

from annotate import services
from annotate.models import Label, Pair
from compare.models import Comparison
from generation.models import Prompt, Response
from tests.annotate.factories import make_pair, make_prompt, make_user
from tests.security.test_fuzz_audit import _post_change, _staff_client
from tests.security.urlwalk import page_inputs

pytestmark = pytest.mark.django_db


@pytest.fixture
def labelled():
    pair = make_pair(text_a="The right answer", text_b="A wrong answer")
    services.label_pair(pair.pk, make_user("ann1"), "left")  # left is a here
    assert Label.objects.get(pair=pair).choice == "a"
    return pair


def _unchanged(model, pk, before):
    return model.objects.filter(pk=pk).values().get() == before


def test_a_labelled_pairs_answers_cannot_be_swapped(staff, labelled):
    pair = labelled
    before = Pair.objects.filter(pk=pair.pk).values().get()
    client, url = _staff_client(staff), f"/admin/annotate/pair/{pair.pk}/change/"
    fields = {**dict(page_inputs(client.get(url).content.decode()).values),
              "gold_choice": "",  # (page_inputs reads an unselected select as its first choice)
              "response_a": str(pair.response_b_id), "response_b": str(pair.response_a_id)}
    fields.pop("_continue", None), fields.pop("_addanother", None)
    assert client.post(url, fields).status_code == 302  # taken, the answers left as they were
    assert _unchanged(Pair, pair.pk, before)
    assert Pair.objects.get(pk=pair.pk).response_a.text == "The right answer"


def test_a_shown_answers_text_and_prompt_cannot_be_changed(staff, labelled):
    pair = labelled
    other = make_prompt("Another question entirely")
    answer = pair.response_a
    before = Response.objects.filter(pk=answer.pk).values().get()
    client = _staff_client(staff)
    url = f"/admin/generation/response/{answer.pk}/change/"
    _post_change(client, url, answer, text="Something nobody was shown")
    _post_change(client, url, answer, prompt=str(other.pk))
    assert _unchanged(Response, answer.pk, before)
    # an answer in a comparison only (voted on, not labelled) is as fixed
    compared = Response.objects.create(prompt=other, text="Compared answer", source="test")
    Comparison.objects.create(prompt=other, response_a=compared,
                              response_b=Response.objects.create(prompt=other, text="The other", source="test"))
    before = Response.objects.filter(pk=compared.pk).values().get()
    _post_change(client, f"/admin/generation/response/{compared.pk}/change/", compared, text="Rewritten")
    assert _unchanged(Response, compared.pk, before)


def test_an_answered_prompt_keeps_its_split_and_an_unanswered_one_can_move(staff, labelled):
    prompt = labelled.prompt
    client = _staff_client(staff)
    _post_change(client, f"/admin/generation/prompt/{prompt.pk}/change/", prompt, split="eval")
    assert Prompt.objects.get(pk=prompt.pk).split == "train"
    fresh = make_prompt("Not yet answered")
    assert _post_change(client, f"/admin/generation/prompt/{fresh.pk}/change/", fresh,
                        split="eval").status_code == 302
    assert Prompt.objects.get(pk=fresh.pk).split == "eval"


def test_an_answer_in_no_pair_is_still_edited(staff):
    answer = Response.objects.create(prompt=make_prompt(), text="A draft answer", source="test")
    response = _post_change(_staff_client(staff), f"/admin/generation/response/{answer.pk}/change/", answer,
                            text="A corrected answer")
    assert response.status_code == 302 and Response.objects.get(pk=answer.pk).text == "A corrected answer"


def test_a_voted_comparisons_answers_and_votes_cannot_be_changed(staff):
    from compare.models import Vote
    from compare.services import record_vote
    from tests.compare.conftest import make_comparison, make_version

    base, new = make_version("base", is_current=True), make_version("round-1")
    comparison = make_comparison(base, new)
    vote = record_vote(comparison, make_user("voter"), "a")
    client = _staff_client(staff)
    url = f"/admin/compare/comparison/{comparison.pk}/change/"
    fields = {**dict(page_inputs(client.get(url).content.decode()).values),
              "response_a": str(comparison.response_b_id), "response_b": str(comparison.response_a_id)}
    fields.pop("_continue", None), fields.pop("_addanother", None)
    before = Comparison.objects.filter(pk=comparison.pk).values().get()
    assert client.post(url, fields).status_code == 302
    assert _unchanged(Comparison, comparison.pk, before)
    url = f"/admin/compare/vote/{vote.pk}/change/"
    fields = {**dict(page_inputs(client.get(url).content.decode()).values), "outcome": "b"}
    fields.pop("_continue", None), fields.pop("_addanother", None)
    assert client.post(url, fields).status_code == 302
    assert Vote.objects.get(pk=vote.pk).outcome == "a"


def test_a_prompt_with_only_its_reference_answer_can_still_move_split(staff):
    """A reference answer stored at import is no model's: a prompt set imported into the wrong split can be moved
    until a model answers it."""
    prompt = make_prompt("Imported into the wrong split")
    Response.objects.create(prompt=prompt, text="The reference", source="test", is_reference=True)
    response = _post_change(_staff_client(staff), f"/admin/generation/prompt/{prompt.pk}/change/", prompt,
                            split="eval")
    assert response.status_code == 302 and Prompt.objects.get(pk=prompt.pk).split == "eval"
