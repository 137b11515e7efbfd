"""Celery tasks of the training app: take ids, call a service. Safe to run twice."""
from celery import shared_task

from . import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_training(run_id: int) -> None:
    services.run_training(run_id)
