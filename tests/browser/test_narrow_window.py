"""Every page at 400 px: usable without sideways scrolling (wide tables scroll inside their own box)."""
from __future__ import annotations

import pytest

from tests.annotate.factories import make_pair, make_user
from tests.browser.test_labelling import _sign_in, _wait, browser  # noqa: F401 (the fixture)
from tests.compare.conftest import make_job, make_version
from training.models import TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PAGES = ["/", "/annotate/", "/annotate/quality/", "/annotate/rounds/", "/annotate/import/", "/annotate/export/", "/generation/",
         "/training/", "/compare/", "/compare/leaderboard/", "/compare/rounds/", "/loop/"]
OVERFLOW = """
    const width = document.documentElement.clientWidth;
    const wide = Array.from(document.querySelectorAll('body *')).filter(e => {
        const r = e.getBoundingClientRect();
        return r.width > 0 && r.right > width + 1 && !e.closest('.table-scroll, table, pre');
    }).slice(0, 3).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className);
    return {scroll: document.documentElement.scrollWidth, width: width, wide: wide};"""


def test_no_page_scrolls_sideways_at_400_px(browser, live_server):  # noqa: F811
    make_user("narrow", password="pw-narrow-123", is_staff=True, is_superuser=True)  # every page with its forms
    base = make_version("base", is_current=True)
    new = make_version("round-1-with-a-rather-long-name", parent=base)
    TrainingRun.objects.create(input_version=base, reference_version=base, output_version=new,
                               status=TrainingRun.SUCCEEDED, decision=TrainingRun.Decision.CANDIDATE)
    make_job(base, new, n=2)
    make_pair(text_a="a " * 200, text_b="an_answer_with_a_very_long_unbroken_word_" * 5)
    browser.set_window_size(400, 900)
    _sign_in(browser, live_server, "narrow", "pw-narrow-123")
    wider = {}
    for page in PAGES:
        browser.get(live_server.url + page)
        _wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
        found = browser.execute_script(OVERFLOW)
        if found["scroll"] > found["width"]:
            wider[page] = found
    assert wider == {}


def test_after_a_tap_at_400_px_the_next_pair_starts_in_view(browser, live_server):  # noqa: F811
    from tests.browser.test_labelling import _open_label_page, _shown

    make_user("tap", password="pw-tap-12345")
    for i in range(2):
        make_pair(text_a=f"long answer {i} " * 150, text_b=f"other answer {i} " * 150)
    browser.set_window_size(400, 800)
    _open_label_page(browser, live_server, "tap", "pw-tap-12345")
    first = _shown(browser)
    button = browser.find_element("css selector", '#label-form button[value="left"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    assert browser.execute_script("return document.getElementById('workspace').getBoundingClientRect().top") < 0
    button.click()
    _wait(browser, lambda d: _shown(d)["pair"] != first["pair"])
    _wait(browser, lambda d: d.execute_script(
        "return document.getElementById('workspace').getBoundingClientRect().top") >= -1)
