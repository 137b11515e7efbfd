"""How htmx requests fail, as the server answers them. A request sent after the session ended gets 401 and an
HX-Redirect to the sign-in page (never the login page itself, which htmx would swap into the label area), with `next`
the page the person was on, only when that page is on this site; a POST's sign-in page says it was not saved. A CSRF
refusal and a refused vote are plain sentences, which static/prefloop/errors.js shows in the page's status line."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.urls import reverse

from annotate.models import Label
from compare.models import Vote
from generation.models import GenerationJob, ModelVersion
from prefloop.htmx import SIGNED_OUT_POST, STALE_PAGE
from tests.annotate.factories import make_pair, make_user
from tests.compare.conftest import make_job, versions  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db

SUBMIT = "/annotate/submit/"
LOGIN = "/accounts/login/"


def _htmx(page: str = "http://testserver/annotate/") -> dict:
    return {"HTTP_HX_REQUEST": "true", "HTTP_HX_CURRENT_URL": page}


def _assert_no_login_page(response) -> None:
    body = response.content.decode()
    assert "<form" not in body and "topbar" not in body and "password" not in body.lower(), body


def _next_of(redirect: str) -> list[str]:
    return parse_qs(urlsplit(redirect).query).get("next", [])


def test_a_label_sent_signed_out_is_answered_401_with_a_redirect_back_to_the_label_page(client):
    pair = make_pair()
    response = client.post(SUBMIT, {"lease": "1", "side": "left", "seconds": "2"}, **_htmx())
    # The XHR would follow a 302 to the login page (200) and htmx would swap the whole page into the label area.
    assert response.status_code == 401
    assert response["HX-Redirect"] == f"{LOGIN}?next=/annotate/"
    assert response["Content-Type"].startswith("text/plain")
    assert "not saved" in response.content.decode()
    _assert_no_login_page(response)
    assert not Label.objects.filter(pair=pair).exists()

    # The sign-in page it moves to says the label was not saved, and signs in back to the label page (the 405 it
    # went back to before was /annotate/submit/).
    page = client.get(response["HX-Redirect"]).content.decode()
    assert "was not saved" in page and SIGNED_OUT_POST.split(",")[0] in page
    assert 'name="next" value="/annotate/"' in page


def test_signing_in_from_that_page_returns_to_the_page_not_the_post_address(client):
    make_user("back", password="pw-back-123")
    response = client.post(SUBMIT, {"side": "left"}, **_htmx())
    login = client.post(response["HX-Redirect"], {"username": "back", "password": "pw-back-123",
                                                   "next": _next_of(response["HX-Redirect"])[0]})
    assert login.status_code == 302 and login["Location"] == "/annotate/"


def test_a_progress_poll_sent_signed_out_moves_the_page_to_sign_in(client):
    job = GenerationJob.objects.create(version=ModelVersion.objects.create(name="v0", path="/nowhere"), total=8)
    response = client.get(f"/generation/jobs/{job.pk}/progress/", **_htmx("http://testserver/generation/"))
    assert response.status_code == 401
    assert response["HX-Redirect"] == f"{LOGIN}?next=/generation/"
    _assert_no_login_page(response)
    assert "not saved" not in response.content.decode()  # a poll changes nothing


def test_the_page_path_keeps_its_query():
    client = Client()
    response = client.post(SUBMIT, {}, **_htmx("http://testserver/compare/?automatic=1"))
    assert _next_of(response["HX-Redirect"]) == ["/compare/?automatic=1"]


def test_requests_without_htmx_still_get_the_sign_in_redirect(client):
    response = client.get("/annotate/")
    assert response.status_code == 302 and response["Location"] == f"{LOGIN}?next=/annotate/"
    assert "HX-Redirect" not in response


@pytest.mark.parametrize("current", [
    "https://evil.example/annotate/",
    "http://evil.example/annotate/",
    "//evil.example/annotate/",
    "http://testserver.evil.example/annotate/",
    "http://testserver@evil.example/annotate/",
    "http://evil.example@testserver:80@evil.example/",
    "/\\evil.example/annotate/",
    "http://testserver:8443/annotate/",
    "javascript:alert(1)//",
    "https:evil.example",
    "http://testserver/annotate/\r\nSet-Cookie: x=1",
    "",
])
def test_the_current_url_from_another_site_never_becomes_the_redirect_target(client, current):
    """The attack: a request (or a page on another site posting to this one) names HX-Current-URL on another site,
    so that signing in would send the person there."""
    response = client.post(SUBMIT, {"side": "left"}, **_htmx(current))
    assert response.status_code == 401
    target = response["HX-Redirect"]
    assert target == LOGIN, target  # no `next` at all: the sign-in page's own default
    assert "evil" not in target and "javascript" not in target


def test_a_stale_csrf_token_is_refused_with_a_sentence_not_a_page(annotator):
    """Signing in again in another tab rotates the CSRF cookie: the open page's token no longer matches it."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(annotator)
    page = client.get("/annotate/").content.decode()
    old_token = re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)
    client.cookies["csrftoken"] = "x" * 32  # the token the other tab's sign-in set
    response = client.post(SUBMIT, {"side": "left", "csrfmiddlewaretoken": old_token},
                           HTTP_X_CSRFTOKEN=old_token, **_htmx())
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == STALE_PAGE
    # Without htmx (a plain form post) the page is Django's, as before.
    plain = client.post(SUBMIT, {"side": "left", "csrfmiddlewaretoken": old_token})
    assert plain.status_code == 403 and plain["Content-Type"].startswith("text/html")


def test_a_refused_vote_says_it_was_not_recorded_in_plain_text(client, annotator, versions):  # noqa: F811
    job = make_job(*versions, n=1)
    client.force_login(annotator)
    url = reverse("compare:vote", args=[job.comparisons.get().pk])
    response = client.post(url, {"side": "<img src=x onerror=alert(1)>"}, **_htmx(f"http://testserver/compare/sets/{job.pk}/"))
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")  # the page shows it as text, never as HTML
    assert response.content.decode().startswith("Your vote was not recorded: side must be one of")
    assert not Vote.objects.exists()


def test_every_page_loads_the_error_handler_and_has_its_status_line(client, annotator):
    client.force_login(annotator)
    page = client.get("/annotate/").content.decode()
    assert page.index("prefloop/retry.js") < page.index("prefloop/errors.js")  # retry.js marks what it handles first
    assert 'id="request-status"' in page
