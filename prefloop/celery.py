"""The Celery application; configuration comes from Django settings (CELERY_* names)."""
import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefloop.settings")

app = Celery("prefloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def resume_interrupted_work(sender=None, **_) -> None:
    """With the filesystem broker a message is gone once a worker takes it, so a killed worker's task is never
    redelivered. The embedded setup runs one worker per queue, so at its start every job of its queues still marked
    running was interrupted: send it again (each kind resumes without duplicates, or ends failed once out of
    attempts; see jobs.lifecycle). Another queue's jobs are its worker's: it may be running them now."""
    # Imported here, not at the top: this module is loaded with the `prefloop` package, before Django's apps are.
    from django.conf import settings

    from jobs.lifecycle import end_orphans, requeue_interrupted

    # with any broker: a command's own job whose process was killed outright on this machine (no worker ran it, so
    # no broker redelivers it) is ended, and so are the jobs inside it
    end_orphans()
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        return  # real brokers redeliver unacknowledged tasks themselves (acks_late)
    queues = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    requeue_interrupted(list(queues.consume_from) if queues is not None else None)
