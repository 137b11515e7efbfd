"""What the labelling workspace does: lease the next pair to a person, record, undo and skip labels.

A pair is leased to one annotator at a time for PREFLOOP_LEASE_SECONDS; it is never shown twice to one person and
never leased beyond its need (labels done + live leases < labels needed). Leasing and labelling run in one
transaction each: on SQLite the settings make every transaction IMMEDIATE (one writer at a time, queued on the busy
timeout); on PostgreSQL the candidate pair is locked with SELECT ... FOR UPDATE SKIP LOCKED and its room re-checked.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Abs, Coalesce
from django.utils import timezone

from .dataset import DecidedPair, decided_pairs  # noqa: F401  (the training service imports it from here)
from .models import BOTH_BAD, LEFT, RIGHT, TIE, A, AnnotatorProfile, Assignment, B, Label, Pair, Round

LEASE_SECONDS = getattr(settings, "PREFLOOP_LEASE_SECONDS", 600)
UNDO_SECONDS = getattr(settings, "PREFLOOP_UNDO_SECONDS", 60)
STRENGTH_PROB = {"slight": 0.75, "clear": 1.0}
SIDE_KEYS = (LEFT, RIGHT, TIE, BOTH_BAD)


class LabelError(Exception):
    """A label that cannot be recorded; the message is for the annotator."""


@dataclass(frozen=True)
class Progress:
    done: int
    today: int
    remaining: int


def choice_for(side: str, left_is_a: bool) -> str:
    """The outcome in terms of the stored responses for a key pressed on the sides as shown."""
    if side == LEFT:
        return A if left_is_a else B
    if side == RIGHT:
        return B if left_is_a else A
    if side in (TIE, BOTH_BAD):
        return side
    raise LabelError(f"unknown side {side!r}: expected one of {', '.join(SIDE_KEYS)}")


def _live_leases(now, *, exclude_user=None):
    leases = Assignment.objects.filter(pair=OuterRef("pk"), state=Assignment.LEASED, expires_at__gt=now)
    if exclude_user is not None:
        leases = leases.exclude(annotator=exclude_user)
    return Coalesce(
        Subquery(leases.order_by().values("pair").annotate(n=Count("pk")).values("n")), Value(0),
        output_field=IntegerField(),
    )


def _unseen_by(user):
    """Pairs this person has never been given nor labelled (imported labels have no assignment)."""
    return Pair.objects.exclude(Exists(Assignment.objects.filter(pair=OuterRef("pk"), annotator=user))).exclude(
        Exists(Label.objects.filter(pair=OuterRef("pk"), annotator=user))
    )


def _open(queryset):
    """Regular pairs still short of labels (the condition of the pair_open_queue index, so it can serve them)."""
    return queryset.filter(is_gold=False, labels_done__lt=F("labels_needed"))


def _open_pairs(user, now, round_: Round | None):
    """Regular pairs of one round this person may be given now, in serving order."""
    pairs = _open(_unseen_by(user)).filter(round=round_) if round_ else _open(_unseen_by(user)).filter(round=None)
    pairs = pairs.annotate(taken=F("labels_done") + _live_leases(now)).filter(taken__lt=F("labels_needed"))
    if round_ is not None and round_.active_learning:
        return pairs.order_by(Abs("margin").asc(nulls_last=True), "created", "pk")
    return pairs.order_by("created", "pk")


def _rounds_in_order() -> list[Round | None]:
    """Oldest round first; pairs outside any round last."""
    return [*Round.objects.order_by("number"), None]


def _gold_pairs(user, round_id):
    return _unseen_by(user).filter(is_gold=True).filter(Q(round_id=round_id) | Q(round__isnull=True)).order_by("?")


def _lockable(queryset):
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True, of=("self",))
    return queryset


def _has_room(pair_id: int, user, now) -> bool:
    """A fresh look (a new statement, so a new snapshot on PostgreSQL) at whether the pair can take this person."""
    pair = Pair.objects.filter(pk=pair_id).values("labels_done", "labels_needed", "is_gold").first()
    if pair is None:
        return False
    if pair["is_gold"]:
        return True
    others = Assignment.objects.filter(pair_id=pair_id, state=Assignment.LEASED, expires_at__gt=now).exclude(
        annotator=user
    )
    return pair["labels_done"] + others.count() < pair["labels_needed"]


def _lease_expiry(now):
    return now + timedelta(seconds=LEASE_SECONDS)


_PAIR_SHOWN = ("round", "prompt", "response_a", "response_b")
_SHOWN = tuple(f"pair__{name}" for name in _PAIR_SHOWN)


def _current_lease(user, now) -> Assignment | None:
    return (
        Assignment.objects.select_related(*_SHOWN)
        .filter(annotator=user, state=Assignment.LEASED, expires_at__gt=now)
        .order_by("leased_at", "pk")
        .first()
    )


def _renew_or_expire_old_leases(user, now) -> Assignment | None:
    """A lease that ran out while its holder was away comes back to them if the pair still has room."""
    for old in Assignment.objects.filter(annotator=user, state=Assignment.LEASED, expires_at__lte=now):
        if _has_room(old.pair_id, user, now):
            Assignment.objects.filter(pk=old.pk).update(expires_at=_lease_expiry(now))
            return _current_lease(user, now)
        Assignment.objects.filter(pk=old.pk).update(state=Assignment.EXPIRED)
    return None


def next_pair_for(user, *, rng: random.Random | None = None) -> Assignment | None:
    """The pair this person should label now, leased to them with its sides randomised; None when none is left."""
    rng = rng or random.Random()
    now = timezone.now()
    current = _current_lease(user, now)
    if current is not None:
        return current
    with transaction.atomic():
        renewed = _renew_or_expire_old_leases(user, now)
        if renewed is not None:
            return renewed
        pair = _pick(user, now, rng)
        if pair is None:
            return None
        try:
            with transaction.atomic():
                return Assignment.objects.create(
                    pair=pair, annotator=user, left_is_a=rng.random() < 0.5, expires_at=_lease_expiry(now)
                )
        except IntegrityError:  # the same person in two tabs at once: the other tab's lease stands
            pass
    return _current_lease(user, now)


def _pick(user, now, rng) -> Pair | None:
    for round_ in _rounds_in_order():
        skipped: list[int] = []
        for _ in range(50):
            pair = _lockable(_open_pairs(user, now, round_).exclude(pk__in=skipped).select_related(*_PAIR_SHOWN)).first()
            if pair is None:
                break
            # On PostgreSQL the row lock came after the statement's snapshot: look again. SQLite's IMMEDIATE
            # transaction already holds the only write lock, so what the query saw still stands.
            if connection.vendor != "sqlite" and not _has_room(pair.pk, user, now):
                skipped.append(pair.pk)
                continue
            rate = round_.gold_rate if round_ else 0.0
            if rate > 0 and rng.random() < rate:
                gold = _lockable(_gold_pairs(user, pair.round_id).select_related(*_PAIR_SHOWN)).first()
                if gold is not None:
                    return gold
            return pair
    return None


def _assignment_for_label(assignment_or_pair_id, user) -> Assignment:
    pair_id = assignment_or_pair_id.pair_id if isinstance(assignment_or_pair_id, Assignment) else assignment_or_pair_id
    locked = Assignment.objects.select_for_update() if connection.features.has_select_for_update else Assignment.objects
    assignment = locked.filter(pair_id=pair_id, annotator=user).first()
    if assignment is not None:
        return assignment
    # No lease (an automatic labeller, or a direct call): take one now if the pair has room.
    now = timezone.now()
    if not Pair.objects.filter(pk=pair_id).exists():
        raise LabelError(f"pair {pair_id} does not exist")
    if not _has_room(pair_id, user, now):
        raise LabelError("this pair already has all the labels it needs")
    with transaction.atomic():
        return Assignment.objects.create(pair_id=pair_id, annotator=user, left_is_a=True, expires_at=now)


def record_label(
    assignment_or_pair_id: Assignment | int,
    user,
    side: str,
    strength: str | None = None,
    comment: str = "",
    seconds: float | None = None,
) -> Label:
    """Record a person's key press on a leased pair; submitting the same pair twice returns the first label."""
    if side not in SIDE_KEYS:
        raise LabelError(f"unknown side {side!r}: expected one of {', '.join(SIDE_KEYS)}")
    strength = strength or ""
    if strength and strength not in STRENGTH_PROB:
        raise LabelError(f"unknown strength {strength!r}: expected slight or clear")
    now = timezone.now()
    with transaction.atomic():
        assignment = _assignment_for_label(assignment_or_pair_id, user)
        existing = Label.objects.filter(pair_id=assignment.pair_id, annotator=user).first()
        if existing is not None:
            return existing
        if assignment.state == Assignment.SKIPPED:
            raise LabelError("you skipped this pair")
        if assignment.expires_at <= now and not _has_room(assignment.pair_id, user, now):
            raise LabelError("your lease on this pair ran out and others have labelled it; here is the next one")
        if seconds is None:
            seconds = (now - assignment.leased_at).total_seconds()
        choice = choice_for(side, assignment.left_is_a)
        is_automatic = AnnotatorProfile.objects.filter(user=user, is_automatic=True).exists()
        try:
            with transaction.atomic():
                label = Label.objects.create(
                    pair_id=assignment.pair_id, annotator=user, choice=choice, side=side,
                    left_is_a=assignment.left_is_a, strength=strength if choice in (A, B) else "",
                    preference_prob=STRENGTH_PROB.get(strength) if choice in (A, B) else None,
                    comment=(comment or "").strip()[:5000], seconds=max(0.0, min(float(seconds), 86400.0)),
                    is_automatic=is_automatic,
                )
        except IntegrityError:  # a double submit that raced past the check above
            return Label.objects.get(pair_id=assignment.pair_id, annotator=user)
        Assignment.objects.filter(pk=assignment.pk).update(state=Assignment.DONE)
        Pair.objects.filter(pk=assignment.pair_id).update(labels_done=F("labels_done") + 1)
    return label


