"""Celery task of the loop app: take the run's id, call the service. Safe to run twice (finished rounds are kept).
Routed with the other heavy work in settings.CELERY_TASK_ROUTES: the loop samples and trains in-process."""
from celery import shared_task

from . import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_loop_task(run_id: int) -> None:
    services.run_loop(run_id)
