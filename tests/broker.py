"""Where the tests' own process publishes Celery tasks."""
from __future__ import annotations


def publish_with(app, options: dict) -> None:
    """Publish with these broker options from now on. The app keeps its connection and producer pools, made with
    the options of the first task any earlier test sent: without dropping them, a task would go to the old folder."""
    app.conf.broker_transport_options = options
    app._pool = None
    app.amqp._producer_pool = None


def run_key_prefix() -> str:
    """The prefix of the Redis keys a test run publishes under: its own, so no instance's worker reads its tasks."""
    import uuid

    return f"prefloop-tests-{uuid.uuid4().hex[:12]}:"


def forget_test_keys(url: str, prefix: str) -> None:
    """Remove the run's keys (the tasks no worker took) from the Redis database at `url`."""
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
