"""The Content-Security-Policy in a real browser (issue 17, row 14): an answer's remote image is never fetched, and
the pages still work under the policy (sign-in, htmx labelling, the auto-submitting toggle, the admin) with no
violation reported but the refused image."""
from __future__ import annotations

import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.annotate.factories import make_pair, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations are console errors
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def tracker():
    """A stand-in for a remote image host, on loopback: it records every request it gets."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server name)
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/gif")
            self.end_headers()
            self.wfile.write(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def _wait(driver, condition, timeout=15):
    from selenium.common.exceptions import JavascriptException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser.test_labelling import mid_swap

    return WebDriverWait(driver, timeout, ignored_exceptions=(JavascriptException, StaleElementReferenceException)
                         ).until(mid_swap(condition))


def _violations(driver, allowed: str = "") -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"] and not (allowed and allowed in entry["message"])]


def _sign_in(driver, live_server, username, password):
    driver.get(live_server.url + "/accounts/login/")
    driver.find_element("name", "username").send_keys(username)
    driver.find_element("name", "password").send_keys(password)
    driver.find_element("css selector", "form button[type=submit]").click()
    _wait(driver, lambda d: "/accounts/login/" not in d.current_url)


def test_remote_images_are_not_fetched_and_labelling_works(browser, live_server, tracker):
    from selenium.webdriver.common.action_chains import ActionChains

    from annotate.models import Label

    origin, hits = tracker
    pixel = f"{origin}/pixel.gif?who=annotator"
    make_user("pic", password="pw-pic-123")
    make_pair(text_a=f"Here is a chart: ![chart]({pixel})", text_b="No image here.")
    make_pair(text_a="second left", text_b="second right")
    _sign_in(browser, live_server, "pic", "pw-pic-123")
    browser.get(live_server.url + "/annotate/")
    _wait(browser, lambda d: d.find_elements("css selector", '#workspace [data-side="left"]'))
    # The answer's <img> is on the page, and the browser refused to fetch it.
    assert browser.find_elements("css selector", f'[data-side] img[src="{pixel}"]')
    _wait(browser, lambda d: any("pixel.gif" in m for m in _violations(d)))
    assert hits == []
    # htmx and the keyboard script run under the policy: a key press labels the pair and swaps in the next.
    first = browser.find_element("id", "workspace").get_attribute("data-lease")
    ActionChains(browser).send_keys("1").perform()
    _wait(browser, lambda d: d.find_element("id", "workspace").get_attribute("data-lease") != first)
    assert Label.objects.count() == 1
    assert _violations(browser, allowed="pixel.gif") == []
    assert hits == []


def test_staff_pages_and_the_admin_run_under_the_policy(browser, live_server, django_user_model):
    django_user_model.objects.create_user("boss", password="pw-boss-123", is_staff=True, is_superuser=True)
    _sign_in(browser, live_server, "boss", "pw-boss-123")
    for path in ("/", "/generation/", "/training/", "/loop/", "/compare/", "/annotate/quality/", "/admin/",
                 "/admin/auth/user/", "/admin/auth/user/add/"):
        browser.get(live_server.url + path)
        _wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
        assert _violations(browser) == [], path
    # The leaderboard's toggle submits itself (a static script, not an inline handler).
    browser.get(live_server.url + "/compare/leaderboard/")
    browser.find_element("css selector", "input[data-autosubmit]").click()
    _wait(browser, lambda d: "automatic=1" in d.current_url)
    assert _violations(browser) == []
