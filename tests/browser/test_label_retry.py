"""Headless Chromium labels a pair while the database is unreachable for the first two label POSTs (the server's
connection really cannot open the database; no mock), and while the browser is offline: the page says it is
retrying, sends the same request again, says "Saved", shows the next pair, and the label is stored exactly once.
A refused request (403) is not retried. One outage shows one status line: errors.js's "could not reach the server" for
another request gives way to the retry's line, and a key pressed during the retry is refused on that line; the
server's own message about something else stays beside it."""
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
    # saved, and the page says the second key did not count
    assert _said(browser)[-1] == "Saved. A key pressed meanwhile was not taken: look at the pair shown and press again."
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


# Every status line showing at each change of one of them, as "id: text": the page should show one at a time for one
# outage. (A MutationObserver runs after the script that changed the lines, so it sees each change whole.)
LINES = """
window.__lines = [];
const ids = ['connection-status', 'request-status', 'press-status'];
const showing = () => ids.map(id => document.getElementById(id)).filter(b => b && !b.hidden && b.textContent)
  .map(b => b.id + ': ' + b.textContent);
const watch = new MutationObserver(() => window.__lines.push(showing()));
ids.forEach(id => watch.observe(document.getElementById(id),
  {childList: true, characterData: true, subtree: true, attributes: true}));
window.__failed = [];
document.addEventListener('htmx:afterRequest', e => {
  if (!e.detail.successful) window.__failed.push(e.detail.pathInfo.requestPath); });
"""
# A part of the page updated by a GET of its own (as a poll would be), sent once by a click.
ELSEWHERE = """
const probe = document.createElement('div');
probe.setAttribute('hx-get', arguments[0]);
probe.setAttribute('hx-trigger', 'click');
probe.setAttribute('hx-swap', 'none');
document.querySelector('main').append(probe);
htmx.process(probe);
probe.click();
"""
OFFLINE = {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}


def _offline(driver, offline: bool) -> None:
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", dict(OFFLINE, offline=offline))


def _lines(driver) -> list[list[str]]:
    return driver.execute_script("return window.__lines")


def _line(driver, name: str) -> str:
    return driver.execute_script(
        "const b = document.getElementById(arguments[0]); return b && !b.hidden ? b.textContent : ''", name)


def _get_elsewhere(driver, path: str) -> None:
    """Sends a GET from another part of the page and waits until it has failed (and errors.js has had it)."""
    failed = len(driver.execute_script("return window.__failed"))
    driver.execute_script(ELSEWHERE, path)
    _wait(driver, lambda d: len(d.execute_script("return window.__failed")) > failed)


def test_one_outage_shows_one_status_line(browser, live_server):  # noqa: F811
    first = _recorded_label_page(browser, live_server)
    browser.execute_script(LINES)
    _offline(browser, True)
    _press(browser, "s")  # a skip is not retried: the page says the server could not be reached
    _wait(browser, lambda d: _line(d, "request-status").startswith("Could not reach the server"))

    _press(browser, "1")  # the label is kept and retried: its line is newer, and says the same outage
    _wait(browser, lambda d: any("(attempt 1)" in s for s in _said(d)))
    assert _line(browser, "request-status") == ""
    _get_elsewhere(browser, "/annotate/skipped/")  # another request fails during the retry: nothing more to say
    assert _line(browser, "request-status") == ""
    assert "Connection lost: retrying…" in _line(browser, "connection-status")

    _offline(browser, False)
    _wait(browser, lambda d: _shown(d)["pair"] != first["pair"], timeout=30)
    assert _said(browser)[-1] == "Saved"
    label = Label.objects.get()
    assert (str(label.pair_id), label.side) == (first["pair"], "left")

    _offline(browser, True)  # lost again: the newer line says so, and "Saved" (if still shown) goes
    _get_elsewhere(browser, "/annotate/skipped/")
    assert _line(browser, "request-status").startswith("Could not reach the server")
    assert _line(browser, "connection-status") == ""
    assert [lines for lines in _lines(browser) if len(lines) > 1] == []


def test_a_server_message_stays_beside_the_retry_line(browser, live_server):  # noqa: F811
    first = _recorded_label_page(browser, live_server)
    browser.execute_script(LINES)
    _get_elsewhere(browser, "/annotate/no-such-page/")  # the server answers: its message says something else
    refused = _line(browser, "request-status")
    assert refused.endswith("(HTTP 404)")

    _offline(browser, True)
    _press(browser, "2")
    _wait(browser, lambda d: any("(attempt 1)" in s for s in _said(d)))
    assert _line(browser, "request-status") == refused  # still there: the retry's line does not say it
    _offline(browser, False)
    _wait(browser, lambda d: _shown(d)["pair"] != first["pair"], timeout=30)
    assert str(Label.objects.get().pair_id) == first["pair"]


class SlowlyUnreachable(UnreachableForLabelPosts):
    """As UnreachableForLabelPosts, each failing POST first taking `seconds` (the database still there meanwhile),
    so that a retry is on its way for a while."""

    def __init__(self, count: int, seconds: float):
        super().__init__(count)
        self.seconds = seconds

    def started(self, sender, environ, **kwargs):
        if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"] == SUBMIT and self.left > 0:
            time.sleep(self.seconds)
        super().started(sender, environ, **kwargs)


def test_a_key_pressed_while_a_retry_is_on_its_way_is_refused_on_the_retry_line(browser, live_server):  # noqa: F811
    first = _recorded_label_page(browser, live_server)
    browser.execute_script(LINES)
    outage = SlowlyUnreachable(2, seconds=1.5)
    request_started.connect(outage.started)
    request_finished.connect(outage.finished)
    try:
        _press(browser, "1")
        _wait(browser, lambda d: any("(attempt 1)" in s for s in _said(d)))
        # A key pressed while the retry's request is on its way (read and pressed in one script).
        _wait(browser, lambda d: d.execute_script("""
            if (!document.body.classList.contains('htmx-request')) return false;
            document.dispatchEvent(new KeyboardEvent('keydown', {key: '2', bubbles: true}));
            return true;"""))
        assert _line(browser, "press-status") == ""
        assert _line(browser, "connection-status").startswith("Still sending your last label: retrying…")
        assert not browser.find_elements("css selector", '#label-form button[value="right"].pressed')
        _wait(browser, lambda d: _shown(d)["pair"] != first["pair"], timeout=30)
        # the refusal is still said after the retry's later messages and its end, until the next press
        time.sleep(2.5)  # longer than "Saved" alone is shown
        said = _line(browser, "connection-status")
        assert said.startswith("Saved.") and "A key pressed meanwhile was not taken" in said, said
    finally:
        request_started.disconnect(outage.started)
        request_finished.disconnect(outage.finished)
    label = Label.objects.get()
    assert (str(label.pair_id), label.side) == (first["pair"], "left")
    assert [lines for lines in _lines(browser) if len(lines) > 1] == []
    _press(browser, "2")  # the next label: the line about the last one goes
    _wait(browser, lambda d: Label.objects.count() == 2)
    assert _line(browser, "connection-status") == ""
