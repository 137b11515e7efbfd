"""Celery task of the compare app: both versions answer a comparison set (sent to the GPU queue: it samples)."""
from celery import shared_task

from . import services


@shared_task
def answer_compare_job(job_id: int) -> None:
    """Answer the set's prompts with both versions; progress and errors are recorded on the CompareJob row."""
    services.run_compare_job(job_id)
