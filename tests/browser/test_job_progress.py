"""Headless Chromium starts a generation job from its page, watches the bar move before the job ends, presses Cancel
and sees the job stop, with a real Celery worker sampling on the tiny model."""
from __future__ import annotations

import pytest
from django.db import transaction

from generation.models import GenerationJob, Prompt, Response
from jobs import lifecycle
from tests.annotate.factories import make_user
from tests.browser.test_labelling import _sign_in, _wait, browser  # noqa: F401  (the fixture)
from tests.faults.conftest import broker, slow_model_dir, slow_version, worker, worker_data_dir  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _row(driver) -> dict:
    return driver.execute_script("""
        const row = document.querySelector('tr.job-row');
        if (!row) return null;
        const box = row.querySelector('.job-progress');
        return {status: box.dataset.status, bar: Number(row.querySelector('progress.bar')?.value || 0),
                text: row.innerText, polling: row.hasAttribute('hx-get'),
                cancel: !!row.querySelector('button.cancel')};
    """)


def test_a_generation_job_started_in_the_browser_moves_and_cancels(browser, live_server, worker, broker,  # noqa: F811
                                                                    slow_version, monkeypatch):  # noqa: F811
    # The page's jobs go to this test's private broker, where its worker listens.
    monkeypatch.setattr(lifecycle, "enqueue", lambda job: transaction.on_commit(
        lambda: broker.send(lifecycle.task_named(job.task_name), job.pk)))
    # One chunk of 16 prompts x 8 answers x 1600 tokens: about 40 s on two quiet AVX-512 cores, so the Cancel lands well
    # before the end on the fastest machine we run on (at 400 tokens the whole job took 5 s and the Cancel sometimes
    # came after its last token: the job then rightly finished, and the test failed).
    for k in range(16):
        Prompt.objects.create(text=f"Say something about the number {k}.")
    make_user("boss", password="pw-boss-123", is_staff=True, is_superuser=True)
    worker.start()

    _sign_in(browser, live_server, "boss", "pw-boss-123")
    browser.get(live_server.url + "/generation/")
    form = {"prompts": "16", "samples": "8", "temperature": "0", "max_new_tokens": "1600"}
    for name, value in form.items():
        field = browser.find_element("name", name)
        field.clear()
        field.send_keys(value)
    # greedy, so every answer runs to its token limit: samples only (greedy samples make no pair, refused otherwise)
    browser.execute_script("document.querySelector('[name=pairing]').value = 'none'")
    browser.execute_script("document.querySelector('[name=prompts]').form.requestSubmit()")
    _wait(browser, lambda d: _row(d) is not None)

    # The bar moves while the job is still sampling its one chunk (0 of 16 prompts stored).
    first = _wait(browser, lambda d: (r := _row(d)) and r["status"] == "running" and r["bar"] > 0 and r, 240)
    moved = _wait(browser, lambda d: (r := _row(d)) and r["bar"] > first["bar"] and r, 60)
    assert moved["status"] == "running" and "0 / 16 prompts" in moved["text"] and moved["cancel"]

    browser.find_element("css selector", "tr.job-row button.cancel").click()
    stopped = _wait(browser, lambda d: (r := _row(d)) and r["status"] not in ("running", "cancelling") and r, 10)
    assert stopped["status"] == "cancelled", stopped
    assert "cancelled after 0 of 16 prompts: 0 pairs kept" in stopped["text"]
    assert not stopped["polling"] and not stopped["cancel"]
    job = GenerationJob.objects.get()
    assert job.status == "cancelled" and Response.objects.filter(job=job).count() == 0
