"""People's blind votes through the API (docs/api.md: everything a page does, a program can do; the set's page took
votes and no operation did, found by an outside review): the same rules as the page, nothing naming a version before
the vote, answers seen named left out, the first vote standing."""
from __future__ import annotations

import json

import pytest

from annotate.models import AnnotatorProfile
from compare.models import CompareJob, Vote
from prefloop_client import APIError, Client
from tests.annotate.factories import make_user
from tests.compare.conftest import make_job

pytestmark = pytest.mark.django_db(transaction=True)
NAMES = ("zebrafinch-base", "okapi-round-one")


@pytest.fixture
def named(db):
    from tests.compare.conftest import make_version

    base = make_version("zebrafinch-base")
    return base, make_version("okapi-round-one", parent=base, is_current=True)


def test_a_person_votes_through_a_blind_set_as_on_its_page(annotator_api, annotator, named):
    base, child = named
    job = make_job(child, base, n=2, left_is_a=(True, False))
    first = annotator_api.next_comparison(job.pk)
    assert (first["set"], first["voted"], first["count"], first["left_out"]) == (job.pk, 0, 2, [])
    assert first["left"] == "answer of A number 0" and first["prompt"][0]["role"] == "user"
    assert not any(name in json.dumps(first) for name in NAMES)  # blind: no version named
    answer = annotator_api.vote(first["comparison"], "left")
    assert answer == {"comparison": first["comparison"], "side": "left", "recorded": True,
                      "left_version": "okapi-round-one", "right_version": "zebrafinch-base"}
    assert Vote.objects.get(voter=annotator).outcome == "a" and not Vote.objects.get().is_automatic
    again = annotator_api.vote(first["comparison"], "right")  # the first vote stands once the names are shown
    assert (again["recorded"], again["side"]) == (False, "left") and Vote.objects.count() == 1
    second = annotator_api.next_comparison(job.pk)
    assert second["voted"] == 1 and second["left"] == "answer of B number 1"  # stored with b on the left
    annotator_api.vote(second["comparison"], "both_bad")
    done = annotator_api.next_comparison(job.pk)
    assert (done["comparison"], done["voted"], done["left"]) == (None, 2, "")


def test_what_the_page_refuses_the_api_refuses(annotator_api, live_server, token_for, named):
    base, child = named
    side_by_side = make_job(child, base, n=1, blind=False)
    for call in (lambda: annotator_api.next_comparison(side_by_side.pk),
                 lambda: annotator_api.vote(side_by_side.comparisons.get().pk, "left")):
        with pytest.raises(APIError) as refused:
            call()
        assert refused.value.status == 400 and "side by side" in refused.value.detail
    answering = CompareJob.objects.create(version_a=child, version_b=base, prompt_ids=[1], status="running")
    with pytest.raises(APIError) as refused:
        annotator_api.next_comparison(answering.pk)
    assert refused.value.status == 409 and "still being answered" in refused.value.detail
    blind = make_job(child, base, n=1)
    with pytest.raises(APIError) as refused:
        annotator_api.vote(blind.comparisons.get().pk, "sideways")
    assert refused.value.status == 400 and refused.value.errors[0]["field"] == "side"
    with pytest.raises(APIError) as refused:
        annotator_api.next_comparison(10**6)
    assert refused.value.status == 404 and "no comparison set with id 1000000" in refused.value.detail
    judge = make_user("a-judge")
    AnnotatorProfile.objects.create(user=judge, is_automatic=True)
    with pytest.raises(APIError) as refused:  # its votes would be stored as people's
        Client(live_server.url, token_for(judge)).vote(blind.comparisons.get().pk, "left")
    assert refused.value.status == 403 and "judge" in refused.value.detail
    assert not Vote.objects.exists()


