"""32 annotators at once, as threads with their own connections, on whatever DATABASE_URL names (a file database
for SQLite): no duplicate labels, no lost labels, no pair over-assigned."""
from __future__ import annotations

import random
import threading
from collections import Counter
from contextlib import contextmanager

from django.core.management import call_command
from django.db import connection, connections
from django.db.models import F

from annotate import services
from annotate.models import Assignment, Label, Pair

from .factories import make_pairs, make_user

ANNOTATORS = 32
PAIRS = 48
LABELS_NEEDED = 2


def _in_thread(fn, *args):
    """Run fn in a fresh thread (so with its own database connection) and return its result."""
    box = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # handed back to the test
            box["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


@contextmanager
def _shared_database(tmp_path):
    """SQLite's in-memory test database cannot take concurrent writers; point new connections at a file instead."""
    if connection.vendor != "sqlite" or not connection.is_in_memory_db():
        yield
        return
    shared = connections.settings["default"]
    old = shared["NAME"]
    shared["NAME"] = str(tmp_path / "concurrency.sqlite3")
    try:
        _in_thread(call_command, "migrate", verbosity=0, interactive=False)
        yield
    finally:
        shared["NAME"] = old


def _seed():
    pairs = make_pairs(PAIRS, labels_needed=LABELS_NEEDED)
    users = [make_user(f"concurrent{i}") for i in range(ANNOTATORS)]
    return [p.pk for p in pairs], [u.pk for u in users]


def _annotate(user_id, seed, barrier, recorded, errors):
    from django.contrib.auth import get_user_model

    rng = random.Random(seed)
    try:
        user = get_user_model().objects.get(pk=user_id)
        barrier.wait()
        mine = []
        while (lease := services.next_pair_for(user, rng=rng)) is not None:
            roll = rng.random()
            if roll < 0.1:
                services.skip(user, lease.pair_id)
                continue
            side = rng.choice(["left", "right", "tie", "both_bad"])
            label = services.record_label(lease, user, side)
            again = services.record_label(lease.pair_id, user, side)  # a double submit
            assert again.pk == label.pk
            if roll < 0.2:
                back = services.undo_last_label(user)
                assert back is not None and back.pair_id == lease.pair_id
                label = services.record_label(back, user, side)
            mine.append(label.pk)
        recorded.extend(mine)
    except BaseException as exc:
        errors.append(exc)
    finally:
        connection.close()


def _check():
    return {
        "labels": list(Label.objects.values_list("pk", flat=True)),
        "per_pair": Counter(Label.objects.values_list("pair_id", flat=True)),
        "per_person": Counter(Label.objects.values_list("pair_id", "annotator_id")),
        "done": dict(Pair.objects.values_list("pk", "labels_done")),
        "over": Pair.objects.filter(labels_done__gt=F("labels_needed")).count(),
        "leased": Assignment.objects.filter(state=Assignment.LEASED).count(),
    }


def test_32_concurrent_annotators_lose_nothing_and_double_nothing(transactional_db, tmp_path):
    with _shared_database(tmp_path):
        pair_ids, user_ids = _in_thread(_seed)
        barrier = threading.Barrier(ANNOTATORS)
        recorded, errors = [], []
        threads = [
            threading.Thread(target=_annotate, args=(uid, i, barrier, recorded, errors))
            for i, uid in enumerate(user_ids)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors[:3]
        state = _in_thread(_check)
    assert sorted(state["labels"]) == sorted(recorded)  # 0 lost labels, none extra
    assert max(state["per_person"].values()) == 1  # 0 duplicate labels
    assert state["over"] == 0 and max(state["per_pair"].values()) <= LABELS_NEEDED  # 0 over-assigned pairs
    assert state["done"] == {pid: state["per_pair"][pid] for pid in pair_ids}  # counters match the rows
    assert all(state["per_pair"][pid] == LABELS_NEEDED for pid in pair_ids)  # and every pair got its labels
    assert state["leased"] == 0