def undo_last_label(user) -> Assignment | None:
    """Take back this person's last label if it is under a minute old; its pair is leased to them again."""
    now = timezone.now()
    with transaction.atomic():
        label = (
            Label.objects.filter(annotator=user, created__gte=now - timedelta(seconds=UNDO_SECONDS))
            .order_by("-created", "-pk")
            .first()
        )
        if label is None:
            return None
        pair_id = label.pair_id
        label.delete()
        Pair.objects.filter(pk=pair_id, labels_done__gt=0).update(labels_done=F("labels_done") - 1)
        # Other leases of this person (the pair shown after the undone label) go back to the queue, unseen.
        Assignment.objects.filter(annotator=user, state=Assignment.LEASED).exclude(pair_id=pair_id).delete()
        Assignment.objects.filter(pair_id=pair_id, annotator=user).update(
            state=Assignment.LEASED, leased_at=now, expires_at=_lease_expiry(now)
        )
    return Assignment.objects.select_related(*_SHOWN).get(pair_id=pair_id, annotator=user)


def skip(user, pair: Pair | int) -> Assignment:
    """Give the pair back to the queue; this person will not be shown it again."""
    pair_id = pair.pk if isinstance(pair, Pair) else pair
    with transaction.atomic():
        updated = Assignment.objects.filter(pair_id=pair_id, annotator=user).exclude(state=Assignment.DONE).update(
            state=Assignment.SKIPPED
        )
        if not updated and not Assignment.objects.filter(pair_id=pair_id, annotator=user).exists():
            Assignment.objects.create(
                pair_id=pair_id, annotator=user, left_is_a=True, state=Assignment.SKIPPED, expires_at=timezone.now()
            )
    return Assignment.objects.get(pair_id=pair_id, annotator=user)


def progress_for(user) -> Progress:
    """How many labels this person has given (in all and today) and how many open pairs they have not done yet."""
    start_of_day = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    labels = Label.objects.filter(annotator=user)
    # Counted from this person's side (few rows) and the open-queue index, never by scanning every pair.
    finished = set(
        Assignment.objects.filter(annotator=user, pair__is_gold=False, pair__labels_done__lt=F("pair__labels_needed"))
        .exclude(state=Assignment.LEASED).values_list("pair_id", flat=True)
    )
    finished |= set(
        labels.filter(pair__is_gold=False, pair__labels_done__lt=F("pair__labels_needed")).values_list("pair_id", flat=True)
    )
    remaining = _open(Pair.objects.all()).count() - len(finished)
    counts = labels.aggregate(done=Count("pk"), today=Count("pk", filter=Q(created__gte=start_of_day)))
    return Progress(done=counts["done"], today=counts["today"], remaining=remaining)