def test_answers_seen_named_are_left_out_of_the_api_as_of_the_page(annotator_api, annotator, named):
    """The attack: open a side-by-side set (names shown), then vote "blind" on the same answers in a blind set."""
    base, child = named
    side_by_side = make_job(child, base, n=1, blind=False)
    comparison = side_by_side.comparisons.get()
    blind = CompareJob.objects.create(version_a=child, version_b=base, blind=True, status="succeeded",
                                      prompt_ids=[comparison.prompt_id])
    shown = type(comparison).objects.create(job=blind, prompt=comparison.prompt, left_is_a=False,
                                            response_a=comparison.response_a, response_b=comparison.response_b)
    from django.test import Client as PageClient

    client = annotator_api
    page = PageClient()
    page.force_login(annotator)
    assert page.get(f"/compare/sets/{side_by_side.pk}/").status_code == 200  # names seen here
    state = client.next_comparison(blind.pk)
    assert state["comparison"] is None and state["count"] == 0 and state["left_out"]
    with pytest.raises(APIError) as refused:
        client.vote(shown.pk, "left")
    assert refused.value.status == 409 and "would not be blind" in refused.value.detail
    assert not Vote.objects.filter(voter=annotator).exists()


def test_the_page_refuses_what_the_api_refuses(client, annotator, named):
    """The set page took a vote on a set still being answered, and an automatic account's vote as a person's, where
    the API refused both (found by a review of the API)."""
    from compare.models import Comparison

    base, child = named
    job = make_job(child, base, n=1)
    comparison = job.comparisons.get()
    CompareJob.objects.filter(pk=job.pk).update(status="running")
    client.force_login(annotator)
    refused = client.post(f"/compare/comparisons/{comparison.pk}/vote/", {"side": "left"})
    assert refused.status_code == 400 and "still being answered" in refused.content.decode()
    CompareJob.objects.filter(pk=job.pk).update(status="succeeded")
    judge = make_user("a-judge")
    AnnotatorProfile.objects.create(user=judge, is_automatic=True)
    client.force_login(judge)
    refused = client.post(f"/compare/comparisons/{comparison.pk}/vote/", {"side": "left"})
    assert refused.status_code == 400 and "automatic account" in refused.content.decode()
    assert not Vote.objects.exists() and Comparison.objects.count() == 1


def test_a_vote_on_answers_of_no_version_names_none(annotator_api, named):
    """An imported answer has no version: a comparison holding one (made in the admin) answered the vote with a 500,
    the vote stored all the same."""
    from generation.models import Response

    base, child = named
    job = make_job(child, base, n=1)
    comparison = job.comparisons.get()
    Response.objects.filter(pk=comparison.response_b_id).update(version=None)
    answer = annotator_api.vote(comparison.pk, "left")
    assert answer["recorded"] and answer["right_version"] is None and answer["left_version"] == "okapi-round-one"


def test_people_find_the_open_blind_sets_without_their_versions(annotator_api, named):
    base, child = named
    blind = make_job(child, base, n=2)
    make_job(child, base, n=1, blind=False)
    CompareJob.objects.create(version_a=child, version_b=base, prompt_ids=[1], status="running")
    listed = annotator_api.open_sets()
    assert [(s["set"], s["comparisons"], s["voted"]) for s in listed] == [(blind.pk, 2, 0)]
    assert not any(name in json.dumps(listed) for name in NAMES)
    annotator_api.vote(annotator_api.next_comparison(blind.pk)["comparison"], "tie")
    assert annotator_api.open_sets()[0]["voted"] == 1


def test_the_sets_list_names_a_blind_sets_versions_to_people_once_they_voted_on_it_all(client, annotator, named):
    """Two blind sets sharing an answer (answers are reused across sets), listed as "child vs base" and "other vs
    child": the answer both served was child's, before any vote (found by a review of the API)."""
    from compare import services

    base, child = named
    job = make_job(child, base, n=1)
    client.force_login(annotator)
    page = client.get("/compare/").content.decode()
    assert "okapi-round-one vs zebrafinch-base" not in page and "named once you have voted on it all" in page
    services.record_vote(job.comparisons.get(), annotator, "a")
    assert "okapi-round-one vs zebrafinch-base" in client.get("/compare/").content.decode()
