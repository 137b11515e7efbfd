"""The labelling page through the Django test client: full page, htmx partials, keys' targets, escaping, staff."""
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotate.models import Assignment, Label

from .factories import lease_of, make_pair, make_pairs, make_prompt, make_round, make_user, shown_pair

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}
EVIL = '<script>window.__xss=1</script><img src=x onerror=alert(1)> **bold**'


def _panel(html: str, side: str) -> str:
    match = re.search(rf'data-side="{side}">(.*?)</article>', html, re.S)
    return match.group(1)


@pytest.fixture
def ann_client(annotator):
    client = Client()
    client.force_login(annotator)
    return client


def test_login_is_required(client):
    response = client.get(reverse("annotate:label"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_full_page_shows_prompt_chat_both_sides_guidelines_and_keys(ann_client):
    round_ = make_round(guidelines="Prefer **honest** answers.")
    prompt = make_prompt(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                   {"role": "user", "content": "Write code"}], text="Write code")
    make_pair(prompt, "```python\nprint(1)\n```", "plain answer", round=round_)
    html = ann_client.get(reverse("annotate:label")).content.decode()
    assert "<html" in html and 'data-side="left"' in html and 'data-side="right"' in html
    assert "prefloop/keys.js" in html and "htmx" in html and 'id="help"' in html
    assert "<strong>honest</strong>" in html
    assert html.count('class="turn turn-') == 3
    assert "<pre><code" in html
    assert 'data-progress="remaining">1<' in html


def test_htmx_request_gets_the_partial_only(ann_client):
    make_pair()
    html = ann_client.get(reverse("annotate:label"), **HTMX).content.decode()
    assert html.lstrip().startswith('<section id="workspace"') and "<html" not in html


def test_model_text_is_escaped_and_never_markup(ann_client):
    prompt = make_prompt(text="<script>window.__p=1</script> prompt")
    make_pair(prompt, EVIL, EVIL)
    html = ann_client.get(reverse("annotate:label")).content.decode()
    for side in ("left", "right"):
        panel = _panel(html, side)
        assert "<script" not in panel and "<img" not in panel
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in panel
        assert "onerror=alert(1)" in panel and "<strong>bold</strong>" in panel
    assert "<script>window.__p" not in html and "&lt;script&gt;window.__p=1" in html


def test_pressing_left_over_htmx_stores_the_label_and_swaps_in_the_next_pair(ann_client, annotator):
    first, second = make_pairs(2)
    html = ann_client.get(reverse("annotate:label")).content.decode()
    left_text = re.sub(r"<.*?>", "", _panel(html, "left").split('<div class="diff">')[0]).strip()
    # The page measured 2.5 s; the server has leased the pair for longer, so the page's time stands.
    Assignment.objects.filter(annotator=annotator).update(leased_at=timezone.now() - timedelta(seconds=10))
    response = ann_client.post(reverse("annotate:submit"), {"lease": lease_of(first), "side": "left", "strength": "clear",
                                                             "comment": "nicer", "seconds": "2.5"}, **HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert shown_pair(body) == second.pk
    label = Label.objects.get(annotator=annotator)
    chosen = first.response_a if label.choice == "a" else first.response_b
    assert chosen.text in left_text
    assert (label.side, label.strength, label.preference_prob, label.comment, label.seconds) == (
        "left", "clear", 1.0, "nicer", 2.5)
    assert 'data-progress="done">1<' in body


def test_a_post_without_htmx_redirects_back_to_the_page(ann_client):
    pair = make_pair()
    ann_client.get(reverse("annotate:label"))
    response = ann_client.post(reverse("annotate:submit"), {"lease": lease_of(pair), "side": "both_bad"})
    assert response.status_code == 302 and response["Location"] == reverse("annotate:label")
    assert Label.objects.get().choice == "both_bad"


def test_a_bad_side_is_refused_with_a_message(ann_client):
    pair = make_pair()
    ann_client.get(reverse("annotate:label"))
    body = ann_client.post(reverse("annotate:submit"), {"lease": lease_of(pair), "side": "up"}, **HTMX).content.decode()
    assert "not understood" in body and not Label.objects.exists()


def test_a_second_answer_for_a_labelled_pair_says_it_was_not_saved(ann_client):
    pair = make_pair()
    ann_client.get(reverse("annotate:label"))
    body = ann_client.post(reverse("annotate:submit"), {"lease": lease_of(pair), "side": "left"}, **HTMX).content.decode()
    assert "Saved: left" in body
    body = ann_client.post(reverse("annotate:submit"), {"lease": lease_of(pair), "side": "right", "strength": "clear",
                                                        "comment": "fix"}, **HTMX).content.decode()
    assert "Saved: right" not in body and "already (left)" in body and "undo" in body
    assert Label.objects.get().side == "left"


def test_skip_and_undo_over_htmx(ann_client, annotator):
    first, second, third = make_pairs(3)
    ann_client.get(reverse("annotate:label"))
    body = ann_client.post(reverse("annotate:skip"), {"lease": lease_of(first)}, **HTMX).content.decode()
    assert shown_pair(body) == second.pk
    assert Assignment.objects.get(pair=first, annotator=annotator).state == Assignment.SKIPPED
    body = ann_client.post(reverse("annotate:submit"), {"lease": lease_of(second), "side": "tie"}, **HTMX).content.decode()
    assert shown_pair(body) == third.pk
    body = ann_client.post(reverse("annotate:undo"), **HTMX).content.decode()
    assert shown_pair(body) == second.pk and "undone" in body
    assert not Label.objects.exists()
    body = ann_client.post(reverse("annotate:undo"), **HTMX).content.decode()
    assert "Nothing to undo" in body


def test_csrf_header_from_base_html_is_accepted(annotator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(annotator)
    pair = make_pair()
    page = client.get(reverse("annotate:label")).content.decode()
    token = re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)
    refused = client.post(reverse("annotate:submit"), {"lease": lease_of(pair), "side": "left"}, **HTMX)
    assert refused.status_code == 403
    ok = client.post(reverse("annotate:submit"), {"lease": lease_of(pair), "side": "left"}, HTTP_X_CSRFTOKEN=token, **HTMX)
    assert ok.status_code == 200 and Label.objects.count() == 1


def test_empty_queue_says_so(ann_client):
    assert "No new pairs are waiting" in ann_client.get(reverse("annotate:label")).content.decode()


def test_staff_pages_are_for_staff(ann_client):
    for name in ("annotate:quality", "annotate:import", "annotate:export"):
        assert ann_client.get(reverse(name)).status_code == 403


def test_quality_page_shows_agreement_gold_accuracy_and_disagreements(client, staff):
    alice, bob = make_user("alice"), make_user("bob")
    from annotate.services import label_pair

    agreed = make_pairs(3, labels_needed=2)
    split = make_pair(labels_needed=2)
    gold = make_pair(is_gold=True, gold_choice="a")
    for pair in agreed:
        for user in (alice, bob):
            label_pair(pair.pk, user, "left")  # leased on the spot: left is A
    label_pair(split.pk, alice, "left")
    label_pair(split.pk, bob, "tie")
    label_pair(gold.pk, alice, "left")
    label_pair(gold.pk, bob, "right")
    client.force_login(staff)
    html = client.get(reverse("annotate:quality")).content.decode()
    assert 'data-metric="kappa">' in html and 'data-metric="alpha">' in html
    assert f'data-pair="{split.pk}"' in html and f'data-pair="{gold.pk}"' in html
    assert f'data-pair="{agreed[0].pk}"' not in html
    assert re.search(r'data-annotator="alice">.*?1/1 \(1\.00\)', html, re.S)
    assert re.search(r'data-annotator="bob">.*?0/1 \(0\.00\)', html, re.S)
