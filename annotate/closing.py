"""Stop labelling a round when more labels would not change the next version much: once training on its labels
measures the held-out reward accuracy (training/evaluation.py) with a 95% interval narrower than the round's
close_width, the round closes, and says why. Closing is also a staff action with a reason of their own."""
from __future__ import annotations

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from .models import Assignment, LabellingRound, Pair, update_pairs
from .routing import wilson_interval


class ClosingError(Exception):
    """A round that cannot be closed as asked; the message is for a person."""


def close_round(round_: LabellingRound, reason: str) -> LabellingRound:
    """Close the round's labelling: its open pairs need no more labels (the labels given stay and still decide),
    people are given nothing more from it, and the reason is kept on the round."""
    reason = reason.strip()
    if not reason:
        raise ClosingError(f"round {round_.number}: say why it closes")
    with transaction.atomic():
        # FOR NO KEY UPDATE: a pair inserted into the round meanwhile (an import) does not wait on it; with FOR
        # UPDATE, an import holding one of the round's pairs and inserting another deadlocked with this
        locked = LabellingRound.objects.select_for_update(no_key=True).get(pk=round_.pk)
        if locked.closed_at is not None:
            raise ClosingError(f"round {round_.number} closed already ({locked.closed_reason})")
        # the leases on its pairs end with it: a page left open, or the API's next pair, was still served and its
        # label taken after the close, a label more than the pair needs deciding a round already frozen; a gold pair
        # of no round served in it too (else the one pair left on screen was the gold one). Before the pairs:
        # record_label locks a lease, then its pair; taken in the same order here, the two wait but never deadlock.
        Assignment.objects.filter(Q(pair__round=locked) | Q(served_in=locked),
                                  state=Assignment.LEASED).update(state=Assignment.EXPIRED)
        # in id order, as an import takes them (an UPDATE alone takes them in scan order)
        update_pairs(Pair.objects.filter(round=locked, labels_done__lt=F("labels_needed")),
                     labels_needed=F("labels_done"))
        locked.closed_at, locked.closed_reason = timezone.now(), reason[:2000]
        locked.save(update_fields=["closed_at", "closed_reason"])
    return locked


def heldout_interval(metrics: dict) -> tuple[int, float, float, float] | None:
    """(pairs, accuracy, low, high) of the held-out reward accuracy in a training run's metrics; None when the run
    measured no held-out pair."""
    pairs, accuracy = metrics.get("heldout/pairs"), metrics.get("heldout/reward_accuracy")
    if not pairs or accuracy is None or accuracy != accuracy:
        return None
    low, high = wilson_interval(accuracy * pairs, int(pairs))
    return int(pairs), float(accuracy), low, high


def close_if_enough(round_: LabellingRound, metrics: dict) -> str | None:
    """Close the round when its close_width is set and the held-out reward-accuracy interval in `metrics` is
    narrower; returns the reason it closed, or None (no width set, closed already, nothing measured, or wider)."""
    if round_.close_width is None or round_.closed_at is not None:
        return None
    found = heldout_interval(metrics)
    if found is None:
        return None
    pairs, accuracy, low, high = found
    if high - low >= round_.close_width:
        return None
    reason = (f"held-out reward accuracy {accuracy:.3f} on {pairs} pairs, 95% interval [{low:.3f}, {high:.3f}]: "
              f"width {high - low:.3f} is narrower than the {round_.close_width:g} set")
    try:
        return close_round(round_, reason).closed_reason
    except ClosingError:  # closed meanwhile by someone else
        return None
