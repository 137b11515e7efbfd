"""Who may do what through the API, over real HTTP: tokens (revoked, unknown, of a disabled account), annotators
against staff work, session requests and CSRF, the account page and the admin that make and revoke tokens."""
from __future__ import annotations

import re

import pytest
from django.test import Client as PageClient

from api.models import ApiToken
from api.tokens import digest
from generation.models import ModelVersion
from prefloop_client import APIError, Client
from tests.annotate.factories import make_pair
from training.models import TrainingRun

from .conftest import http

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_revoked_token_is_refused(live_server, staff, token_for):
    token = token_for(staff)
    api = Client(live_server.url, token)
    assert api.versions() == []
    page = PageClient()
    page.force_login(staff)
    row = ApiToken.objects.get(digest=digest(token))
    assert page.post("/account/tokens/revoke/", {"token": row.pk}).status_code == 302
    with pytest.raises(APIError) as refused:
        api.versions()
    assert refused.value.status == 401 and "revoked" in refused.value.detail


def test_unknown_malformed_or_disabled_tokens_and_no_token_get_401_json(live_server, staff, token_for):
    url = f"{live_server.url}/api/v1/versions"
    token = token_for(staff)
    for headers in ({}, {"Authorization": "Bearer pfl_" + "x" * 43}, {"Authorization": "Bearer " + token[:-1]},
                    {"Authorization": "Token " + token}, {"Authorization": "Bearer"}, {"Authorization": "x" * 5000}):
        answer = http("GET", url, headers=headers)
        assert answer.status == 401 and answer.body["detail"], headers
    staff.is_active = False
    staff.save()
    assert http("GET", url, headers={"Authorization": f"Bearer {token}"}).status == 401


def test_only_a_digest_is_stored_and_the_token_is_shown_once(annotator):
    page = PageClient()
    page.force_login(annotator)
    made = page.post("/account/tokens/", {"name": "my front end", "password": "pw-ann-123"})
    token = made.context["new_token"]
    assert token.startswith("pfl_") and token in made.content.decode()
    assert "no-store" in made["Cache-Control"]  # no cache keeps the one copy of the token
    row = ApiToken.objects.get(user=annotator)
    assert token not in (row.digest, row.prefix) and row.digest == digest(token)
    assert token not in page.get("/account/tokens/").content.decode()


def test_people_revoke_only_their_own_tokens(live_server, staff, annotator, token_for):
    token = token_for(staff)
    page = PageClient()
    page.force_login(annotator)
    assert page.post("/account/tokens/revoke/", {"token": ApiToken.objects.get().pk}).status_code == 404
    assert Client(live_server.url, token).versions() == []


def test_the_admin_makes_and_revokes_tokens(live_server, staff, annotator):
    page = PageClient()
    page.force_login(staff)
    made = page.post("/admin/api/apitoken/add/", {"user": annotator.pk, "name": "for Ann", "password": "pw-staff-123"})
    token = made.context["new_token"]
    api = Client(live_server.url, token)
    assert api.get("/label/progress")["done"] == 0
    row = ApiToken.objects.get(user=annotator)
    page.post("/admin/api/apitoken/", {"action": "revoke", "_selected_action": [row.pk]})
    with pytest.raises(APIError):
        api.get("/label/progress")


def test_an_annotator_token_cannot_start_jobs_or_manage(annotator_api, staff):
    base = ModelVersion.objects.create(name="base", path="/nonexistent", is_current=True)
    other = ModelVersion.objects.create(name="round-1", path="/nonexistent", parent=base, round=1)
    attempts = [
        lambda: annotator_api.start_generation(4),
        lambda: annotator_api.start_training(),
        lambda: annotator_api.start_compare(base.pk, other.pk),
        lambda: annotator_api.start_loop(1, 4, "judges.rules:length_target"),
        lambda: annotator_api.promote(other.pk),
        lambda: annotator_api.push_preferences([{"prompt": "p", "chosen": "c", "rejected": "r"}]),
        lambda: annotator_api.preferences(),
        lambda: annotator_api.jobs("training"),
    ]
    for attempt in attempts:
        with pytest.raises(APIError) as refused:
            attempt()
        assert refused.value.status == 403 and "staff" in refused.value.detail
    assert not TrainingRun.objects.exists() and ModelVersion.objects.get(is_current=True) == base
    make_pair()
    assert annotator_api.next_pair()["lease"]  # what annotators do, they may


def _session(user) -> tuple[dict, str]:
    page = PageClient()
    page.force_login(user)
    page.get("/account/tokens/")  # sets the CSRF cookie
    cookies = "; ".join(f"{k}={v.value}" for k, v in page.cookies.items())
    return {"Cookie": cookies}, page.cookies["csrftoken"].value


