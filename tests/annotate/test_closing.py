"""Stop when enough: a round closes its labelling once the held-out reward-accuracy interval is narrower than its
set width, and says why; people are then given nothing more from it."""
from __future__ import annotations

import pytest

from annotate import closing, services
from annotate.models import LabellingRound, Pair
from annotate.routing import wilson_interval

from .factories import make_pair, make_round, make_user

pytestmark = pytest.mark.django_db


def test_a_narrow_enough_interval_closes_the_round_and_says_why():
    round_ = make_round(close_width=0.15)
    labelled, still_open = make_pair(round=round_), make_pair(round=round_, labels_needed=3)
    person = make_user()
    services.label_pair(labelled.pk, person, "left")
    services.label_pair(still_open.pk, person, "left")
    # 200 pairs at 0.8: Wilson [0.739, 0.850], width 0.111 < 0.15
    reason = closing.close_if_enough(round_, {"heldout/pairs": 200, "heldout/reward_accuracy": 0.8})
    low, high = wilson_interval(160, 200)
    assert high - low < 0.15
    assert reason is not None and "0.800 on 200 pairs" in reason and f"{high - low:.3f}" in reason
    round_.refresh_from_db()
    assert round_.closed_at is not None and round_.closed_reason == reason
    still_open.refresh_from_db()
    assert still_open.labels_needed == still_open.labels_done == 1  # the label given stays, none more is asked
    assert services.next_pair_for(make_user()) is None


@pytest.mark.parametrize("metrics", [
    {"heldout/pairs": 40, "heldout/reward_accuracy": 0.8},  # width 0.24: more labels would still tell
    {},  # nothing held out was measured
    {"heldout/pairs": 0, "heldout/reward_accuracy": float("nan")},
])
def test_a_wide_or_missing_interval_leaves_the_round_open(metrics):
    round_ = make_round(close_width=0.15)
    pair = make_pair(round=round_)
    assert closing.close_if_enough(round_, metrics) is None
    assert LabellingRound.objects.get(pk=round_.pk).closed_at is None
    assert services.next_pair_for(make_user()).pair == pair


def test_without_a_width_set_a_round_never_closes_by_itself():
    round_ = make_round()
    assert closing.close_if_enough(round_, {"heldout/pairs": 10_000, "heldout/reward_accuracy": 0.9}) is None


def test_closing_by_hand_needs_a_reason_and_happens_once():
    round_ = make_round()
    make_pair(round=round_)
    with pytest.raises(closing.ClosingError, match="say why"):
        closing.close_round(round_, "  ")
    closing.close_round(round_, "budget spent")
    with pytest.raises(closing.ClosingError, match="closed already"):
        closing.close_round(round_, "again")
    assert Pair.objects.get(round=round_).labels_needed == 0


@pytest.mark.django_db(transaction=True)
def test_closing_a_round_while_an_import_adds_to_it_deadlocks_neither(tmp_path, monkeypatch):
    """A preference import locks a pair of the round it labels, then inserts new pairs into that round; closing the
    round locked the round and then updated its pairs. On PostgreSQL each waited on the other, and the deadlock
    ended one of them with an error (a 500 on the rounds page). The round is now locked FOR NO KEY UPDATE, which a
    new pair's reference to it does not wait on: the import writes, commits, and the closing goes on."""
    import json
    import threading
    import time

    from django.db import connection

    from annotate import importers
    from annotate.models import Label

    round_ = LabellingRound.objects.create(number=7)
    existing = make_pair(text_a="kept answer", text_b="other answer", round=round_)
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"prompt": existing.prompt.text, "chosen": "kept answer", "rejected": "other answer"})
                    + "\n" + json.dumps({"prompt": "a new question", "chosen": "yes", "rejected": "no"}) + "\n")
    importers.import_account()
    errors, locked = [], threading.Event()
    flush = importers._NewPairs.flush

    def held_flush(self) -> None:  # the pair on the existing prompt is locked by now; the new one is not inserted
        if threading.current_thread().name == "import" and not locked.is_set():
            locked.set()
            time.sleep(1.5)  # the closing takes the round's lock and waits on the locked pair meanwhile
        flush(self)

    monkeypatch.setattr(importers._NewPairs, "flush", held_flush)

    def run(name, work) -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            locked.set()
            connection.close()

    def close() -> None:
        locked.wait(60)
        closing.close_round(LabellingRound.objects.get(pk=round_.pk), "enough labels")

    threads = [threading.Thread(target=run, args=("import", lambda: importers.import_preferences(path, round_number=7)),
                                name="import"),
               threading.Thread(target=run, args=("close", close), name="close")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert LabellingRound.objects.get(pk=round_.pk).closed_at is not None
    assert Pair.objects.filter(round=round_).count() == 2 and Label.objects.count() == 2
