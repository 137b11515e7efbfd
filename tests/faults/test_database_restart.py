"""Restart PostgreSQL while an annotator labels (services pass only): no label is lost or doubled. The app runs in
gunicorn, as in production, and the annotator is an HTTP client. A restart between two requests costs no request
(kept connections are health-checked); a request during the outage fails, and the same POST sent again, as the page
does, records the label once."""
from __future__ import annotations

import http.cookiejar
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from .conftest import ROOT, database_url, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_cluster(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (the services pass)")
    cluster = os.environ.get("PREFLOOP_PG_CLUSTER", "").split()
    if len(cluster) != 2:
        pytest.skip("PREFLOOP_PG_CLUSTER (\"VERSION NAME\", printed by scripts/services.sh) is not set")
    yield cluster
    pg_ctl(cluster, "start", check=False)
    wait_until_accepting()
    connection.close()  # this process's own connection died with the server; the flush after the test reconnects


@pytest.fixture
def web(pg_cluster, tmp_path):
    """gunicorn serving the app on the test database, at http://127.0.0.1:PORT."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, DATABASE_URL=database_url(), PREFLOOP_DATA_DIR=str(tmp_path / "data"),
               DJANGO_SETTINGS_MODULE="prefloop.settings", ALLOWED_HOSTS="127.0.0.1",
               DJANGO_SECRET_KEY=settings.SECRET_KEY)  # the same key, so the session made here is valid there
    log = open(tmp_path / "gunicorn.log", "w")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    proc = subprocess.Popen([str(gunicorn), "prefloop.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "1",
                             "--timeout", "60"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            urllib.request.urlopen(url + "/accounts/login/", timeout=2)
            return True
        except (OSError, urllib.error.URLError):
            return proc.poll() is not None
    wait_for(up, 60, "gunicorn to answer")
    assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def pg_ctl(cluster: list[str], action: str, *extra: str, check: bool = True) -> None:
    subprocess.run(["pg_ctlcluster", *cluster, action, *extra], check=check, capture_output=True, timeout=120)


def wait_until_accepting(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode != 0:
        assert time.monotonic() < deadline, "PostgreSQL did not come back"
        time.sleep(0.2)


class Annotator:
    """The label page's side of the conversation over HTTP: read the pair from the page, post the key with the CSRF
    token, and send a request again when the server answers with an error."""

    def __init__(self, base_url: str, user):
        self.base_url, self.failed_requests = base_url, 0
        client = Client()
        client.force_login(user)  # a session row in the database the server reads
        jar = http.cookiejar.CookieJar()
        jar.set_cookie(http.cookiejar.Cookie(
            0, "sessionid", client.cookies["sessionid"].value, None, False, "127.0.0.1", True, False, "/", True,
            False, None, False, None, None, {}))
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        self.token = ""

    def _send(self, path: str, data: dict | None = None) -> str:
        for _ in range(120):
            body = urllib.parse.urlencode(dict(data, csrfmiddlewaretoken=self.token)).encode() if data else None
            try:
                with self.opener.open(self.base_url + path, data=body, timeout=30) as response:
                    return response.read().decode()
            except urllib.error.HTTPError as err:
                if err.code < 500:
                    raise
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            self.failed_requests += 1
            time.sleep(0.25)
        pytest.fail("the server never answered again after the database restart")

    def current_pair(self) -> int:
        """The lease the label page names for the pair on screen (it never shows the pair's id)."""
        page = self._send("/annotate/")
        self.token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        found = re.search(r'name="lease" value="(\d+)"', page)
        assert found, f"the label page shows no pair: {page[-1500:]}"
        return int(found.group(1))

    def label(self, lease: int) -> None:
        self._send("/annotate/submit/", {"lease": lease, "side": "left"})


def test_no_label_lost_when_postgresql_restarts(web, pg_cluster, annotator):
    from annotate.models import Assignment, Label, Pair
    from tests.annotate.factories import make_pairs, make_round

    round_ = make_round(number=1)
    pairs = make_pairs(8, round=round_)
    person = Annotator(web, annotator)
    labelled: list[int] = []

    for _ in range(2):
        labelled.append(pair := person.current_pair())
        person.label(pair)

    # A restart between two requests: the next request finds the connection dead, opens a new one, succeeds.
    pg_ctl(pg_cluster, "restart", "-m", "fast")
    wait_until_accepting()
    labelled.append(pair := person.current_pair())
    person.label(pair)
    assert person.failed_requests == 0

    # A restart during the requests: some fail while the server is down, and are sent again.
    def outage():
        pg_ctl(pg_cluster, "stop", "-m", "immediate")
        time.sleep(1.5)
        pg_ctl(pg_cluster, "start")

    restart = threading.Thread(target=outage)
    pair = person.current_pair()
    restart.start()
    while len(labelled) < len(pairs):
        labelled.append(pair)
        person.label(pair)
        if len(labelled) < len(pairs):
            pair = person.current_pair()
    restart.join()
    wait_until_accepting()
    assert person.failed_requests > 0, "no request met the outage: the test did not test it"

    connection.close()  # this process's own connection died with the server
    labelled = [Assignment.objects.get(pk=lease).pair_id for lease in labelled]  # the page names leases
    assert sorted(labelled) == sorted(p.pk for p in pairs)
    labels = Label.objects.filter(annotator=annotator)
    assert sorted(labels.values_list("pair_id", flat=True)) == sorted(labelled)
    assert all(p.labels_done == 1 for p in Pair.objects.filter(pk__in=labelled))
