"""The import page as people use it: post the form; when it queues an import job, run the job as the worker would
(annotate.import_jobs.run, on the test's database) and open the page the form redirected to."""
from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import resolve, reverse

from annotate import import_jobs
from annotate.models import ImportJob


def post(client, name: str, content: bytes, **fields):
    """The import form posted with this file (kind prompts unless `fields` say otherwise): the response."""
    data = {"kind": "prompts", "format": "auto", "split": "train", "tag": "", **fields,
            "file": SimpleUploadedFile(name, content, content_type="application/octet-stream")}
    return client.post(reverse("annotate:import"), data)


def queue(client, name: str, content: bytes, **fields) -> tuple[ImportJob, str]:
    """Post the form and return the job it queued (not run yet) and its page's URL."""
    response = post(client, name, content, **fields)
    assert response.status_code == 302, response.content.decode()[-2000:]
    return ImportJob.objects.get(pk=resolve(response.url).kwargs["pk"]), response.url


def upload(client, name: str, content: bytes, **fields) -> tuple[ImportJob | None, object]:
    """(the job, or None when the form refused the upload; the page the person sees next: the job's page, or the
    form with its errors)."""
    response = post(client, name, content, **fields)
    if response.status_code != 302:
        return None, response
    job = ImportJob.objects.get(pk=resolve(response.url).kwargs["pk"])
    assert job.status == ImportJob.QUEUED
    import_jobs.run(job.pk)
    job.refresh_from_db()
    return job, client.get(response.url)
