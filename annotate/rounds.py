"""Labelling rounds set up from the app's own pages: guidelines, overlap (labels each pair needs), the share of
gold pairs served, queue order, routing and closing, and which pairs are gold with what answer.

The admin edits the same rows; these functions add what a page needs beyond a plain save: a change of overlap
reaches the round's pairs, and a gold answer is checked against the pair.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.db.models.functions import Greatest

from .models import A, B, Label, LabellingRound, Pair, Route, update_pairs


class RoundError(Exception):
    """Something a person can fix on the page, saying what and where."""


@dataclass
class RoundRow:
    round: LabellingRound
    pairs: int
    open_pairs: int
    gold_pairs: int


def round_rows() -> list[RoundRow]:
    """Every labelling round with its pair counts, newest first."""
    counted = LabellingRound.objects.annotate(
        n_pairs=Count("pairs", filter=Q(pairs__is_gold=False)),
        n_open=Count("pairs", filter=Q(pairs__is_gold=False, pairs__labels_done__lt=F("pairs__labels_needed"))
                     & ~Q(pairs__route__in=(Route.DUPLICATE, Route.JUDGE))),  # the queue never serves these
        n_gold=Count("pairs", filter=Q(pairs__is_gold=True)),
    ).order_by("-number")
    return [RoundRow(r, r.n_pairs, r.n_open, r.n_gold) for r in counted]


SETTINGS = ("guidelines", "labels_per_pair", "gold_rate", "queue_order", "route_judge", "route_threshold",
            "audit_share", "close_width")  # what a page or the API changes on a round (its number never)


@dataclass(frozen=True)
class Saved:
    changed: int  # pairs whose labels needed changed with the overlap
    step: int  # the new overlap less the one stored before


def save_round(round_: LabellingRound, fields: Iterable[str] = SETTINGS) -> Saved:
    """Save the round's `fields` (settings the page or the request changed); when its overlap changed, each pair
    people label needs that many more (or fewer) labels from now on: a pair that has enough stops being served, one
    that has fewer comes back. Left alone: pairs whose judge label was accepted (routing), near duplicates held back,
    pairs imported with their labels, gold pairs, and every pair of a closed round (closing froze them). A pair sent
    to people after a judge labelled it keeps counting the judge's label on top of the people it needs.

    The stored row is locked and read again, and only the fields given are written onto it: two saves at once each
    step from what the other stored (not both from what they read before), a save that did not change the overlap
    leaves another's change alone, and a round closed meanwhile stays closed. LabellingRound.DoesNotExist when the
    round was deleted meanwhile."""
    fields = [name for name in fields if name in SETTINGS]
    with transaction.atomic():
        # FOR NO KEY UPDATE, as close_round: a pair inserted into the round meanwhile does not wait on it
        stored = LabellingRound.objects.select_for_update(no_key=True).get(pk=round_.pk)
        step = round_.labels_per_pair - stored.labels_per_pair if "labels_per_pair" in fields else 0
        for name in fields:
            setattr(stored, name, getattr(round_, name))
        if fields:
            stored.save(update_fields=fields)
        if not step or stored.closed_at is not None:
            return Saved(0, step)
        imported_labels = Label.objects.filter(pair_id=OuterRef("pk"), annotator__annotator_profile__is_import=True)
        pairs = (Pair.objects.filter(round=stored, is_gold=False, route__in=(Route.NONE, Route.PEOPLE))
                 .exclude(Exists(imported_labels)))
        # in id order, as an import or a closing takes them
        return Saved(update_pairs(pairs, labels_needed=Greatest(F("labels_needed") + step, F("labels_done"), 0)), step)


def set_gold(round_: LabellingRound, pair_id: int, answer: str) -> Pair:
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


def unset_gold(round_: LabellingRound, pair_id: int) -> Pair:
    """A gold pair of this round becomes a regular pair again (its labels stay)."""
    with transaction.atomic():
        pair = Pair.objects.select_for_update().filter(pk=pair_id, round=round_, is_gold=True).first()
        if pair is None:
            raise RoundError(f"pair {pair_id}: not a gold pair of round {round_.number}")
        pair.is_gold, pair.gold_choice = False, ""
        pair.save(update_fields=["is_gold", "gold_choice"])
    return pair
