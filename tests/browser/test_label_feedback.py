"""Headless Chromium on the labelling page: each key press highlights its choice and leaves a "Saved: …" line that
stays until the next press; two presses in quick succession give two labels or a visible refusal, never a lost
key; the done / today / remaining counters render whole inside their box, on a wide window and at 400 px."""
from __future__ import annotations

import pytest

from annotate.models import Label
from tests.annotate.factories import make_pair, make_user
from tests.browser.test_labelling import _open_label_page, _press, _shown, _wait, browser  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _saved(driver) -> str:
    found = driver.find_elements("id", "saved-line")
    return found[0].text if found else ""


def test_each_press_is_highlighted_and_leaves_a_saved_line(browser, live_server):  # noqa: F811
    make_user("fb", password="pw-fb-1234")
    for i in range(3):
        make_pair(text_a=f"first answer {i}", text_b=f"second answer {i}")
    _open_label_page(browser, live_server, "fb", "pw-fb-1234")
    assert _saved(browser) == ""

    first = _shown(browser)
    # The press marks its button at once, before the server answers (read in the same script as the key).
    pressed = browser.execute_script("""
        document.dispatchEvent(new KeyboardEvent('keydown', {key: 'e', bubbles: true}));
        document.dispatchEvent(new KeyboardEvent('keydown', {key: '2', bubbles: true}));
        return document.querySelector('#label-form button[value="right"]').classList.contains('pressed');""")
    assert pressed
    _wait(browser, lambda d: _shown(d)["pair"] != first["pair"])
    assert _saved(browser) == "Saved: right, slightly better"
    second = _shown(browser)
    _press(browser, "3")
    _wait(browser, lambda d: _shown(d)["pair"] != second["pair"])
    assert _saved(browser) == "Saved: tie"
    assert not browser.find_element("id", "press-status").is_displayed()
    assert [(lb.side, lb.strength) for lb in Label.objects.order_by("pk")] == [("right", "slight"), ("tie", "")]


def test_two_quick_presses_give_two_labels_or_a_visible_refusal(browser, live_server):  # noqa: F811
    make_user("quick", password="pw-quick-123")
    for i in range(3):
        make_pair(text_a=f"first answer {i}", text_b=f"second answer {i}")
    _open_label_page(browser, live_server, "quick", "pw-quick-123")
    first = _shown(browser)
    browser.execute_script("""
        document.dispatchEvent(new KeyboardEvent('keydown', {key: '1', bubbles: true}));
        document.dispatchEvent(new KeyboardEvent('keydown', {key: '2', bubbles: true}));""")
    _wait(browser, lambda d: _shown(d)["pair"] != first["pair"])
    _wait(browser, lambda d: not d.find_elements("css selector", ".htmx-request"))
    status = browser.find_element("id", "press-status")
    labels = list(Label.objects.values_list("side", flat=True))
    if len(labels) == 1:  # the second key came while the first was saving: refused, and the page says so
        assert labels == ["left"] and status.is_displayed()
        assert status.text.startswith("Not saved: key 2 was pressed while the last label was still being saved")
    else:
        assert labels == ["left", "right"]
    # The next accepted press clears the refusal.
    shown = _shown(browser)
    _press(browser, "4")
    _wait(browser, lambda d: _shown(d)["pair"] != shown["pair"] or "No pairs" in d.find_element("id", "workspace").text)
    assert not browser.find_element("id", "press-status").is_displayed()


COUNTER_BOXES = """
    const box = document.querySelector('#workspace .progress').getBoundingClientRect();
    return Array.from(document.querySelectorAll('#workspace .progress > span')).map(s => {
        const r = s.getBoundingClientRect(), b = s.querySelector('b').getBoundingClientRect();
        return {text: s.innerText, inside: r.left >= box.left - 0.5 && r.right <= box.right + 0.5 &&
                r.top >= box.top - 0.5 && r.bottom <= box.bottom + 0.5,
                height: r.height, numberInside: b.top >= r.top - 0.5 && b.bottom <= r.bottom + 0.5,
                fontSize: parseFloat(getComputedStyle(s).fontSize), overflow: s.scrollWidth > s.clientWidth + 1,
                background: getComputedStyle(s).backgroundColor};
    });"""


@pytest.mark.parametrize("width", [1400, 400])
def test_the_counters_render_inside_their_box(browser, live_server, width):  # noqa: F811
    make_user("counts", password="pw-counts-123")
    make_pair(text_a="one", text_b="two")
    browser.set_window_size(width, 900)
    _open_label_page(browser, live_server, "counts", "pw-counts-123")
    spans = browser.execute_script(COUNTER_BOXES)
    assert [s["text"].split()[0] for s in spans] == ["done", "today", "remaining"]
    for s in spans:
        assert s["inside"] and s["numberInside"] and not s["overflow"], s
        assert s["height"] >= s["fontSize"], s  # a whole line of text, not a clipped pill
        assert s["background"] in ("rgba(0, 0, 0, 0)", "transparent"), s  # no progress-bar fill behind the words


def test_a_cut_off_answer_carries_its_mark(browser, live_server):  # noqa: F811
    from generation.models import Response

    make_user("cut", password="pw-cut-1234")
    pair = make_pair(text_a="So, you need", text_b="A whole answer.")
    Response.objects.filter(pk=pair.response_a_id).update(finish_reason="length", token_count=128)
    _open_label_page(browser, live_server, "cut", "pw-cut-1234")
    marks = browser.execute_script("""
        return Array.from(document.querySelectorAll('#workspace [data-side]')).map(side => {
            const mark = side.querySelector('.cut-off');
            return {text: side.querySelector('.md').innerText.trim(),
                    mark: mark ? mark.innerText : null, visible: !!mark && mark.getBoundingClientRect().height > 0};
        });""")
    by_text = {m["text"]: m for m in marks}
    assert by_text["So, you need"]["visible"] and "cut off at the token limit" in by_text["So, you need"]["mark"]
    assert by_text["A whole answer."]["mark"] is None
