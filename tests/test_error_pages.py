"""The pages' refusals say what was wrong (prefloop/errors.py): an outside audit found every 404 reading "The
requested resource was not found on this server", Django's own 400s bare, and POST-only pages answering 405 with an
empty body."""
import pytest
from django.test import Client

from prefloop.errors import sentence

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(staff):
    client = Client()
    client.force_login(staff)
    return client


def _reason(response) -> str:
    import re

    found = re.search(r'<section class="card refusal" id="refusal">.*?<p>(.*?)</p>', response.content.decode(), re.S)
    return found.group(1).strip() if found else ""


def test_a_missing_thing_is_named_and_a_missing_page_names_its_path(signed_in):
    response = signed_in.get("/compare/sets/999999/")
    assert response.status_code == 404
    assert _reason(response).startswith("There is no comparison set 999999: it may have been deleted")
    response = signed_in.get("/no/such/page/")
    assert response.status_code == 404 and _reason(response) == "There is no page at /no/such/page/."


def test_a_deleted_round_is_named(signed_in):
    response = signed_in.get("/annotate/rounds/3/")
    assert response.status_code == 404 and _reason(response).startswith("There is no labelling round 3:")


def test_too_many_fields_and_a_broken_upload_say_so(signed_in, settings):
    fields = {f"f{i}": "1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 5)}
    response = signed_in.post("/annotate/submit/", fields)
    assert response.status_code == 400
    assert _reason(response).startswith("The form sent more fields than any page here takes")
    response = signed_in.post("/annotate/import/", data=b"x", content_type="multipart/form-data")
    assert response.status_code == 400 and _reason(response).startswith("The upload is not valid multipart/form-data")


def test_an_unknown_host_is_told_what_to_do():
    response = Client(HTTP_HOST="evil.example").get("/accounts/login/")
    assert response.status_code == 400 and "ALLOWED_HOSTS" in _reason(response)
    assert "evil.example" not in response.content.decode()


def test_the_api_says_why_too(staff, settings):
    from api.tokens import create_token

    fields = {f"f{i}": "1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 5)}
    response = Client().post("/api/v1/jobs/import", fields, HTTP_AUTHORIZATION=f"Bearer {create_token(staff, 't')[1]}")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("The form sent more fields")


def test_a_post_only_page_asked_with_get_says_which_method_it_takes(signed_in):
    response = signed_in.get("/annotate/submit/")
    assert response.status_code == 405
    assert response.content.decode() == "GET is not allowed on /annotate/submit/: this page takes POST only."


def test_a_refusal_whose_frame_cannot_be_drawn_still_says_its_sentence(staff, settings, tmp_path):
    """In production before collectstatic has run (no manifest of the static files), the frame of the page failed
    and the 404 and 400 became 500s (the shipped health probe met this: an unknown host name was answered 500)."""
    settings.STORAGES = {**settings.STORAGES, "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"}}
    settings.STATIC_ROOT = tmp_path / "staticfiles"  # empty: no manifest, whatever collectstatic wrote elsewhere
    settings.DEBUG = False
    client = Client(raise_request_exception=False)
    client.force_login(staff)
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert "<p>There is no page at /no/such/page/.</p>" in response.content.decode()
    assert 'id="refusal"' not in response.content.decode()  # the sentence alone, not the framed page
    response = client.get("/annotate/", HTTP_HOST="evil.example.org")
    assert response.status_code == 400 and "does not answer to the host name" in response.content.decode()


def test_a_message_made_a_sentence_keeps_its_names_as_written():
    # str.capitalize(), which the pages used, lowered the rest: "Pair 3 was given to alice before."
    assert sentence("pair 3 was given to Alice before") == "Pair 3 was given to Alice before."
    assert sentence("the KL budget was exceeded.") == "The KL budget was exceeded.", "one full stop"
