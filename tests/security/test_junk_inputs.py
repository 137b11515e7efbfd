"""Junk in every parameter of every URL, as staff and as an annotator, gives a page or a clear refusal, never a 500:
ids negative, zero, past 32 and 64 bits, thousands of digits, not numbers, non-finite; text with NUL bytes and lone
surrogates; GET and POST, plain and htmx. URLs and parameter names come from the URL configuration, the project's
forms, the views' source and the pages (tests/security/urlwalk.py), so new pages are walked without listing them.
Runs on SQLite and, in the PostgreSQL pass, on PostgreSQL (which refuses NUL in text and checks integer ranges)."""
from __future__ import annotations

from urllib.parse import quote

import pytest
from django.test import Client

from annotate.models import Label, LabellingRound
from generation.models import GenerationJob, ModelVersion, Prompt
from loop.models import LoopRun
from tests.annotate.factories import make_pair, make_user
from tests.compare.conftest import make_job, make_version
from training.models import TrainingRun

from .urlwalk import JUNK, all_urls, encode, page_inputs, source_names

pytestmark = pytest.mark.django_db


def _world() -> list[int]:
    """A little of everything, so pages with objects render: versions, prompts, pairs, labels, jobs, runs, sets."""
    base = make_version("junk-base")
    current = make_version("junk-current", parent=base, is_current=True)
    round_ = LabellingRound.objects.create(number=1, gold_rate=0.0)
    prompt = Prompt.objects.create(text="junk walk prompt", split=Prompt.TRAIN)
    Prompt.objects.create(text="junk walk eval prompt", split=Prompt.EVAL)
    labelled = make_pair(prompt, round=round_)
    make_pair(round=round_)
    make_pair(round=round_, is_gold=True, gold_choice="a")
    labeller = make_user("junk-labeller")
    Label.objects.create(pair=labelled, annotator=labeller, choice="a", side="left", left_is_a=True)
    job = GenerationJob.objects.create(version=current, status=GenerationJob.FAILED, total=1)
    run = TrainingRun.objects.create(input_version=base, reference_version=base, status=TrainingRun.FAILED)
    blind, side_by_side = make_job(base, current), make_job(base, current, blind=False)
    loop = LoopRun.objects.create(judge="judges.rules:length_target", status=LoopRun.FAILED)
    objects = [base, current, round_, prompt, labelled, job, run, blind, side_by_side, loop,
               *blind.comparisons.all(), *ModelVersion.objects.all()]
    return sorted({o.pk for o in objects})


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _request(client, method: str, path: str, fields: dict[str, str], htmx: bool):
    headers = {"HX-Request": "true"} if htmx else {}
    body = encode(fields)
    if method == "GET":
        return client.get(f"{path}?{body}" if body else path, headers=headers)
    return client.post(path, data=body, content_type="application/x-www-form-urlencoded", headers=headers)


def _names_and_defaults(client, url) -> tuple[set[str], dict[str, str]]:
    """The parameter names a page shows (form fields, query names in its links) and its form's default values."""
    try:
        response = client.get(url.path)
    except Exception:  # the plain GET failing is reported by the walk itself
        return set(), {}
    if response.streaming or "html" not in response.get("Content-Type", ""):
        return set(), {}
    found = page_inputs(response.content.decode(errors="replace"))
    found.names.discard("csrfmiddlewaretoken")
    defaults = {k: quote(v) for k, v in found.values.items() if k != "csrfmiddlewaretoken"}
    return found.names, defaults


