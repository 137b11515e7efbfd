"""Headless Chromium labels a pair while the database is unreachable for the first two label POSTs (the server's
connection really cannot open the database; no mock), and while the browser is offline: the page says it is
retrying, sends the same request again, says "Saved", shows the next pair, and the label is stored exactly once.
A refused request (403) is not retried."""
from __future__ import annotations

import threading
import time

import pytest
from django.core.signals import request_finished, request_started

from annotate.models import Label
from tests.annotate.factories import make_pair, make_user
from tests.browser.test_labelling import _open_label_page, _press, _shown, _wait, browser  # noqa: F401 (fixture)
from tests.test_dbfaults import SUBMIT, break_database, restore_database

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# What the page sent and what it said, recorded in the page: every XHR with its body and CSRF header, and every
# text the connection status line showed.
RECORD = """
window.__sent = []; window.__said = [];
const open = XMLHttpRequest.prototype.open, send = XMLHttpRequest.prototype.send,
      header = XMLHttpRequest.prototype.setRequestHeader;
XMLHttpRequest.prototype.open = function (method, url) { this.__req = {method, url, csrf: null}; return open.apply(this, arguments); };
XMLHttpRequest.prototype.setRequestHeader = function (name, value) {
  if (name.toLowerCase() === 'x-csrftoken') this.__req.csrf = value; return header.apply(this, arguments); };
XMLHttpRequest.prototype.send = function (body) {
  window.__sent.push(Object.assign(this.__req, {body: String(body)})); return send.apply(this, arguments); };
const box = document.getElementById('connection-status');
new MutationObserver(() => { if (!box.hidden) window.__said.push(box.textContent); })
  .observe(box, {childList: true, characterData: true, subtree: true, attributes: true});
"""


class UnreachableForLabelPosts:
    """Makes the database unreachable for the first `count` label POSTs the live server handles, from the start of
    the request (so the session load fails, as after a database restart) to its end."""

    def __init__(self, count: int):
        self.left, self.seen, self.local = count, 0, threading.local()

    def started(self, sender, environ, **kwargs):
        if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"] == SUBMIT:
            self.seen += 1
            if self.left > 0:
                self.left -= 1
                self.local.saved = break_database()

    def finished(self, sender, **kwargs):
        saved = getattr(self.local, "saved", None)
        if saved is not None:
            self.local.saved = None
            restore_database(saved)


def _recorded_label_page(driver, live_server) -> dict:
    make_user("retry", password="pw-retry-123")
    for i in range(2):
        make_pair(text_a=f"first answer {i}", text_b=f"second answer {i}")
    _open_label_page(driver, live_server, "retry", "pw-retry-123")
    driver.execute_script(RECORD)
    return _shown(driver)


def _said(driver) -> list[str]:
    return driver.execute_script("return window.__said")


def _label_posts(driver) -> list[dict]:
    return [r for r in driver.execute_script("return window.__sent") if r["url"].endswith(SUBMIT)]


def test_label_survives_an_unreachable_database(browser, live_server):  # noqa: F811
    first = _recorded_label_page(browser, live_server)

    outage = UnreachableForLabelPosts(2)
    request_started.connect(outage.started)
    request_finished.connect(outage.finished)
    try:
        _press(browser, "1")
        _wait(browser, lambda d: _shown(d)["pair"] != first["pair"], timeout=30)
    finally:
        request_started.disconnect(outage.started)
        request_finished.disconnect(outage.finished)

    said = _said(browser)
    assert any("Connection lost: retrying… (attempt 1)" in s for s in said), said
    assert any("Connection lost: retrying… (attempt 2)" in s for s in said), said
    assert said[-1] == "Saved"
    _wait(browser, lambda d: not d.find_element("id", "connection-status").is_displayed())

    posts = _label_posts(browser)
    assert outage.seen == len(posts) == 3  # the first try and two retries, all reaching the server
    assert all(p == posts[0] for p in posts[1:]), posts  # the same body, CSRF token and all, each time
    assert "side=left" in posts[0]["body"] and "csrfmiddlewaretoken=" in posts[0]["body"] and posts[0]["csrf"]

    label = Label.objects.get()
    assert (str(label.pair_id), label.side) == (first["pair"], "left")
    assert label.pair.labels_done == 1


def test_label_survives_the_browser_going_offline(browser, live_server):  # noqa: F811
    first = _recorded_label_page(browser, live_server)
    browser.execute_cdp_cmd("Network.enable", {})
    offline = {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", dict(offline, offline=True))
    _press(browser, "2")
    _wait(browser, lambda d: any("(attempt 2)" in s for s in _said(d)))
    assert _shown(browser)["pair"] == first["pair"]  # the pair and the choice stay while the page retries
    assert not Label.objects.exists()
    _press(browser, "1")  # a second key press during the outage does not send a second label
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", dict(offline, offline=False))
    _wait(browser, lambda d: _shown(d)["pair"] != first["pair"], timeout=30)
    assert _said(browser)[-1] == "Saved"
    posts = _label_posts(browser)
    assert len(posts) >= 3 and all(p == posts[0] for p in posts[1:]), posts
    label = Label.objects.get()
    assert (str(label.pair_id), label.side) == (first["pair"], "right")


def test_a_refused_label_is_not_retried(browser, live_server):  # noqa: F811
    first = _recorded_label_page(browser, live_server)
    browser.delete_cookie("csrftoken")  # the server now refuses the POST with 403
    _press(browser, "1")
    _wait(browser, lambda d: any("HTTP 403" in s for s in _said(d)))
    time.sleep(2)  # longer than the first two back-off delays: no retry comes
    assert len(_label_posts(browser)) == 1
    assert _shown(browser)["pair"] == first["pair"]
    assert not any("retrying" in s for s in _said(browser))
    assert not Label.objects.exists()
