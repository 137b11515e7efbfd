"""The API's docs page (Swagger UI, from the app's static files) in a real browser under the site's
Content-Security-Policy: it renders the operations, and the browser reports no violation."""
from __future__ import annotations

import pytest

from tests.annotate.factories import make_staff, make_user
from tests.security.test_csp_browser import _sign_in, _violations, _wait, browser  # noqa: F401  (browser: fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_docs_page_works_under_the_policy(browser, live_server):  # noqa: F811
    make_user("docs-reader", password="pw-docs-123", is_staff=True)
    _sign_in(browser, live_server, "docs-reader", "pw-docs-123")
    browser.get(live_server.url + "/api/v1/docs")
    _wait(browser, lambda d: len(d.find_elements("css selector", ".opblock")) >= 10, timeout=30)
    text = browser.find_element("css selector", "#swagger-ui").text
    assert "/api/v1/preferences" in text and "/api/v1/label/next" in text
    assert _violations(browser) == []


def test_the_docs_page_tries_a_write_with_the_session_and_its_csrf_token(browser, live_server):  # noqa: F811
    from generation.models import ModelVersion

    version = ModelVersion.objects.create(name="base", path="/nonexistent")
    make_staff("docs-writer", "generation.change_modelversion", password="pw-docs-123")
    _sign_in(browser, live_server, "docs-writer", "pw-docs-123")
    browser.get(live_server.url + "/api/v1/docs")
    _wait(browser, lambda d: d.find_elements("css selector", ".opblock"), timeout=30)
    status = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const token = document.body.dataset.csrfToken;
        fetch(arguments[0], {method: "POST", headers: {"X-CSRFToken": token}, credentials: "same-origin"})
          .then(r => done(r.status));
    """, f"/api/v1/versions/{version.pk}/promote")
    assert status == 200 and ModelVersion.objects.get().is_current
