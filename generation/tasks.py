"""Celery tasks of the generation app: take ids, call a service. Safe to run twice."""
from celery import shared_task

from . import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_generation_job(job_id: int) -> None:
    services.run_generation_job(job_id)