def _walk(user, pks: list[int]) -> list[str]:
    """Each pattern's paths with junk arguments get a bare GET and POST; one path of each pattern with a real (or
    no) argument gets junk in every parameter: all names at once, then one name at a time, the page's other fields
    filled as the page fills them."""
    client = _client(user)
    urls = all_urls([str(pk) for pk in pks])
    names = source_names()
    failures: list[str] = []

    def attempt(method, url, fields, htmx, what):
        try:
            response = _request(client, method, url.path, fields, htmx)
        except Exception as exc:  # the test client re-raises what would have been a 500
            failures.append(f"{method} {url.path} ({url.name}) {what}: {type(exc).__name__}: {str(exc)[:200]}")
            client.force_login(user)
            return None
        if response.status_code >= 500:
            failures.append(f"{method} {url.path} ({url.name}) {what}: {response.status_code}")
        if "logout" in url.name:
            client.force_login(user)
        return response

    walked: set[str] = set()
    for url in urls:
        if url.junk_path:
            for method in ("GET", "POST"):
                attempt(method, url, {}, False, "no parameters")
            continue
        if url.pattern in walked:  # one path per pattern gets the parameter junk: a row that exists if any
            continue
        response = attempt("GET", url, {}, False, "no parameters")
        if response is None or (response.status_code == 404 and url.pattern != url.path):
            continue
        walked.add(url.pattern)
        shown, defaults = _names_and_defaults(client, url)
        ours = not url.path.startswith("/admin/")  # Django's admin: junk in every name at once is enough
        for method in ("GET", "POST"):
            for htmx in (False, True) if ours else (False,):
                for label, junk in JUNK.items():
                    # every name at once: the view meets junk in whatever it reads first
                    attempt(method, url, dict.fromkeys(sorted(names | shown), junk), htmx, f"all={label}")
            if not ours:
                continue
            for name in sorted(shown):
                for label, junk in JUNK.items():
                    attempt(method, url, {**defaults, name: junk}, False, f"{name}={label}")
    return failures


@pytest.fixture
def world(db, settings) -> list[int]:
    # Passwords are checked by the sign-in and password pages on every junk request: a fast hasher for the walk.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return _world()


@pytest.mark.slow
def test_junk_in_every_parameter_of_every_url_gives_no_server_error_to_staff(world, staff):
    failures = _walk(staff, world)
    assert failures == [], "\n".join(failures[:40])


@pytest.mark.slow
def test_junk_in_every_parameter_of_every_url_gives_no_server_error_to_annotators(world, annotator):
    failures = _walk(annotator, world)
    assert failures == [], "\n".join(failures[:40])


def test_an_admin_bulk_action_on_a_non_numeric_id_is_refused_not_a_500(django_user_model):
    """The attack: POST an admin action with `_selected_action=abc`; the admin filtered on it and raised (500)."""
    boss = django_user_model.objects.create_superuser("junk-boss", password=None)
    base = make_version("junk-admin-base")
    run = TrainingRun.objects.create(input_version=base, reference_version=base, status=TrainingRun.QUEUED)
    client = Client(raise_request_exception=False)
    client.force_login(boss)
    for path, action in (("/admin/training/trainingrun/", "cancel_runs"), ("/admin/generation/modelversion/",
                                                                            "make_current")):
        got = client.post(path, {"action": action, "_selected_action": ["abc"], "index": "0"})
        assert got.status_code == 400 and b"is not the id of a row" in got.content
    run.refresh_from_db()
    assert run.status == TrainingRun.QUEUED
    got = client.post("/admin/training/trainingrun/", {"action": "cancel_runs", "_selected_action": [str(run.pk)],
                                                       "index": "0"})
    assert got.status_code == 302  # a real id still works


def test_a_refused_vote_quoting_what_was_posted_is_text_not_html(staff):
    """The attack: a vote whose side is markup; the refusal quoted it back in an HTML response."""
    base, current = make_version("junk-vote-a"), make_version("junk-vote-b")
    job = make_job(base, current)
    comparison = job.comparisons.first()
    client = Client()
    client.force_login(staff)
    got = client.post(f"/compare/comparisons/{comparison.pk}/vote/", {"side": '<script>alert(1)</script>"><img>'})
    assert got.status_code == 400 and got["Content-Type"].startswith("text/plain")
    assert not comparison.votes.exists()
