"""Where the tests' own process publishes Celery tasks."""
from __future__ import annotations


def publish_with(app, options: dict) -> None:
    """Publish with these broker options from now on. The app keeps its connection and producer pools, made with
    the options of the first task any earlier test sent: without dropping them, a task would go to the old folder."""
    app.conf.broker_transport_options = options
    app._pool = None
    app.amqp._producer_pool = None
