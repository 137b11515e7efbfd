"""A skipped pair is not a dead end: it waits on the person's skipped list, and returning to it shows it next."""
import re

import pytest
from django.test import Client
from django.urls import reverse

from annotate.models import Label
from annotate.services import next_pair_for, skip

from .factories import lease_of, make_pair, shown_lease, shown_pair

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def test_return_to_a_skipped_pair_and_label_it(annotator):
    first, second = make_pair(text_a="alpha one", text_b="alpha two"), make_pair()
    client = Client()
    client.force_login(annotator)
    shown = next_pair_for(annotator)
    skip(annotator, shown.pair)
    skipped_id = shown.pair_id
    listing = client.get(reverse("annotate:skipped")).content.decode()
    assert re.findall(r'<tr data-lease="(\d+)">', listing) == [str(shown.pk)]  # the lease, never the pair's id

    on_screen = next_pair_for(annotator).pair_id  # the other pair is leased now; it goes back to the queue
    assert on_screen != skipped_id and {on_screen, skipped_id} == {first.pk, second.pk}
    response = client.post(reverse("annotate:return_to_skipped"), {"lease": shown.pk})
    assert response.status_code == 302 and response["Location"] == reverse("annotate:label")
    page = client.get(reverse("annotate:label")).content.decode()
    assert shown_pair(page) == skipped_id
    client.post(reverse("annotate:submit"), {"lease": shown_lease(page), "side": "left"}, **HTMX)
    assert Label.objects.get(annotator=annotator).pair_id == skipped_id
    assert "You have skipped no pair" in client.get(reverse("annotate:skipped")).content.decode()
    assert next_pair_for(annotator).pair_id == on_screen  # the pair set aside is still there to label


def test_only_your_own_skipped_pairs_can_be_returned_to(annotator, django_user_model):
    pair = make_pair()
    other = django_user_model.objects.create_user("other")
    skip(other, next_pair_for(other).pair)
    client = Client()
    client.force_login(annotator)
    response = client.post(reverse("annotate:return_to_skipped"), {"lease": lease_of(pair, other)}, follow=True)
    assert f"Lease {lease_of(pair, other)} is not yours" in response.content.decode()
    response = client.post(reverse("annotate:return_to_skipped"), {"pair": pair.pk}, follow=True)  # by id: no one's
    assert "Name the pair by its lease" in response.content.decode()
    response = client.post(reverse("annotate:return_to_skipped"), {"pair": "junk"}, follow=True)
    assert response.status_code == 200 and "Nothing to return to" in response.content.decode()


@pytest.mark.parametrize("route", ["duplicate", "judge"])
def test_a_skipped_pair_held_back_since_cannot_be_returned_to_and_labelled(annotator, route):
    """Returning to a skipped pair checked only for a closed round: a pair skipped, then held back as a near-duplicate
    or given to the judge, was leased again and labelled, its label counted in training and agreement."""
    from annotate.models import Pair, Route

    pair = make_pair()
    client = Client()
    client.force_login(annotator)
    skip(annotator, next_pair_for(annotator).pair)
    Pair.objects.filter(pk=pair.pk).update(route=Route.DUPLICATE if route == "duplicate" else Route.JUDGE)
    assert "You have skipped no pair" in client.get(reverse("annotate:skipped")).content.decode()
    response = client.post(reverse("annotate:return_to_skipped"), {"lease": lease_of(pair)}, follow=True)
    assert "nothing to return to" in response.content.decode()
    client.post(reverse("annotate:submit"), {"lease": lease_of(pair), "side": "left"}, **HTMX)
    assert not Label.objects.exists()


def test_a_label_on_a_pair_returned_to_counts_its_time_from_the_return(annotator):
    """Without the page's own timer (a form sent with no script), a label's time is counted from its lease: a pair
    returned to hours after it was skipped kept its first lease time, and its label took hours on the Quality page
    (found by an outside review)."""
    from datetime import timedelta

    from annotate.models import Assignment

    make_pair()
    client = Client()
    client.force_login(annotator)
    shown = next_pair_for(annotator)
    skip(annotator, shown.pair)
    Assignment.objects.filter(pk=shown.pk).update(leased_at=shown.leased_at - timedelta(hours=3))  # skipped long ago
    client.post(reverse("annotate:return_to_skipped"), {"lease": shown.pk})
    page = client.get(reverse("annotate:label")).content.decode()
    client.post(reverse("annotate:submit"), {"lease": shown_lease(page), "side": "left", "seconds": ""})
    assert Label.objects.get(annotator=annotator).seconds < 60