def test_session_writes_need_the_csrf_token_and_token_writes_do_not(live_server, staff, token_for):
    base = ModelVersion.objects.create(name="base", path="/nonexistent")
    url = f"{live_server.url}/api/v1/versions/{base.pk}/promote"
    cookie, csrf = _session(staff)
    assert http("GET", f"{live_server.url}/api/v1/versions", headers=cookie).status == 200  # reads need no token
    # The attack: a page elsewhere makes the signed-in browser post, with its cookie but without the CSRF token.
    forged = http("POST", url, b"", headers={**cookie, "Origin": "https://evil.example"})
    assert forged.status == 403 and "CSRF" in forged.body["detail"]
    assert not ModelVersion.objects.get().is_current
    allowed = http("POST", url, b"", headers={**cookie, "X-CSRFToken": csrf, "Referer": live_server.url + "/"})
    assert allowed.status == 200 and ModelVersion.objects.get().is_current
    base.is_current = False
    base.save()
    assert http("POST", url, b"", headers={"Authorization": f"Bearer {token_for(staff)}"}).status == 200


def test_a_bad_token_is_refused_even_beside_a_good_session(live_server, staff):
    cookie, _ = _session(staff)
    answer = http("GET", f"{live_server.url}/api/v1/versions", headers={**cookie, "Authorization": "Bearer pfl_bad"})
    assert answer.status == 401


def test_the_openapi_schema_validates_and_the_docs_page_is_served_from_the_app(live_server, staff):
    from openapi_spec_validator import validate

    cookie, _ = _session(staff)
    schema = http("GET", f"{live_server.url}/api/v1/openapi.json", headers=cookie)
    assert schema.status == 200
    validate(schema.body)
    paths = schema.body["paths"]
    for path in ("/api/v1/preferences", "/api/v1/versions", "/api/v1/jobs/training", "/api/v1/label/next",
                 "/api/v1/jobs/{kind}/{job_id}/cancel", "/api/v1/leaderboard", "/api/v1/rounds/{number}/metrics"):
        assert path in paths, path
    assert {"TokenAuth", "SessionAuth"} <= set(schema.body["components"]["securitySchemes"])
    docs = http("GET", f"{live_server.url}/api/v1/docs", headers=cookie)
    assert docs.status == 200
    html = http("GET", f"{live_server.url}/api/v1/docs", headers=cookie)
    page = PageClient()
    page.force_login(staff)
    text = page.get("/api/v1/docs").content.decode()
    # every script and style sheet from the app itself (the page's CSRF token is random text, so look at the links)
    linked = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert linked and all(url.startswith("/") and not url.startswith("//") for url in linked), linked
    assert "/static/ninja/swagger-ui-bundle.js" in linked
    assert "script-src 'self'" in html.headers["Content-Security-Policy"]
    for asset in ("swagger-ui-bundle.js", "swagger-ui-init.js", "swagger-ui.css"):
        assert http("GET", f"{live_server.url}/static/ninja/{asset}").status == 200
    # Signed out, the schema and the docs are behind the sign-in like every page.
    for path in ("/api/v1/openapi.json", "/api/v1/docs"):
        assert PageClient().get(path, HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8").status_code == 302


def test_a_token_made_at_the_command_line_works_and_is_stored_as_a_digest(live_server, staff):
    import io

    from django.core.management import CommandError, call_command

    out = io.StringIO()
    call_command("create_token", staff.username, name="pipeline", stdout=out)
    token = out.getvalue().strip()
    assert token.startswith("pfl_") and ApiToken.objects.get(name="pipeline").digest == digest(token)
    assert Client(live_server.url, token).versions() == []
    with pytest.raises(CommandError, match="no account named 'nobody'"):
        call_command("create_token", "nobody")


def test_a_program_with_a_token_reads_the_schema_it_is_pointed_to(live_server, staff, token_for):
    """Every 404 says the operations are listed in /api/v1/openapi.json, and a token got the sign-in page there."""
    url = f"{live_server.url}/api/v1/openapi.json"
    schema = http("GET", url, headers={"Authorization": f"Bearer {token_for(staff)}"})
    assert schema.status == 200 and "/api/v1/versions" in schema.body["paths"]
    assert http("GET", url, headers={"Authorization": "Bearer pfl_" + "x" * 43}).status == 401
    # neither: a browser gets the sign-in page; a program gets the operations' JSON 401, as for a header that is
    # not 'Bearer <token>' (both were sent to the sign-in page, which a client following redirects read as a 200
    # HTML schema: found by an outside review)
    browser = PageClient().get("/api/v1/openapi.json", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert browser.status_code == 302 and "/accounts/login/" in browser["Location"]
    for headers in ({}, {"Authorization": "Token abc"}, {"Authorization": "Bearer"}, {"Accept": "application/json"}):
        answer = http("GET", url, headers=headers)
        assert answer.status == 401 and answer.body["detail"], (headers, answer.status)
    assert "'Bearer <token>'" in http("GET", url, headers={"Authorization": "Token abc"}).body["detail"]
