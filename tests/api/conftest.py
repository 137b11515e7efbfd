"""Fixtures of the API tests: tokens for people, a client on the live test server, raw HTTP for attacks."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

from api.tokens import create_token
from prefloop_client import Client


@dataclass
class Answer:
    status: int
    body: dict | list | None
    headers: dict


def http(method: str, url: str, body: bytes | str | dict | None = None, headers: dict | None = None) -> Answer:
    """One raw HTTP request (no client library's help), the answer parsed when it is JSON."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    headers = dict(headers or {})
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, raw, got = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(), dict(exc.headers)
    parsed = json.loads(raw) if raw and "json" in got.get("Content-Type", "") else None
    return Answer(status, parsed, got)


@pytest.fixture
def token_for():
    def make(user, name: str = "test pipeline") -> str:
        return create_token(user, name)[1]
    return make


@pytest.fixture
def staff_api(live_server, staff, token_for) -> Client:
    return Client(live_server.url, token_for(staff))


@pytest.fixture
def annotator_api(live_server, annotator, token_for) -> Client:
    return Client(live_server.url, token_for(annotator))


@pytest.fixture
def eager_tasks():
    """Queued tasks run at once in the web process (as PREFLOOP_TASKS_EAGER=1 does), so no message is left in the
    broker folder for a later worker to pick up."""
    from prefloop.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before
