"""The export page as people use it: post the form; when it starts an export job, run the job as the worker would
(annotate.export_jobs.run, on the test's database) and download its file from the link its page offers."""
from __future__ import annotations

from django.urls import resolve, reverse

from annotate import export_jobs
from annotate.models import ExportJob


def post(client, **fields):
    """The export form posted with these fields (as a browser sends it: a box left unticked is not sent, beside the
    hidden boxes_shown) unless `fields` say otherwise: the response."""
    data = {"format": "jsonl", "license": "", "boxes_shown": "1", "include_automatic": "on", **fields}
    return client.post(reverse("annotate:export"), {k: v for k, v in data.items() if v is not None})


def export(client, **fields) -> tuple[ExportJob | None, object]:
    """(the job, or None when the form refused it; the next thing the person gets: the download of the finished
    job's file, or the page that says why not)."""
    response = post(client, **fields)
    if response.status_code != 302:
        return None, response
    job = ExportJob.objects.get(pk=resolve(response.url).kwargs["pk"])
    assert job.status == ExportJob.QUEUED
    export_jobs.run(job.pk)
    job.refresh_from_db()
    page = client.get(response.url)
    if job.status != ExportJob.SUCCEEDED:
        return job, page
    link = reverse("annotate:export_download", args=[job.pk])
    assert link in page.content.decode()
    return job, client.get(link)


def content(response) -> bytes:
    assert response.status_code == 200, response.content[:500] if not response.streaming else response
    assert "attachment" in response["Content-Disposition"]
    return b"".join(response.streaming_content)
