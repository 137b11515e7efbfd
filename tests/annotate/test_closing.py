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
