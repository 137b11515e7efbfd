"""Security properties, checked over every URL pattern that exists: login everywhere, staff-only pages and the admin
closed to annotators, no annotator sees another's labels, CSRF on every POST, a ceiling on uploads, and model output
escaped in every page. The sign-in lockout is tested in tests/security/test_login_lockout.py."""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from django.urls.exceptions import Resolver404
from django.urls.resolvers import RegexPattern

# Pages anyone may open: signing in and out (no password reset: PrefLoop sends no mail; staff set passwords).
PUBLIC = {"login", "logout", "admin:login", "admin:logout", "healthz", "favicon"}  # healthz: "ok" or what failed, no data
STAFF_PREFIXES = ("/admin/", "/generation/", "/training/")
# staff pages outside those folders
STAFF_NAMES = {"annotate:quality", "annotate:import", "annotate:export", "annotate:export_job", "annotate:export_cancel",
               "annotate:export_download"}
XSS = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(2)>"
MARK = "Zebra-7f3a"  # shows where model output was rendered at all


# ---- every URL, with sample arguments ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Url:
    path: str
    name: str  # "namespace:name", or the route for unnamed patterns


_ROUTE_ARG = re.compile(r"<(?:(?P<conv>\w+):)?(?P<name>\w+)>")
_REGEX_ARG = re.compile(r"\(\?P<(?P<name>\w+)>(?P<body>(?:[^()]|\([^()]*\))*)\)")


def _fill_route(route: str, value: int) -> str:
    samples = {"int": str(value), "str": str(value), "slug": f"s{value}", "path": str(value),
               "uuid": f"00000000-0000-0000-0000-{value:012d}"}
    return _ROUTE_ARG.sub(lambda m: samples.get(m["conv"] or "str", str(value)), route)


def _fill_regex(regex: str, value: int, app_labels: list[str]) -> str | None:
    failed = []

    def sample(m: re.Match) -> str:
        for candidate in (str(value), *app_labels, "x"):
            if re.fullmatch(m["body"], candidate):
                return candidate
        failed.append(m["name"])
        return ""

    filled = _REGEX_ARG.sub(sample, regex)
    if failed or re.search(r"[()\[\]*+?\\|]", filled.strip("^$")):
        return None
    return filled.strip("^").rstrip("$").replace("\\", "")


def all_urls(values: tuple[int, ...] = (1,)) -> tuple[list[Url], list[str]]:
    """Concrete paths for every URL pattern (one per sample value for patterns with arguments), and the patterns
    no path could be built for."""
    from django.apps import apps

    app_labels = [a.label for a in apps.get_app_configs()]
    urls: dict[str, Url] = {}
    unbuilt: list[str] = []

    def walk(patterns, prefixes: list, namespace: str) -> None:
        for p in patterns:
            here = [*prefixes, p.pattern]
            if isinstance(p, URLResolver):
                ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
                walk(p.url_patterns, here, ns)
                continue
            assert isinstance(p, URLPattern)
            name = f"{namespace}{p.name}" if p.name else "".join(str(x) for x in here)
            for value in values:
                parts = []
                for piece in here:
                    text = str(piece)
                    filled = _fill_regex(text, value, app_labels) if isinstance(piece, RegexPattern) else _fill_route(text, value)
                    if filled is None:
                        break
                    parts.append(filled.lstrip("^").rstrip("$"))
                else:
                    path = "/" + "".join(parts)
                    try:
                        resolve(path)
                    except Resolver404:
                        unbuilt.append(name)
                        continue
                    urls.setdefault(path, Url(path, name))
                    continue
                unbuilt.append(name)

    walk(get_resolver().url_patterns, [], "")
    return list(urls.values()), sorted(set(unbuilt))


def is_login_redirect(response) -> bool:
    if response.status_code not in (301, 302):
        return False
    target = urlsplit(response["Location"]).path
    return target in (settings.LOGIN_URL, reverse("admin:login"))


def test_every_project_pattern_is_covered():
    urls, unbuilt = all_urls()
    assert len(urls) > 20
    # Only admin patterns may be skipped (a regex no sample fits); every PrefLoop page is checked below.
    assert [n for n in unbuilt if not n.startswith("admin:")] == []
    names = {u.name for u in urls}
    assert {"home", "login", "admin:index", "generation:jobs", "training:runs", "annotate:label"} <= names


# ---- login everywhere ------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_anonymous_visitors_only_reach_the_login_pages():
    client = Client()
    leaks = []
    for url in all_urls()[0]:
        response = client.get(url.path)
        if url.name in PUBLIC:
            continue
        # The API answers a request without a token or session with 401 in JSON (tests/api/test_auth.py).
        api_refusal = url.path.startswith("/api/") and response.status_code == 401
        if not (is_login_redirect(response) or response.status_code == 405 or api_refusal):
            leaks.append(f"{url.path} ({url.name}): {response.status_code}")
    assert leaks == []
    assert client.get(reverse("login")).status_code == 200


