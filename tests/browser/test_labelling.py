"""Headless Chromium labels pairs with the keyboard, undoes one, and the export holds what was picked."""
from __future__ import annotations

import json
import shutil
import tempfile

import pytest
from django.core.management import call_command

from annotate.models import Assignment, Label
from tests.annotate.factories import make_pair, make_prompt, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
EVIL = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> evil but **shown**'


@pytest.fixture
def browser():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="prefloop-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, timeout=15):
    from selenium.common.exceptions import JavascriptException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # Mid-swap the workspace can be half there: a script or element error means "not yet", not a failure; so does
    # a lease gone from the database while the page still names it (an undo or a return deletes the one on screen).
    return WebDriverWait(driver, timeout, ignored_exceptions=(JavascriptException, StaleElementReferenceException,
                                                              Assignment.DoesNotExist)).until(mid_swap(condition))


def mid_swap(condition):
    """The condition, with an element that htmx swapped out between finding and reading it taken as "not yet".

    Chrome reports that race two ways: as a stale element, and (when the node goes while its text is read) as an
    'unknown error' naming a node that 'does not belong to the document'. Any other driver error still fails."""
    from selenium.common.exceptions import WebDriverException

    def check(driver):
        try:
            return condition(driver)
        except WebDriverException as error:
            if "does not belong to the document" in (error.msg or ""):
                return False
            raise
    return check


def _shown(driver) -> dict:
    """The pair on screen (its id, as text, looked up from the lease the page names) and its two sides."""
    shown = driver.execute_script("""
        const ws = document.getElementById('workspace');
        const text = s => ws.querySelector(`[data-side="${s}"] .md`).innerText.trim();
        return {lease: ws.dataset.lease, left: text('left'), right: text('right')};
    """)
    lease = shown.pop("lease")
    return {"pair": lease and str(Assignment.objects.get(pk=lease).pair_id), **shown}


def _press(driver, key):
    from selenium.webdriver.common.action_chains import ActionChains

    # A key pressed while the previous swap is still in flight or settling could be taken by the old page.
    _wait(driver, lambda d: d.execute_script(
        "return !document.querySelector('.htmx-request, .htmx-settling, .htmx-swapping')"))
    ActionChains(driver).send_keys(key).perform()


def _sign_in(driver, live_server, username: str, password: str) -> None:
    """Sign in through the login form; returns once it has moved on from the login page."""
    driver.get(live_server.url + "/accounts/login/")
    driver.find_element("name", "username").send_keys(username)
    driver.find_element("name", "password").send_keys(password)
    driver.find_element("css selector", "form button[type=submit]").click()
    _wait(driver, lambda d: "/accounts/login/" not in d.current_url)


def _open_label_page(driver, live_server, username: str, password: str) -> None:
    """Sign in through the login form and open the labelling page; returns once a pair is shown."""
    _sign_in(driver, live_server, username, password)
    driver.get(live_server.url + "/annotate/")
    _wait(driver, lambda d: d.find_elements("css selector", '#workspace [data-side="left"]'))


def test_keyboard_labelling_undo_and_export(browser, live_server, tmp_path):
    make_user("keys", password="pw-keys-123")
    make_pair(make_prompt(text="Is this <b>safe</b>?"), EVIL, "a plain answer")
    for i in range(2):
        make_pair(text_a=f"first answer {i}", text_b=f"second answer {i}")

    _open_label_page(browser, live_server, "keys", "pw-keys-123")
    browser.execute_script("window.__samePage = true")

    first = _shown(browser)
    assert "<script>window.__xss = 1</script>" in first["left"] + first["right"]
    assert browser.execute_script("return window.__xss") is None
    assert not browser.find_elements("css selector", "[data-side] img, [data-side] script")
    assert browser.find_element("css selector", ".chat").text.count("<b>safe</b>") == 1

    picks = {}
    _press(browser, "1")
    _wait(browser, lambda d: _shown(d)["pair"] != first["pair"])
    picks[first["pair"]] = first["left"]
    second = _shown(browser)
    _press(browser, "2")
    _wait(browser, lambda d: _shown(d)["pair"] != second["pair"])
    _press(browser, "u")  # undo the right pick on the second pair: it comes back
    _wait(browser, lambda d: _shown(d)["pair"] == second["pair"])
    assert "undone" in browser.find_element("id", "workspace").text
    _press(browser, "1")
    _wait(browser, lambda d: _shown(d)["pair"] != second["pair"])
    picks[second["pair"]] = second["left"]
    third = _shown(browser)
    _press(browser, "4")
    _wait(browser, lambda d: "No new pairs are waiting" in d.find_element("id", "workspace").text)
    assert browser.execute_script("return window.__samePage") is True  # htmx swaps, no full reload
    assert browser.execute_script("return window.__xss") is None

    labels = {str(lb.pair_id): lb for lb in Label.objects.all()}
    assert {k: lb.side for k, lb in labels.items()} == {first["pair"]: "left", second["pair"]: "left",
                                                        third["pair"]: "both_bad"}
    assert all(lb.seconds is not None and lb.seconds < 60 for lb in labels.values())
    out = tmp_path / "prefs.jsonl"
    call_command("export_preferences", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {str(r["pair_id"]): r["chosen"] for r in rows}.keys() == picks.keys()
    for row in rows:
        assert row["chosen"].replace("**", "").strip() == picks[str(row["pair_id"])].strip()
