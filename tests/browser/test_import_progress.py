"""Headless Chromium uploads a large prompts file on the Import page, watches the bar move while a real Celery worker
writes it chunk by chunk, presses Cancel and sees what was stored, then uploads the same file again and sees the rest
added."""
from __future__ import annotations

import json

import pytest
from django.db import transaction

from annotate.models import ImportJob
from generation.models import Prompt
from jobs import lifecycle
from tests.annotate.factories import make_user
from tests.browser.test_labelling import _sign_in, _wait, browser  # noqa: F401  (the fixture)
from tests.faults.conftest import broker, wait_for, worker, worker_data_dir  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# 200 chunks of 500 rows with a 50 ms pause between them: several seconds of writing on two busy cores, long enough to
# watch the bar move and cancel part-way, short enough to import twice within a minute or so.
ROWS = 100_000


def _job(driver) -> dict | None:
    return driver.execute_script("""
        const job = document.getElementById('import-job');
        if (!job) return null;
        const box = job.querySelector('.job-progress');
        return {status: box.dataset.status, bar: Number(job.querySelector('progress.bar')?.value || 0),
                text: job.innerText, counts: job.querySelector('.job-counts')?.innerText || '',
                stage: job.querySelector('.job-stage')?.innerText || '', polling: job.hasAttribute('hx-get'),
                cancel: !!job.querySelector('button.cancel')};
    """)


def _upload(driver, live_server, path) -> None:
    """Upload `path` as prompts on the Import page; returns once the job's page is open."""
    from selenium.webdriver.support.ui import Select

    driver.get(live_server.url + "/annotate/import/")
    Select(driver.find_element("name", "kind")).select_by_value("prompts")
    driver.find_element("name", "file").send_keys(str(path))
    # the upload form's own button (the page's header has a logout form too)
    driver.find_element("css selector", "form[enctype='multipart/form-data'] button[type=submit]").click()
    _wait(driver, lambda d: "/annotate/import/" in d.current_url and d.current_url.rstrip("/").split("/")[-1].isdigit()
          and _job(d) is not None, 60)


def test_an_import_started_in_the_browser_moves_cancels_and_adds_the_rest_when_uploaded_again(
        browser, live_server, worker, broker, worker_data_dir, settings, tmp_path, monkeypatch):  # noqa: F811
    # The page's jobs go to this test's private broker, where its worker listens (imports on the default queue).
    monkeypatch.setattr(lifecycle, "enqueue", lambda job: transaction.on_commit(
        lambda: broker.send(lifecycle.task_named(job.task_name), job.pk)))
    # Uploads are kept where the worker's settings keep them (its PREFLOOP_DATA_DIR), as a server and worker share it.
    settings.IMPORTS_DIR = worker_data_dir / "imports"
    source = tmp_path / "many-prompts.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"Tell me something about the number {k}."}) + "\n"
                              for k in range(ROWS)))
    make_user("boss", password="pw-boss-123", is_staff=True, is_superuser=True)
    worker.start()

    _sign_in(browser, live_server, "boss", "pw-boss-123")

    _upload(browser, live_server, source)
    job = ImportJob.objects.get()
    assert browser.current_url.rstrip("/").endswith(f"/annotate/import/{job.pk}")

    # The bar moves while the worker writes the checked rows, chunk by chunk.
    first = _wait(browser, lambda d: (r := _job(d)) and r["status"] == "running" and r["bar"] > 0 and r, 120)
    moved = _wait(browser, lambda d: (r := _job(d)) and r["bar"] > first["bar"] and r, 60)
    assert moved["status"] == "running" and moved["polling"] and moved["cancel"], moved
    assert f"/ {ROWS} rows" in moved["counts"] and f"writing {ROWS:,} checked rows" in moved["stage"], moved

    browser.find_element("css selector", "#import-job button.cancel").click()
    stopped = _wait(browser, lambda d: (r := _job(d)) and r["status"] == "cancelled" and r, 60)
    assert "Stored before it stopped:" in stopped["text"], stopped
    assert not stopped["polling"] and not stopped["cancel"], stopped
    job.refresh_from_db()
    stored = Prompt.objects.count()
    assert job.status == "cancelled" and 0 < stored < ROWS, (job.status, stored)
    assert job.added == stored and job.skipped == 0 and job.done == stored, (job.added, job.skipped, job.done)
    assert f"Stored before it stopped: {stored} added, 0 already present." in stopped["text"], stopped

    # The same file again: the rows already stored are skipped, and the rest are added.
    _upload(browser, live_server, source)
    again = ImportJob.objects.exclude(pk=job.pk).get()
    done = _wait(browser, lambda d: (r := _job(d)) and r["status"] == "succeeded" and r, 180)
    rest = ROWS - stored
    assert f"Imported: {rest} added, {stored} already present." in done["text"], done
    assert not done["polling"] and not done["cancel"], done
    again.refresh_from_db()
    assert again.status == "succeeded" and (again.added, again.skipped) == (rest, stored)
    assert Prompt.objects.count() == ROWS
    # Each upload is removed once its job has ended.
    wait_for(lambda: not any(settings.IMPORTS_DIR.iterdir()), 10, "the uploads removed", worker)
    assert "Traceback" not in worker.log.read_text(), worker.tail()
