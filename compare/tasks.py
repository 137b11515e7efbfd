"""Celery task of the compare app: both versions answer a comparison set (routed in settings.CELERY_TASK_ROUTES)."""
from celery import shared_task

from . import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def answer_compare_job(job_id: int) -> None:
    """Answer the set's prompts with both versions; progress and errors are recorded on the CompareJob row."""
    services.run_compare_job(job_id)
