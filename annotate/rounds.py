"""Labelling rounds set up from the app's own pages: guidelines, overlap (labels each pair needs), the share of
gold pairs served, queue order, routing and closing, and which pairs are gold with what answer.

The admin edits the same rows; these functions add what a page needs beyond a plain save: a change of overlap
reaches the round's pairs, and a gold answer is checked against the pair.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, F, Q

from .models import A, B, Pair, Round


class RoundError(Exception):
    """Something a person can fix on the page, saying what and where."""


@dataclass
class RoundRow:
    round: Round
    pairs: int
    open_pairs: int
    gold_pairs: int


def round_rows() -> list[RoundRow]:
    """Every labelling round with its pair counts, newest first."""
    counted = Round.objects.annotate(
        n_pairs=Count("pairs", filter=Q(pairs__is_gold=False)),
        n_open=Count("pairs", filter=Q(pairs__is_gold=False, pairs__labels_done__lt=F("pairs__labels_needed"))),
        n_gold=Count("pairs", filter=Q(pairs__is_gold=True)),
    ).order_by("-number")
    return [RoundRow(r, r.n_pairs, r.n_open, r.n_gold) for r in counted]


def save_round(round_: Round, *, overlap_changed: bool) -> int:
    """Save the round; when its overlap changed, its regular pairs need that many labels from now on (pairs that
    have as many stop being served, pairs that have fewer come back). Returns how many pairs changed. A closed round
    keeps its pairs as they are: closing froze them."""
    with transaction.atomic():
        round_.save()
        if not overlap_changed or round_.closed_at is not None:
            return 0
        return (Pair.objects.filter(round=round_, is_gold=False)
                .exclude(labels_needed=round_.labels_per_pair).update(labels_needed=round_.labels_per_pair))


def set_gold(round_: Round, pair_id: int, answer: str) -> Pair:
    """Make a pair a gold pair of this round with a known answer ("a" or "b": the pair's own answers, whatever side
    a person sees them on). Gold pairs are served at the round's gold rate and score each person's accuracy."""
    if answer not in (A, B):
        raise RoundError(f"gold answer: expected a or b, got {answer!r}")
    with transaction.atomic():
        pair = Pair.objects.select_for_update().filter(pk=pair_id).first()
        if pair is None:
            raise RoundError(f"pair {pair_id}: no such pair")
        if pair.round_id not in (None, round_.pk):
            raise RoundError(f"pair {pair_id} belongs to round {pair.round.number}, not round {round_.number}")
        pair.is_gold, pair.gold_choice, pair.round = True, answer, round_
        pair.save(update_fields=["is_gold", "gold_choice", "round"])
    return pair


def unset_gold(round_: Round, pair_id: int) -> Pair:
    """A gold pair of this round becomes a regular pair again (its labels stay)."""
    with transaction.atomic():
        pair = Pair.objects.select_for_update().filter(pk=pair_id, round=round_, is_gold=True).first()
        if pair is None:
            raise RoundError(f"pair {pair_id}: not a gold pair of round {round_.number}")
        pair.is_gold, pair.gold_choice = False, ""
        pair.save(update_fields=["is_gold", "gold_choice"])
    return pair
