"""Headless Chromium meets the ways an htmx request fails: a label pressed after signing out in another tab moves the
whole page to the sign-in page, which says the label was not saved and signs back in to the label page (no login page
inside the label area); a job deleted while its row polls stops being polled and says so; a refused vote and a stale
page (its CSRF token changed in another tab) say so in the status line, as text."""
from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from annotate.models import Label
from compare.models import Vote
from generation.models import GenerationJob, ModelVersion
from prefloop.htmx import STALE_PAGE
from tests.annotate.factories import make_pair, make_user
from tests.browser.test_labelling import _open_label_page, _press, _shown, _sign_in, _wait, browser  # noqa: F401
from tests.compare.conftest import make_job, versions  # noqa: F401  (the fixture)
from training.models import TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Every XHR the page sends, by URL.
RECORD = """
window.__sent = [];
const open = XMLHttpRequest.prototype.open;
XMLHttpRequest.prototype.open = function (method, url) { window.__sent.push(method + ' ' + url); return open.apply(this, arguments); };
"""


def _status(driver) -> str:
    """The status line's text when it shows, else ''."""
    return driver.execute_script(
        "const b = document.getElementById('request-status'); return b && !b.hidden ? b.textContent : ''")


def test_a_label_pressed_after_signing_out_in_another_tab_is_not_lost_silently(browser, live_server):  # noqa: F811
    make_user("gone", password="pw-gone-123")
    for i in range(2):
        make_pair(text_a=f"first answer {i}", text_b=f"second answer {i}")
    _open_label_page(browser, live_server, "gone", "pw-gone-123")
    first = _shown(browser)
    label_tab = browser.current_window_handle
    browser.execute_script("window.__samePage = true")

    browser.switch_to.new_window("tab")  # sign out in another tab
    browser.get(live_server.url + "/")
    browser.find_element("css selector", "form.logout button[type=submit]").click()
    _wait(browser, lambda d: "/accounts/login/" in d.current_url)
    browser.close()
    browser.switch_to.window(label_tab)

    _press(browser, "1")
    _wait(browser, lambda d: urlsplit(d.current_url).path == "/accounts/login/")
    # The whole page moved (not a login page swapped into the label area), back to the label page once signed in.
    assert browser.execute_script("return window.__samePage") is None
    assert parse_qs(urlsplit(browser.current_url).query)["next"] == ["/annotate/"]
    assert len(browser.find_elements("css selector", ".topbar")) == 1
    assert not browser.find_elements("id", "workspace")
    assert "was not saved" in browser.find_element("css selector", ".messages").text
    assert not Label.objects.exists()

    browser.find_element("name", "username").send_keys("gone")
    browser.find_element("name", "password").send_keys("pw-gone-123")
    browser.find_element("css selector", "main form button[type=submit]").click()
    _wait(browser, lambda d: urlsplit(d.current_url).path == "/annotate/"
          and d.find_elements("css selector", '#workspace [data-side="left"]'))
    assert _shown(browser)["pair"] == first["pair"]  # the pair is still waiting for its label
    _press(browser, "1")
    _wait(browser, lambda d: Label.objects.count() == 1)
    assert str(Label.objects.get().pair_id) == first["pair"]


def test_a_deleted_jobs_row_stops_polling_and_says_so(browser, live_server):  # noqa: F811
    make_user("boss", password="pw-boss-123", is_staff=True, is_superuser=True)
    version = ModelVersion.objects.create(name="v0", path="/nowhere")
    job = GenerationJob.objects.create(version=version, total=8, status="running")
    progress = f"/generation/jobs/{job.pk}/progress/"
    _sign_in(browser, live_server, "boss", "pw-boss-123")
    browser.get(live_server.url + "/generation/")
    browser.execute_script(RECORD)
    _wait(browser, lambda d: any(progress in s for s in d.execute_script("return window.__sent")))

    GenerationJob.objects.filter(pk=job.pk).delete()
    row = _wait(browser, lambda d: d.find_element("id", f"job-{job.pk}").text.startswith("This job no longer exists")
                and d.find_element("id", f"job-{job.pk}"))
    assert row.get_attribute("hx-get") is None
    polled = len(browser.execute_script("return window.__sent"))
    time.sleep(2.5)  # two and a half poll intervals
    assert len(browser.execute_script("return window.__sent")) == polled  # no more 404s every second
    assert _status(browser) == ""  # the row says it: nothing else to report


def test_a_deleted_runs_dashboard_keeps_what_it_showed_stops_polling_and_says_so(browser, live_server):  # noqa: F811
    make_user("boss", password="pw-boss-123", is_staff=True, is_superuser=True)
    run = TrainingRun.objects.create(input_version=ModelVersion.objects.create(name="v0", path="/nowhere"),
                                     total=60, status="running")
    _sign_in(browser, live_server, "boss", "pw-boss-123")
    browser.get(live_server.url + f"/training/runs/{run.pk}/")
    _wait(browser, lambda d: d.find_elements("css selector", "#run[hx-get] button.cancel"))
    browser.execute_script(RECORD)

    TrainingRun.objects.filter(pk=run.pk).delete()
    line = _wait(browser, lambda d: d.find_elements("css selector", "#run .job-gone-line"))[0]
    assert line.text.startswith("This job no longer exists")
    dashboard = browser.find_element("id", "run")
    assert dashboard.get_attribute("hx-get") is None and f"Training run {run.pk}" in dashboard.text
    assert not browser.find_elements("css selector", "#run button.cancel")  # nothing left to cancel
    polled = len(browser.execute_script("return window.__sent"))
    time.sleep(4.5)  # two and a quarter poll intervals
    assert len(browser.execute_script("return window.__sent")) == polled


def test_a_refused_vote_and_a_stale_page_say_so_as_text(browser, live_server, versions):  # noqa: F811
    make_user("voter", password="pw-voter-123")
    job = make_job(*versions, n=2)
    _sign_in(browser, live_server, "voter", "pw-voter-123")
    browser.get(live_server.url + f"/compare/sets/{job.pk}/")
    _wait(browser, lambda d: d.find_elements("css selector", '[data-key="1"]'))

    # A side the server refuses, written as HTML: shown as the words it is, nothing run.
    browser.execute_script("""document.querySelector('[data-key="1"]').value =
        '<img src=x onerror="window.__xss = 1">';""")
    _press(browser, "1")
    said = _wait(browser, lambda d: _status(d))
    assert said.startswith("Your vote was not recorded: side must be one of") and said.endswith("(HTTP 400)")
    assert '<img src=x onerror="window.__xss = 1">' in said
    assert not browser.find_elements("css selector", "#request-status *")
    assert browser.execute_script("return window.__xss") is None

    # Signed in again in another tab: the page's CSRF token is stale.
    browser.execute_script("""document.querySelector('[data-key="1"]').value = 'left';""")
    browser.delete_cookie("csrftoken")
    _press(browser, "1")
    _wait(browser, lambda d: _status(d) == f"{STALE_PAGE} (HTTP 403)")
    assert not Vote.objects.exists()
