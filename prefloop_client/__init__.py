"""A small Python client for PrefLoop's API (/api/v1/), on the standard library alone: no Django, no requests.

    from prefloop_client import Client
    c = Client("https://prefloop.example.org", token)
    c.push_preferences([{"prompt": "...", "chosen": "...", "rejected": "..."}])
    rows = c.preferences(round=2)
    job = c.start_training(params={"beta": 0.1}); c.wait(job)
"""
from .client import APIConnectionError, APIError, Client, JobFailed

__all__ = ["APIConnectionError", "APIError", "Client", "JobFailed"]
