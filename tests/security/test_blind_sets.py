"""Row 4 of issue 17: a side-by-side set reused the answers of a blind set (same versions, seed and token limit) and
annotators could open it, so they voted "blind" knowing which version wrote which answer. Now a person sees an
answer named only after voting on every blind comparison that holds it, whichever set it appears in.

The sets are started over HTTP as staff and answered by the real path (generation.services.answers_for on a tiny
random Llama), which reuses stored answers exactly as in the report."""
from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from compare import services
from compare.models import CompareJob, Comparison, Vote
from generation.models import ModelVersion
from tests.compare.conftest import make_job, make_prompt, make_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_versions(tiny_model_dir):
    base = make_version("zebrafinch-base")
    child = make_version("okapi-round-one", parent=base, is_current=True)
    ModelVersion.objects.filter(pk__in=[base.pk, child.pk]).update(path=str(tiny_model_dir))
    for k in range(2):
        make_prompt(f"Say something about the number {k}.")
    return base, child


def _start(client: Client, versions, *, blind: bool) -> CompareJob:
    """Staff start a set on the compare page; the worker's task answers it."""
    base, child = versions
    data = {"version_a": child.pk, "version_b": base.pk, "prompts": "eval", "limit": 2, "seed": 3,
            "max_new_tokens": 6, **({"blind": "on"} if blind else {})}
    response = client.post(reverse("compare:index"), data)
    assert response.status_code == 302, response.content.decode()[:500]
    job = CompareJob.objects.order_by("-pk").first()
    services.run_compare_job(job.pk)
    return job


def _answers(job: CompareJob) -> list[str]:
    return [text for c in job.comparisons.select_related("response_a", "response_b")
            for text in (c.response_a.text, c.response_b.text)]


def _vote_through(client: Client, job: CompareJob) -> int:
    """Vote on every comparison the set page serves, as a person would (key 1: left); returns how many."""
    votes = 0
    while True:
        html = client.get(reverse("compare:job", args=[job.pk])).content.decode()
        found = re.search(r'action="/compare/comparisons/(\d+)/vote/"', html)
        if not found:
            return votes
        assert client.post(reverse("compare:vote", args=[int(found[1])]), {"side": "left"}).status_code == 200
        votes += 1


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def ann_client(annotator) -> Client:
    client = Client()
    client.force_login(annotator)
    return client


def test_a_side_by_side_set_reusing_blind_answers_opens_only_after_the_blind_votes(
    tiny_versions, staff_client, ann_client, annotator
):
    blind = _start(staff_client, tiny_versions, blind=True)
    side_by_side = _start(staff_client, tiny_versions, blind=False)
    # the precondition of the attack: the side-by-side set shows the very answers of the blind set
    assert sorted(_answers(side_by_side)) == sorted(_answers(blind))
    response = ann_client.get(reverse("compare:job", args=[side_by_side.pk]))
    html = response.content.decode()
    assert response.status_code == 403 and "is not open to you yet" in html
    assert f'href="/compare/sets/{blind.pk}/"' in html
    for c in side_by_side.comparisons.select_related("response_a", "response_b"):
        # no answer on the page, so no answer next to a version's name
        assert c.response_a.text not in html and c.response_b.text not in html
    assert "okapi-round-one</h3>" not in html
    # the page that watched the set being answered polls with htmx: it gets the same message, as a 200 htmx shows
    polled = ann_client.get(reverse("compare:job", args=[side_by_side.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert "is not open to you yet" in polled and "okapi-round-one</h3>" not in polled
    assert all(text not in polled for text in _answers(side_by_side))
    # the annotator's blind votes are still blind: the set serves them both comparisons
    assert _vote_through(ann_client, blind) == 2
    assert Vote.objects.filter(voter=annotator).count() == 2
    opened = ann_client.get(reverse("compare:job", args=[side_by_side.pk])).content.decode()
    assert "Side by side: okapi-round-one and zebrafinch-base" in opened


def test_a_blind_set_made_after_a_side_by_side_leaves_the_named_answers_out(
    tiny_versions, staff_client, ann_client, annotator
):
    side_by_side = _start(staff_client, tiny_versions, blind=False)
    assert ann_client.get(reverse("compare:job", args=[side_by_side.pk])).status_code == 200  # names seen
    blind = _start(staff_client, tiny_versions, blind=True)
    html = ann_client.get(reverse("compare:job", args=[blind.pk])).content.decode()
    assert "2 comparisons of this set left out for you" in html
    assert f"shown by name in side-by-side set {side_by_side.pk}" in html
    assert 'action="/compare/comparisons/' not in html  # nothing to vote on
    # and it says so: it said "all 0 voted" and "yours among them" to a person who had voted on none (found by an
    # outside review)
    assert "nothing here for you to vote on blind" in html
    assert "all 0 voted" not in html and "yours among them" not in html
    comparison = blind.comparisons.first()
    response = ann_client.post(reverse("compare:vote", args=[comparison.pk]), {"side": "left"})
    assert response.status_code == 400 and "would not be blind" in response.content.decode()
    assert not Vote.objects.filter(voter=annotator).exists()


def test_answers_revealed_after_a_vote_are_left_out_of_another_blind_set(tiny_versions, staff_client, ann_client,
                                                                           annotator):
    first = _start(staff_client, tiny_versions, blind=True)
    second = _start(staff_client, tiny_versions, blind=True)
    assert _vote_through(ann_client, first) == 2  # each vote reveals the names
    assert _vote_through(ann_client, second) == 0
    html = ann_client.get(reverse("compare:job", args=[second.pk])).content.decode()
    assert f"you saw its answers named after your vote in set {first.pk}" in html
    response = ann_client.post(reverse("compare:vote", args=[second.comparisons.first().pk]), {"side": "right"})
    assert response.status_code == 400
    assert Vote.objects.filter(voter=annotator).count() == 2
    # another person, who saw no names, votes on the second set as usual
    other = Client()
    other.force_login(type(annotator).objects.create_user("another-annotator"))
    assert _vote_through(other, second) == 2


def test_the_same_text_stored_twice_is_the_same_answer(ann_client):
    base = make_version("zebrafinch-base")
    child = make_version("okapi-round-one", parent=base, is_current=True)
    blind = make_job(base, child, blind=True)
    side_by_side = make_job(base, child, n=0, blind=False)
    for c in blind.comparisons.select_related("response_a", "response_b"):  # new rows, the same words
        Comparison.objects.create(
            job=side_by_side, prompt=c.prompt, left_is_a=True,
            response_a=type(c.response_a).objects.create(prompt=c.prompt, version=base, text=c.response_a.text),
            response_b=type(c.response_b).objects.create(prompt=c.prompt, version=child, text=c.response_b.text),
        )
    side_by_side.prompt_ids = blind.prompt_ids
    side_by_side.save()
    assert ann_client.get(reverse("compare:job", args=[side_by_side.pk])).status_code == 403
    # a side-by-side set sharing nothing with a blind set opens at once
    unrelated = make_job(base, child, blind=False)
    assert ann_client.get(reverse("compare:job", args=[unrelated.pk])).status_code == 200
