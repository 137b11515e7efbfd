"""Celery task of the compare app: both versions answer a comparison set (sampling: the GPU queue)."""
from celery import shared_task
from django.conf import settings

from . import services


@shared_task(queue=settings.PREFLOOP_GPU_QUEUE)
def answer_compare_job(job_id: int) -> None:
    """Answer the set's prompts with both versions; progress and errors are recorded on the CompareJob row."""
    services.run_compare_job(job_id)