# ---- staff-only pages ------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_annotators_cannot_reach_the_admin_generation_or_training(client, annotator):
    client.force_login(annotator)
    reached = []
    staff_urls = [u for u in all_urls()[0]
                  if (u.path.startswith(STAFF_PREFIXES) or u.name in STAFF_NAMES) and u.name not in PUBLIC]
    assert staff_urls
    for url in staff_urls:
        for method in (client.get, client.post):
            response = method(url.path)
            if response.status_code not in (403, 405) and not is_login_redirect(response):
                reached.append(f"{method.__name__.upper()} {url.path} ({url.name}): {response.status_code}")
    assert reached == []


@pytest.mark.django_db
def test_staff_reach_the_staff_pages_and_annotators_the_rest(client, staff, annotator):
    client.force_login(staff)
    for name in ("generation:jobs", "training:runs", "admin:index"):
        assert client.get(reverse(name)).status_code == 200, name
    client.force_login(annotator)
    for name in ("home", "annotate:label", "compare:index"):
        assert client.get(reverse(name)).status_code == 200, name


def _escaping_data(user):
    """A version, prompt, two responses (one with script payloads), a pair with a label, failed jobs and runs."""
    from annotate.models import Label, LabellingRound, Pair
    from generation.models import GenerationJob, ModelVersion, Prompt, Response
    from training.models import TrainingRun

    version = ModelVersion.objects.create(name=f"v-{MARK}", path="/nonexistent", is_current=True)
    prompt = Prompt.objects.create(text=f"{MARK} prompt {XSS} {XSS_IMG}")
    job = GenerationJob.objects.create(version=version, status=GenerationJob.FAILED, error=f"{MARK} {XSS}", total=1)
    a = Response.objects.create(prompt=prompt, version=version, job=job, sample_index=0, text=f"{MARK} {XSS} {XSS_IMG}")
    b = Response.objects.create(prompt=prompt, version=version, job=job, sample_index=1, text=f"**{MARK}** {XSS}")
    round_ = LabellingRound.objects.create(number=1, guidelines=f"{MARK} {XSS}")
    pair = Pair.objects.create(prompt=prompt, response_a=a, response_b=b, round=round_)
    label = Label.objects.create(pair=pair, annotator=user, choice="a", side="left", left_is_a=True,
                                 comment=f"{MARK} {XSS}")
    run = TrainingRun.objects.create(input_version=version, status=TrainingRun.FAILED, error=f"{MARK} {XSS}",
                                     log=f"{MARK} {XSS}\n")
    return [version.pk, prompt.pk, job.pk, a.pk, b.pk, round_.pk, pair.pk, label.pk, run.pk]


# ---- other annotators' labels ----------------------------------------------------------------------------------

@pytest.mark.django_db
def test_annotators_never_see_each_others_labels(client, annotator, django_user_model):
    other = django_user_model.objects.create_user("other-ann", password="pw-other-123")
    secret = "comment-only-other-ann-may-see"
    pks = _escaping_data(other)
    from annotate.models import Label

    Label.objects.filter(annotator=other).update(comment=secret)
    client.force_login(annotator)
    seen = []
    for url in all_urls(tuple(sorted(set(pks))))[0]:
        response = client.get(url.path)
        body = response.content if not response.streaming else b""
        if secret.encode() in body or b"other-ann" in body:
            seen.append(f"{url.path} ({url.name})")
    assert seen == []


# ---- model output is escaped -----------------------------------------------------------------------------------

@pytest.mark.django_db
def test_model_output_is_escaped_in_every_page(client, staff):
    pks = _escaping_data(staff)
    client.force_login(staff)
    unsafe, rendered = [], []
    for url in all_urls(tuple(sorted(set(pks))))[0]:
        response = client.get(url.path)
        if response.streaming or "html" not in response.get("Content-Type", ""):
            continue
        body = response.content.decode(errors="replace")
        if XSS in body or XSS_IMG in body:
            unsafe.append(f"{url.path} ({url.name})")
        if MARK in body:
            rendered.append(url.name)
    assert unsafe == []
    # The payloads were on screen somewhere (the admin lists at least), so the check above saw them.
    assert len(rendered) >= 3, rendered


