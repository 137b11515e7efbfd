"""Celery task of the loop app: take the run's id, call the service. Safe to run twice (finished rounds are kept)."""
from celery import shared_task
from django.conf import settings

from . import services


# The loop samples and trains in-process, so it runs where the heavy work runs.
@shared_task(acks_late=True, reject_on_worker_lost=True, queue=settings.PREFLOOP_GPU_QUEUE)
def run_loop_task(run_id: int) -> None:
    services.run_loop(run_id)
