"""SQL statements per labelling request stay within a budget, so a slow regression (an N+1 in a template, a counter
read row by row, a re-read of what was just written) fails here instead of in the load benchmark.

Measured when this was written: a key press (submit a label, get the next pair) 15 statements, a page reload 4,
under the test transaction (savepoints where the server says BEGIN IMMEDIATE; the count is the same)."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotate.models import Assignment, Label

from .factories import make_pair, make_prompt, make_round, shown_lease, shown_pair

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}
# PostgreSQL takes the next pair's row lock (SELECT ... FOR UPDATE SKIP LOCKED) as a statement of its own.
SUBMIT_BUDGET = 17 if connection.vendor == "sqlite" else 18
PAGE_BUDGET = 5


@pytest.fixture
def ann_client(annotator):
    client = Client()
    client.force_login(annotator)
    return client


@pytest.fixture
def queue():
    """Two rounds (the older one with guidelines), multi-turn prompts, a few pairs needing two labels each."""
    old, new = make_round(guidelines="Prefer **honest** answers."), make_round()
    def chat(i: int) -> list[dict]:
        return [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": f"Write *code* number {i}"}]

    pairs = [make_pair(make_prompt(messages=chat(i), text=f"Write code {i}"), round=old, labels_needed=2)
             for i in range(12)]
    pairs += [make_pair(round=new) for _ in range(3)]
    return pairs


def _press(client, lease: int, side: str = "left"):
    return client.post(reverse("annotate:submit"), {"lease": lease, "side": side, "seconds": "1.5"}, **HTMX)


def test_a_key_press_stays_within_its_query_budget_and_does_not_grow_with_history(ann_client, annotator, queue):
    lease = shown_lease(ann_client.get(reverse("annotate:label")).content.decode())
    counts = []
    for n in range(10):
        with CaptureQueriesContext(connection) as queries:
            response = _press(ann_client, lease, ("left", "right", "tie", "both_bad")[n % 4])
        assert response.status_code == 200
        counts.append(len(queries))
        lease = shown_lease(response.content.decode())
    assert max(counts) <= SUBMIT_BUDGET, (counts, [q["sql"][:120] for q in queries.captured_queries])
    assert counts[-1] == counts[0]  # ten labels later, not one statement more
    # The budget held while everything a key press must do was done.
    assert Label.objects.filter(annotator=annotator).count() == 10
    assert Assignment.objects.filter(annotator=annotator, state=Assignment.LEASED).count() == 1
    assert 'data-progress="done">10<' in response.content.decode()


def test_a_page_view_stays_within_its_query_budget(ann_client, queue):
    ann_client.get(reverse("annotate:label"))  # takes the lease
    with CaptureQueriesContext(connection) as reload:
        html = ann_client.get(reverse("annotate:label")).content.decode()
    assert len(reload) <= PAGE_BUDGET, [q["sql"][:120] for q in reload.captured_queries]
    assert "<strong>honest</strong>" in html and html.count('class="turn turn-') == 3


def test_the_last_pair_of_the_queue_stays_within_budget(ann_client, annotator):
    """Across rounds, and when nothing is left: the empty page must not cost more than a full one."""
    first, second = make_pair(round=make_round()), make_pair(round=make_round())
    page = ann_client.get(reverse("annotate:label")).content.decode()
    lease = shown_lease(page)
    assert shown_pair(page) == first.pk
    with CaptureQueriesContext(connection) as to_second:
        body = _press(ann_client, lease).content.decode()
    assert shown_pair(body) == second.pk
    with CaptureQueriesContext(connection) as to_none:
        body = _press(ann_client, shown_lease(body)).content.decode()
    assert "No new pairs are waiting for you" in body
    assert len(to_second) <= SUBMIT_BUDGET and len(to_none) <= SUBMIT_BUDGET
