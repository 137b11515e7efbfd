"""The Celery application; configuration comes from Django settings (CELERY_* names)."""
import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefloop.settings")

app = Celery("prefloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def resume_interrupted_work(**_) -> None:
    """With the filesystem broker a message is gone once a worker takes it, so a killed worker's task is never
    redelivered. The embedded setup runs one worker, so at its start every job still marked running was interrupted:
    send it again (each kind resumes without duplicates, or ends failed once out of attempts; see jobs.lifecycle)."""
    # Imported here, not at the top: this module is loaded with the `prefloop` package, before Django's apps are.
    from django.conf import settings

    from jobs.lifecycle import requeue_interrupted

    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        return  # real brokers redeliver unacknowledged tasks themselves (acks_late)
    requeue_interrupted()
