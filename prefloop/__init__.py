"""PrefLoop: the iterative DPO loop as a Django project. Loading the package loads the Celery app."""
from .celery import app as celery_app

__all__ = ["celery_app"]
