"""An unreachable database (the connection really pointed at a database that cannot be opened, not a mock) answers
503 with Retry-After and a plain message, wherever in the request it is met; the label is not stored by the failed
request and is stored once when the page sends the same POST again."""
from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotate.models import Assignment, Label, Pair
from prefloop import dbfaults
from tests.annotate.factories import make_pair, make_user, shown_lease, shown_pair

pytestmark = pytest.mark.django_db(transaction=True)

SUBMIT = "/annotate/submit/"
_UNOPENABLE = Path(tempfile.gettempdir()) / "prefloop-unreachable" / "db.sqlite3"
HTMX = {"HTTP_HX_REQUEST": "true"}


def break_database() -> dict:
    """Point the connections at a database that cannot be opened (a folder for SQLite, a closed port otherwise) and
    close this thread's connection: its next query fails in the driver with OperationalError. Returns what
    restore_database() needs."""
    conf = connection.settings_dict  # shared by every thread's connection to this alias
    saved = {key: conf.get(key) for key in ("NAME", "HOST", "PORT")}
    connection.close()
    if connection.vendor == "sqlite":
        _UNOPENABLE.mkdir(parents=True, exist_ok=True)
        conf["NAME"] = str(_UNOPENABLE)  # a folder: sqlite3 cannot open it as a database file
    else:
        conf["HOST"], conf["PORT"] = "127.0.0.1", "1"
    return saved


def restore_database(saved: dict) -> None:
    connection.settings_dict.update(saved)
    connection.close()  # the next query opens a connection to the real database


@contextmanager
def database_unreachable():
    saved = break_database()
    try:
        yield
    finally:
        restore_database(saved)


class BreakDatabaseInView:
    """Test middleware, listed last: once the session and user are loaded, the database goes away for the view of
    a label POST, so the OperationalError comes from the label view itself."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        saved = None
        if request.method == "POST" and request.path == SUBMIT:
            request.user.is_authenticated  # noqa: B018 (loads the user while the database is still there)
            saved = break_database()
        try:
            return self.get_response(request)
        finally:
            if saved is not None:
                restore_database(saved)


@pytest.fixture
def labeller():
    person = make_user("labeller")
    pair = make_pair()
    client = Client()
    client.force_login(person)
    page = client.get(reverse("annotate:label"))
    assert page.status_code == 200 and shown_pair(page.content.decode()) == pair.pk
    pair.lease = shown_lease(page.content.decode())  # read now: the tests post it while the database is down
    # shown 10 s ago, so the 2.5 s the page measured stands (a label's time is kept within the lease's)
    Assignment.objects.filter(annotator=person).update(leased_at=timezone.now() - timedelta(seconds=10))
    return client, person, pair


def _same_session(client: Client, **options) -> Client:
    """A client on the same session that loads MIDDLEWARE afresh (a client keeps the chain of its first request)."""
    other = Client(**options)
    other.cookies = client.cookies
    return other


def _label(client: Client, pair: Pair, **extra):
    return client.post(SUBMIT, {"lease": pair.lease, "side": "left", "seconds": "2.5"}, **(extra or HTMX))


def _assert_unavailable(response, content_type: str = "text/plain") -> None:
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response["Content-Type"].startswith(content_type)
    assert dbfaults.MESSAGE in response.content.decode()


def test_database_down_at_the_session_load_answers_503_and_the_retry_stores_the_label_once(labeller, caplog):
    client, person, pair = labeller
    with caplog.at_level(logging.WARNING, logger="prefloop.dbfaults"), database_unreachable():
        response = _label(client, pair)
    _assert_unavailable(response)
    assert response.content.decode() == dbfaults.MESSAGE
    assert any(SUBMIT in r.getMessage() and "OperationalError" in r.getMessage() for r in caplog.records)
    assert not Label.objects.exists()

    for _ in range(2):  # the page's retry, and one more as if its answer were lost too
        assert _label(client, pair).status_code == 200
    label = Label.objects.get()
    assert (label.pair_id, label.annotator, label.side, label.seconds) == (pair.pk, person, "left", 2.5)
    assert Pair.objects.get(pk=pair.pk).labels_done == 1


def test_database_down_inside_the_label_view_answers_503(labeller, settings):
    client, person, pair = labeller
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.test_dbfaults.BreakDatabaseInView"]
    _assert_unavailable(_label(_same_session(client), pair))
    assert not Label.objects.exists()

    settings.MIDDLEWARE = settings.MIDDLEWARE[:-1]
    assert _label(client, pair).status_code == 200  # the page's retry, on the same session
    assert Label.objects.filter(pair=pair, annotator=person).count() == 1


def test_a_browser_without_htmx_gets_the_message_as_a_page(labeller):
    client, _, pair = labeller
    with database_unreachable():
        response = _label(client, pair, HTTP_ACCEPT="text/html,application/xhtml+xml")
    _assert_unavailable(response, "text/html")
    assert response.content.decode().startswith("<!doctype html>")


def test_other_errors_are_not_taken_for_a_database_fault(rf):
    middleware = dbfaults.DatabaseFaultMiddleware(lambda request: None)
    request = rf.post(SUBMIT)
    assert middleware.process_exception(request, ValueError("a bug")) is None
    assert middleware.process_exception(request, KeyError("pair")) is None
