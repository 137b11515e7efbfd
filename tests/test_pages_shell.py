"""What every page shares: one refusal page for signed-in people without the right, the favicon, the staff nav."""
import pytest
from django.urls import reverse

STAFF_PAGES = ["generation:jobs", "training:runs", "loop:runs", "annotate:quality", "annotate:import",
               "annotate:export"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", STAFF_PAGES)
def test_a_signed_in_annotator_gets_the_refusal_page_not_the_admin_login(client, annotator, name):
    client.force_login(annotator)
    response = client.get(reverse(name))
    page = response.content.decode()
    assert response.status_code == 403
    assert "This page is for staff: ask an administrator if you need it." in page
    assert "You are signed in as <strong>ann</strong>" in page
    assert f'href="{reverse("home")}">Back to the home page</a>' in page
    assert "not authorized" not in page and "/admin/login/" not in page


@pytest.mark.django_db
def test_a_signed_out_visitor_is_sent_to_sign_in(client):
    response = client.get(reverse("training:runs"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login") + "?next=/training/")


@pytest.mark.django_db
def test_the_favicon_is_served(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    icon = client.get(response["Location"])
    assert icon.status_code == 200 and b"<svg" in b"".join(icon.streaming_content)


@pytest.mark.django_db
def test_staff_find_quality_import_and_export_in_the_nav(client, staff, annotator):
    client.force_login(staff)
    nav = client.get(reverse("home")).content.decode().split("<nav>")[1].split("</nav>")[0]
    for name in ("annotate:quality", "annotate:import", "annotate:export"):
        assert f'href="{reverse(name)}"' in nav
    client.force_login(annotator)
    nav = client.get(reverse("home")).content.decode().split("<nav>")[1].split("</nav>")[0]
    assert reverse("annotate:export") not in nav


@pytest.mark.django_db
def test_the_home_page_and_the_label_page_count_the_same_pairs_waiting(client, annotator, staff):
    import re

    from annotate.services import label_pair, next_pair_for, skip
    from tests.annotate.factories import make_pair

    pairs = [make_pair() for _ in range(4)]
    make_pair(is_gold=True)  # gold pairs are shown among the others, never counted as waiting
    label_pair(pairs[0].pk, annotator, "left")
    skip(annotator, next_pair_for(annotator).pair)
    client.force_login(annotator)
    home = client.get(reverse("home")).content.decode()
    label = client.get(reverse("annotate:label")).content.decode()
    remaining = int(re.search(r'data-progress="remaining">(\d+)<', label)[1])
    assert remaining == 3  # the skipped pair waits on the skipped list
    assert re.search(rf'<span id="waiting-for-you"[^>]*>{remaining} pairs waiting for you</span>', home)
    assert "open in the queue" not in home
    client.force_login(staff)
    home = client.get(reverse("home")).content.decode()
    assert re.search(r'<span id="waiting-for-you"[^>]*>3 pairs waiting for you</span>', home)  # pair 0 has its one label
    assert '<span id="pairs-open">3 open in the queue</span>' in home
