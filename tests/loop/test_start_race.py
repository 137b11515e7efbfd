"""The same loop sent twice in the same instant (a double click that two server processes answer) is queued once."""
import threading
import time

import pytest
from django.db import connection
from django.db.models.signals import pre_save

from loop.models import LoopRun
from loop.services import LoopError, start_loop_run
from tests.threads import run_at_once

from .test_run_loop import JUDGE


@pytest.fixture
def postgresql(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: on SQLite every transaction takes the write lock as it begins, one at a time")


def test_two_starts_of_the_same_loop_at_once_queue_it_once(postgresql, loop_base):
    loop_base[1](train=6, eval=2)
    holding, answers = threading.Event(), {}

    def held(sender, instance, **kwargs):  # the first, about to create its run: the second looks for a twin meanwhile
        if threading.current_thread().name == "first" and not holding.is_set():
            holding.set()
            time.sleep(1.5)

    def start(name: str):
        def work() -> None:
            if name == "second":
                holding.wait(60)
            try:
                answers[name] = start_loop_run(rounds=1, pairs=2, judge=JUDGE, tag="t", eval_limit=2, enqueue=False)
            except LoopError as exc:
                answers[name] = str(exc)
        return work

    pre_save.connect(held, sender=LoopRun, weak=False)
    try:
        errors = run_at_once({"first": start("first"), "second": start("second")}, release=holding)
    finally:
        pre_save.disconnect(held, sender=LoopRun)
    assert errors == []
    (run,) = LoopRun.objects.all()  # two were queued: the same prompts sampled and labelled twice
    assert answers["first"].pk == run.pk
    assert answers["second"] == (f"loop run {run.pk} with these settings is queued already: wait for it to end, or "
                                 "cancel it, to run it again")
