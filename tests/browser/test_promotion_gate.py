"""Headless Chromium on the Train page: the promotion gate keeps a worse round out, a staff member promotes it by
hand with a reason, and rolls back to the base in one click; each change is recorded."""
from __future__ import annotations

import pytest

from compare.services import record_vote
from generation.models import VersionChange
from generation.services import current_version
from tests.annotate.factories import make_staff, make_user
from tests.browser.test_labelling import _sign_in, _wait, browser  # noqa: F401 (the fixture)
from tests.compare.conftest import make_job, make_version
from training.models import TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _row_text(driver, version) -> str:
    return driver.find_element("id", f"version-{version.pk}").text


def test_the_gate_keeps_a_worse_round_out_and_staff_promote_it_by_hand(browser, live_server, settings):  # noqa: F811
    settings.PREFLOOP_GATE_MIN_VOTES = 8
    staff = make_staff("lead", "generation.change_modelversion", password="pw-lead-123")
    base = make_version("base", is_current=True)
    worse = make_version("round-1", parent=base)
    run = TrainingRun.objects.create(input_version=base, reference_version=base, output_version=worse,
                                     status=TrainingRun.SUCCEEDED, decision=TrainingRun.Decision.CANDIDATE)
    job = make_job(base, worse, n=12)
    person = make_user()
    for k, comparison in enumerate(job.comparisons.order_by("pk")):  # round-1 loses 3 of every 4 prompts
        record_vote(comparison, person, "b" if k % 4 == 0 else "a")

    _sign_in(browser, live_server, "lead", "pw-lead-123")
    browser.get(live_server.url + "/training/")
    assert "candidate: not yet checked" in _row_text(browser, worse)
    browser.find_element("css selector", f"#version-{worse.pk} button.check-gate").click()
    _wait(browser, lambda d: "kept out" in d.find_element("css selector", ".messages").text)
    assert "round-1 is kept out: win rate 25% [9%, 53%] on 12 votes is below 50%" in \
        browser.find_element("css selector", ".messages").text
    assert "not passed" in _row_text(browser, worse) and "current" in _row_text(browser, base)
    assert current_version() == base

    reason = browser.find_element("css selector", f"#version-{worse.pk} input.promote-reason")
    reason.send_keys("people voted on a stale prompt set")
    browser.find_element("css selector", f"#version-{worse.pk} button.promote").click()
    _wait(browser, lambda d: "promoted by hand" in d.find_element("css selector", ".messages").text)
    assert current_version() == worse
    row = _row_text(browser, worse)
    assert "current" in row and "by lead" in row and "people voted on a stale prompt set" in row
    change = VersionChange.objects.get()
    assert (change.action, change.user, change.previous) == ("by_hand", staff, base)
    run.refresh_from_db()
    assert run.decision == "by_hand" and run.gate["passed"] is False  # the gate's verdict stays on record

    browser.find_element("css selector", f"#version-{base.pk} button.rollback").click()
    _wait(browser, lambda d: "Rolled back" in d.find_element("css selector", ".messages").text)
    assert current_version() == base
    assert VersionChange.objects.first().action == "rollback"
    assert "rolled back, was round-1) by lead" in browser.find_element("css selector", ".version-changes").text