# ---- CSRF -----------------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_every_post_without_a_csrf_token_is_refused(staff):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    accepted = []
    for url in all_urls()[0]:
        response = client.post(url.path, {"side": "left"})
        # An API operation that only reads answers a POST with 405 before anything runs; the API's writes are
        # refused with 403 here, the session having no CSRF token (tests/api/test_auth.py has the attack by HTTP).
        read_only_api = url.path.startswith("/api/") and response.status_code == 405
        if response.status_code != 403 and not read_only_api:
            accepted.append(f"{url.path} ({url.name}): {response.status_code}")
    assert accepted == []


@pytest.mark.django_db
def test_htmx_requests_carry_the_csrf_token_from_the_page(staff):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    page = client.get(reverse("home")).content.decode()
    token = re.search(r"hx-headers='\{\"X-CSRFToken\": \"([^\"]+)\"\}'", page)
    assert token, "base.html must give htmx the CSRF token"
    response = client.post(reverse("logout"), HTTP_X_CSRFTOKEN=token.group(1), HTTP_HX_REQUEST="true")
    assert response.status_code == 302


# ---- uploads -------------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_oversized_uploads_are_refused_before_they_are_read(client, staff, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.PREFLOOP_MAX_UPLOAD_BYTES = 10_000
    client.force_login(staff)
    big = SimpleUploadedFile("prompts.jsonl", b'{"prompt": "x"}\n' * 2000, content_type="application/json")
    response = client.post(reverse("annotate:import"), {"file": big})
    assert response.status_code == 413
    assert "PREFLOOP_MAX_UPLOAD_BYTES" in response.content.decode()
    small = SimpleUploadedFile("prompts.jsonl", b'{"prompt": "x"}\n', content_type="application/json")
    assert client.post(reverse("annotate:import"), {"file": small}).status_code != 413


UPLOAD = 6 * 2**20  # over Django's 5 MB body limit, under the 50 MiB upload limit


def _big_file(name="prompts.jsonl"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, b'{"prompt": "x"}\n' * (UPLOAD // 16), content_type="application/json")


@pytest.mark.django_db
def test_a_large_multipart_body_from_anyone_but_staff_is_refused_before_it_is_read(client, annotator, settings):
    """Every path took a multipart body of up to 50 MiB before sign-in, and the CSRF check read it (spooling it to
    disk) before the page sent an anonymous caller to the sign-in page: 45 MiB to /healthz, or to the Import page
    signed out, were written to a temporary file on each request. Only the two upload paths take more than an
    ordinary body now, and only from staff, refused before anything reads the body."""
    from django.test import Client

    anonymous = Client()
    for path in ("/healthz", "/accounts/login/", reverse("generation:jobs")):
        response = anonymous.post(path, {"file": _big_file()})
        assert response.status_code == 413 and "DATA_UPLOAD_MAX_MEMORY_SIZE" in response.content.decode(), path
    for who in (anonymous, client):
        if who is client:
            client.force_login(annotator)
        for path in (reverse("annotate:import"), "/api/v1/jobs/import"):
            response = who.post(path, {"file": _big_file(), "kind": "prompts"})
            assert response.status_code == 403 and "only from a signed-in staff member" in response.content.decode()
    from api.tokens import create_token

    _, token = create_token(annotator, "not staff")
    response = Client().post("/api/v1/jobs/import", {"file": _big_file(), "kind": "prompts"},
                             headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403


@pytest.mark.django_db
def test_staff_still_upload_a_file_larger_than_an_ordinary_body(client, staff, settings, tmp_path):
    from django.test import Client

    from annotate.models import ImportJob
    from api.tokens import create_token

    client.force_login(staff)
    response = client.post(reverse("annotate:import"), {"file": _big_file(), "kind": "prompts", "format": "auto",
                                                        "split": "train"})
    assert response.status_code == 302 and ImportJob.objects.count() == 1
    _, token = create_token(staff, "pipeline")
    response = Client().post("/api/v1/jobs/import", {"file": _big_file(), "kind": "prompts"},
                             headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201 and ImportJob.objects.count() == 2


@pytest.mark.django_db
def test_oversized_form_fields_are_refused(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = client.post(reverse("login"), {"username": "x" * 5000, "password": "y"})  # multipart, as a browser may
    assert response.status_code == 413  # refused on its declared length, before anything reads it


@pytest.mark.django_db
def test_a_json_body_over_its_limit_is_told_that_limit_not_the_uploads(client):
    """A 6 MiB push was told "over the size limit" with no number, and a 60 MiB one "the limit is 50 MiB", the
    file upload's limit: a JSON body's is 5 MiB."""
    for size in (6, 60):
        body = b'{"rows": ["' + b"x" * (size * 2**20) + b'"]}'
        response = client.post("/api/v1/prompts", body, content_type="application/json")
        assert response.status_code == 413
        detail = response.json()["detail"]
        assert "the limit is 5 MiB (DATA_UPLOAD_MAX_MEMORY_SIZE)" in detail and "smaller batches" in detail
