"""Celery tasks of the annotate app: imports uploaded on the import page and exports started on the export page (the
default queue: no model is loaded)."""
from celery import shared_task

from . import export_jobs, import_jobs


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_import_job(job_id: int) -> None:
    import_jobs.run(job_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_export_job(job_id: int) -> None:
    export_jobs.run(job_id)
