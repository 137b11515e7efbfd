"""What the labelling workspace does: lease the next pair to a person, record, undo and skip labels.

A pair is leased to one annotator at a time for PREFLOOP_LEASE_SECONDS; it is never shown twice to one person and
never leased beyond its need (labels done + live leases < labels needed). A person holds one open lease at most
(however many of their requests race: the database refuses a second, see Assignment's constraints, and the loser
shows the winner's lease), and a label, skip or undo is accepted only for the pair leased to that person. Leasing
and labelling run in one transaction each: on SQLite the settings make every transaction IMMEDIATE (one writer at a
time, queued on the busy timeout); on PostgreSQL the candidate pair is locked with SELECT ... FOR UPDATE SKIP LOCKED
and its room re-checked.
"""
from __future__ import annotations

import functools
import math
import random
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField, Case, Exists, F, OuterRef, Q, Subquery, When
from django.db.models.expressions import RawSQL
from django.db.models.functions import Abs, Coalesce
from django.utils import timezone

from prefcore.outcomes import SIDES as SIDE_KEYS
from prefcore.outcomes import outcome_for_side

from .dataset import DecidedPair, decided_pairs  # noqa: F401  (the training service imports it from here)
from .feedback import saved_line
from .models import A, AnnotatorProfile, Assignment, B, Label, LabellingRound, Pair, QueueOrder, Route, in_lock_order

try:
    import fcntl
except ImportError:  # Windows: SQLite's own busy timeout alone
    fcntl = None

LEASE_SECONDS = getattr(settings, "PREFLOOP_LEASE_SECONDS", 600)
UNDO_SECONDS = getattr(settings, "PREFLOOP_UNDO_SECONDS", 60)
STRENGTH_PROB = {"slight": 0.75, "clear": 1.0}
# routes whose pairs no one is given nor may label: held back as near-duplicates (annotate.selection), or decided by
# the judge (annotate.routing)
NOT_SERVED = (Route.DUPLICATE, Route.JUDGE)


class LabelError(Exception):
    """A label that cannot be recorded; the message is for the annotator."""


def _writer_lock_path() -> Path | None:
    """The file writers queue on, beside a SQLite database file; None on PostgreSQL or an in-memory database."""
    if fcntl is None or connection.vendor != "sqlite" or connection.is_in_memory_db():
        return None
    return Path(f"{connection.settings_dict['NAME']}.writers.lock")


@contextmanager
def _write_transaction() -> Iterator[None]:
    """transaction.atomic(), first queued on a file lock when the database is a SQLite file.

    SQLite lets one writer in at a time and makes the others poll with a sleeping busy handler (naps of 1, 2, 5 ...
    up to 100 ms), so under load the write lock sat free while the waiters slept. A lock on a file (a new open file
    each time, so threads of one process queue too) wakes the next writer as soon as the last one commits. Inside a
    caller's transaction it adds nothing: that caller may already hold SQLite's lock.
    """
    path = _writer_lock_path()
    if path is None or connection.in_atomic_block:
        with transaction.atomic():
            yield
        return
    with open(path, "ab") as queue:
        fcntl.flock(queue, fcntl.LOCK_EX)
        try:
            with transaction.atomic():
                yield
        finally:
            fcntl.flock(queue, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Progress:
    done: int
    today: int
    remaining: int


def choice_for(side: str, left_is_a: bool) -> str:
    """The outcome in terms of the stored responses for a key pressed on the sides as shown."""
    try:
        return outcome_for_side(side, left_is_a)
    except ValueError as exc:
        raise LabelError(str(exc)) from None


def _unseen_by(user):
    """Pairs this person has never been given nor labelled (imported labels have no assignment)."""
    return Pair.objects.filter(RawSQL(_sql()["unseen"], (user.pk, user.pk), output_field=BooleanField()))


def _open(queryset):
    """Regular pairs still short of labels (the condition of the pair_open_queue index, so it can serve them)."""
    return queryset.filter(is_gold=False, labels_done__lt=F("labels_needed"))


@functools.cache
def _sql() -> dict[str, str]:
    """WHERE texts on the pair table. "unseen" (params: user, user): this person was never given the pair nor
    labelled it. "room" (params: LEASED, now): labels done + others' live leases leave room for one more.

    Written as SQL because building the same through the ORM (two Exists, a counting Subquery) cost more Python
    time per key press than running every query of the request; the outer pair table keeps its own name."""
    q = connection.ops.quote_name
    pair, assignment, label = (q(model._meta.db_table) for model in (Pair, Assignment, Label))
    return {
        "unseen": f"NOT EXISTS (SELECT 1 FROM {assignment} x WHERE x.pair_id = {pair}.id AND x.annotator_id = %s)"
                  f" AND NOT EXISTS (SELECT 1 FROM {label} y WHERE y.pair_id = {pair}.id AND y.annotator_id = %s)",
        "room": f"{pair}.labels_done + (SELECT COUNT(*) FROM {assignment} z WHERE z.pair_id = {pair}.id"
                f" AND z.state = %s AND z.expires_at > %s) < {pair}.labels_needed",
    }


def _open_pairs(user, now, round_: LabellingRound | None):
    """Regular pairs of one round this person may be given now, in serving order (the round's queue_order).

    "uncertain": the smallest |margin| first (pairs the current version cannot yet tell apart); "disagreement": first
    the pairs where an automatic judge's label and the margin's sign disagree (the most confident of them first), then
    as "uncertain". Pairs not scored yet come after the scored ones, oldest first. Near-duplicate pairs held back by
    annotate.selection are never served."""
    pairs = _open(_unseen_by(user).filter(round=round_) if round_ else _unseen_by(user).filter(round=None))
    pairs = pairs.exclude(route__in=NOT_SERVED)
    room = (Assignment.LEASED, connection.ops.adapt_datetimefield_value(now))
    pairs = pairs.filter(RawSQL(_sql()["room"], room, output_field=BooleanField()))
    if round_ is not None and round_.route_judge and not is_automatic(user):
        pairs = pairs.filter(route=Route.PEOPLE)  # the rest waits for the judge, or is the judge's (annotate.routing)
    order = round_.queue_order if round_ is not None else QueueOrder.RANDOM
    if order == QueueOrder.DISAGREEMENT:
        pairs = pairs.annotate(disagrees=Exists(_judge_disagrees()))
        first = Case(When(disagrees=True, then=-Abs("margin")), default=Abs("margin"))
        return pairs.order_by(F("disagrees").desc(), first.asc(nulls_last=True), "created", "pk")
    if order == QueueOrder.UNCERTAIN:
        return pairs.order_by(Abs("margin").asc(nulls_last=True), "created", "pk")
    return pairs.order_by("created", "pk")


def is_automatic(user) -> bool:
    """Whether this account is an automatic labeller's (a judge's), not a person's."""
    return AnnotatorProfile.objects.filter(user=user, is_automatic=True).exists()


def _judge_disagrees():
    """An automatic label of the outer pair that prefers the answer its margin ranks lower."""
    return Label.objects.filter(pair_id=OuterRef("pk"), is_automatic=True).filter(
        Q(choice=A, pair__margin__lt=0) | Q(choice=B, pair__margin__gt=0))


def _rounds_in_order() -> list[LabellingRound | None]:
    """Oldest open round first (a closed round serves nothing more); pairs outside any round last."""
    return [*LabellingRound.objects.filter(closed_at__isnull=True).order_by("number"), None]


def _gold_pairs(user, round_id):
    # never one held back or the judge's: lease_pair refuses to lease it (_not_served), and record_label its label
    return (_unseen_by(user).filter(is_gold=True).filter(Q(round_id=round_id) | Q(round__isnull=True))
            .exclude(route__in=NOT_SERVED).order_by("?"))


def _lockable(queryset):
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True, of=("self",))
    return queryset


def _has_room(pair_id: int, user, now) -> bool:
    """A fresh look (a new statement, so a new snapshot on PostgreSQL) at whether the pair can take this person: never
    a pair held back or decided by the judge since (a run-out lease on one was renewed, and its label taken)."""
    pair = Pair.objects.filter(pk=pair_id).values("labels_done", "labels_needed", "is_gold", "route").first()
    if pair is None or pair["route"] in NOT_SERVED:
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
_SHOWN = (*(f"pair__{name}" for name in _PAIR_SHOWN), "served_in")


def _leases(user) -> list[Assignment]:
    """This person's open leases (live or run out), oldest first, with the pair as shown: one query."""
    return list(
        Assignment.objects.select_related(*_SHOWN).filter(annotator=user, state=Assignment.LEASED)
        .order_by("leased_at", "pk")
    )


def _live(leases: list[Assignment], now) -> Assignment | None:
    return next((lease for lease in leases if lease.expires_at > now), None)


def _current_lease(user, now) -> Assignment | None:
    return _live(_leases(user), now)


def _renew_or_expire_old_leases(user, now) -> Assignment | None:
    """A lease that ran out while its holder was away comes back to them if the pair still has room."""
    for old in Assignment.objects.filter(annotator=user, state=Assignment.LEASED, expires_at__lte=now):
        if _has_room(old.pair_id, user, now):
            Assignment.objects.filter(pk=old.pk).update(expires_at=_lease_expiry(now))
            return _current_lease(user, now)
        Assignment.objects.filter(pk=old.pk).update(state=Assignment.EXPIRED)
    return None


def next_pair_for(user, *, rng: random.Random | None = None, only: Q | None = None,
                  exclude: Collection[int] = ()) -> Assignment | None:
    """The pair this person should label now, leased to them with its sides randomised; None when none is left.
    `only`: among these pairs alone (a loop's judge labels its own round's pairs: it labelled every open pair in the
    queue, people's too); a lease held on another is given back. `exclude`: pair ids not to be given now (a judge's
    batch passes over the pairs withdrawn from it); gold pairs are still mixed in, unless `only` is given."""
    rng = rng or random.Random()
    now = timezone.now()
    if only is not None:  # live or run out (a run-out one is renewed below): none outside `only` is served
        Assignment.objects.filter(annotator=user, state=Assignment.LEASED).exclude(
            pair__in=Pair.objects.filter(only).values("pk")).delete()
    leases = _leases(user)
    withdrawn = [lease.pk for lease in leases if lease.pair.route in NOT_SERVED]
    if withdrawn:
        # held back or given to the judge after it was leased (annotate.selection ends such leases as it holds a
        # pair back; one leased meanwhile is ended here): its label would be refused, and the page showed it again
        Assignment.objects.filter(pk__in=withdrawn, state=Assignment.LEASED).update(state=Assignment.EXPIRED)
        leases = [lease for lease in leases if lease.pk not in withdrawn]
    current = _live(leases, now)
    if current is not None:
        return current
    try:
        with _write_transaction():
            if leases:  # only run-out leases: look at them again under the write lock
                renewed = _renew_or_expire_old_leases(user, now)
                if renewed is not None:
                    return renewed
            pair = _pick(user, now, rng, only, exclude)
            if pair is None:
                return None
            return Assignment.objects.create(
                pair=pair, annotator=user, left_is_a=rng.random() < 0.5, expires_at=_lease_expiry(now),
                served_in=getattr(pair, "served_in", None),
            )
    except IntegrityError:
        # One open lease per person, kept by the database: a request of the same person that raced this one (another
        # tab, a double click, 20 at once) leased first, and its lease stands. (On PostgreSQL this insert waited for
        # that request to commit; on SQLite the requests ran one after the other.)
        return _current_lease(user, now)


def _pick(user, now, rng, only: Q | None = None, exclude: Collection[int] = ()) -> Pair | None:
    for round_ in _rounds_in_order():
        skipped: list[int] = list(exclude)
        for _ in range(50):
            open_pairs = _open_pairs(user, now, round_) if only is None else _open_pairs(user, now, round_).filter(only)
            pair = _lockable(open_pairs.exclude(pk__in=skipped).select_related(*_PAIR_SHOWN)).first()
            if pair is None:
                break
            # On PostgreSQL the row lock came after the statement's snapshot: look again. SQLite's IMMEDIATE
            # transaction already holds the only write lock, so what the query saw still stands.
            if connection.vendor != "sqlite" and not _has_room(pair.pk, user, now):
                skipped.append(pair.pk)
                continue
            rate = round_.gold_rate if round_ else 0.0
            if rate > 0 and only is None and rng.random() < rate:  # (none of a chosen set of pairs is gold)
                gold = _lockable(_gold_pairs(user, pair.round_id).exclude(pk__in=list(exclude))
                                 .select_related(*_PAIR_SHOWN)).first()
                if gold is not None:
                    gold.served_in = round_ if gold.round_id is None else None
                    return gold
            return pair
    return None


@dataclass(frozen=True)
class Lease:
    """A lease named by its id, as the label page and the API name the pair on screen (see _this): record_label
    finds the pair through it in the statement that locks the lease, so naming it costs no query."""

    pk: int


def names_pairs_by_id(user) -> bool:
    """Whether this account may name a leased pair by the pair's id, not the lease's: staff and automatic labellers,
    who see pair ids anyway. A person may not: a skip or a label named by pair id answered differently for the pair
    on their screen than for any other, so trying ids found it, and an id out of the serving order marked it gold."""
    return user.is_staff or is_automatic(user)


class ByLeaseOnly(LabelError):
    """A person named a pair by its id: refused, whatever the id (names_pairs_by_id)."""


BY_LEASE = ("name the pair by its lease, as the label page and POST /label/next give it (a page opened before that "
            "rule names pairs by id: reload it); pairs are named by id only by staff and automatic labellers")


def named(user, *, lease: int | None = None, pair: int | None = None) -> Lease | int:
    """What a key press or an API call names, as record_label, skip and return_to_skipped take it: the lease on the
    person's screen, or, from staff and automatic labellers only, the pair's id (ByLeaseOnly otherwise). The one
    reading of both front ends' `lease` and `pair` fields."""
    if lease is not None:
        return Lease(lease)
    if pair is None:
        raise LabelError("expected the id of the lease on your screen")
    if not names_pairs_by_id(user):
        raise ByLeaseOnly(BY_LEASE)
    return pair


def _foreign_lease(user, target: Lease | Pair | int) -> bool:
    """Whether a target that named none of this person's pairs named a lease of someone else's (or none at all): a
    refusal says so (one query, on that path alone)."""
    return isinstance(target, Lease) and not Assignment.objects.filter(pk=target.pk, annotator=user).exists()


def _this(target: Lease | Pair | int) -> Q:
    """The assignment a target names, among one person's: by the lease's id, or by the pair's. Leases are the handle
    the label page, the skipped list and the API show for the pair on screen. Pair ids carried a gold tell: regular
    pairs are served oldest first and gold ones drawn at random, so an id below the last one served marked a gold
    pair before it was answered. Leases are made as pairs are served, gold or not, so their ids only go up."""
    if isinstance(target, Lease):
        return Q(pk=target.pk)
    return Q(pair_id=target.pk if isinstance(target, Pair) else target)


def _locked_assignment(user, **where) -> Assignment | None:
    """This person's assignment (by pair_id= or by the lease's pk=), locked where the database can, with
    `existing_label_id` (their label of it, if any) and `by_automatic` (whether they are an automatic labeller) read in
    the same query."""
    features = connection.features
    # the lease's row only (`of`): the round is joined for its closing time, on the nullable side of an outer join,
    # which PostgreSQL will not lock
    locked = (Assignment.objects.select_for_update(of=("self",)) if features.has_select_for_update_of
              else Assignment.objects.select_for_update() if features.has_select_for_update else Assignment.objects)
    return (
        locked.filter(annotator=user, **where)
        .annotate(
            existing_label_id=Subquery(Label.objects.filter(pair_id=OuterRef("pair_id"), annotator=user).values("pk")[:1]),
            by_automatic=Exists(AnnotatorProfile.objects.filter(user=user, is_automatic=True)),
            # the round the pair was served in: its own, or the round a gold pair of none was drawn into
            round_closed_at=Coalesce(F("served_in__closed_at"), F("pair__round__closed_at")),
            pair_route=F("pair__route"),
        )
        .first()
    )


def lease_pair(pair_id: int, user) -> Assignment:
    """Lease one chosen pair to this person (left shown as A), for code that labels pairs it picked itself (scripts,
    tests); people and judges are given theirs by next_pair_for. The pair must be unseen by them and have room, and
    they must hold no other open lease."""
    now = timezone.now()
    with _write_transaction():
        pair = Pair.objects.select_related("round").filter(pk=pair_id).first()
        if pair is None:
            raise LabelError(f"pair {pair_id} does not exist")
        why = _not_served(pair, user)
        if why:
            raise LabelError(f"pair {pair_id} {why}: the label queue does not serve it")
        if Assignment.objects.filter(pair_id=pair_id, annotator=user).exists() or Label.objects.filter(
            pair_id=pair_id, annotator=user
        ).exists():
            raise LabelError(f"pair {pair_id} was given to {user} before")
        if not _has_room(pair_id, user, now):
            raise LabelError("this pair already has all the labels it needs")
        held = Assignment.objects.filter(annotator=user, state=Assignment.LEASED).values_list("pair_id", flat=True)
        if held:
            raise LabelError(f"{user} holds a lease on pair {held[0]}: label or skip it first")
        try:
            with transaction.atomic():
                return Assignment.objects.create(pair_id=pair_id, annotator=user, left_is_a=True,
                                                 expires_at=_lease_expiry(now))
        except IntegrityError:  # another lease of this person (or of this pair to them) committed meanwhile
            raise LabelError(f"{user} was given a pair meanwhile: label or skip it first") from None


def _not_served(pair: Pair, user, *, given: bool = False) -> str | None:
    """Why the label queue (next_pair_for) never gives this pair to this person, or None: a chosen lease may not
    reach what the queue holds back (a closed round, a near-duplicate, a pair the judge decides).

    `given`: the pair was given to them before (skipped, on their screen). Such a pair does not wait for the round's
    routing judge: routing sends the pairs people were given to people (annotate.routing.route_round), and a regular
    one refused while a gold one (never routed) was not told a gold pair apart before it was answered."""
    round_ = pair.round
    if round_ is not None and round_.closed_at is not None:
        return f"is in labelling round {round_.number}, which is closed"
    if pair.route == Route.DUPLICATE:
        return "is held back as a near-duplicate of another pair"
    if pair.route == Route.JUDGE:
        return "is decided by the automatic judge"
    if (round_ is not None and round_.route_judge and pair.route != Route.PEOPLE and not pair.is_gold
            and not given and not is_automatic(user)):
        return f"waits for round {round_.number}'s judge, which sends people only the pairs it cannot decide"
    return None


def label_pair(pair_id: int, user, side: str, **fields) -> Label:
    """lease_pair, then record_label: one chosen pair labelled by code, through a lease like everyone else's."""
    return record_label(lease_pair(pair_id, user), user, side, **fields)


def record_label(
    assignment_or_pair_id: Assignment | Lease | int,
    user,
    side: str,
    strength: str | None = None,
    comment: str = "",
    seconds: float | None = None,
) -> Label:
    """Record a person's key press on the pair leased to them; the same label submitted twice returns the stored one,
    and another answer for a pair they labelled is refused (they undo it first).

    A pair that is not leased to this person (never given to them, skipped, or their lease ended) is refused with a
    LabelError. `seconds` (the time the page measured) is kept only up to the time the server has leased the pair
    for; without it, that lease time is the label's time."""
    if side not in SIDE_KEYS:
        raise LabelError(f"unknown side {side!r}: expected one of {', '.join(SIDE_KEYS)}")
    strength = strength or ""
    if strength and strength not in STRENGTH_PROB:
        raise LabelError(f"unknown strength {strength!r}: expected slight or clear")
    target = assignment_or_pair_id
    if isinstance(target, Lease):
        pair_id, where = None, {"pk": target.pk}
    else:
        pair_id = target.pair_id if isinstance(target, Assignment) else target
        where = {"pair_id": pair_id}
    now = timezone.now()
    try:
        with _write_transaction():
            assignment = _locked_assignment(user, **where)
            if assignment is None:
                what = f"lease {target.pk} is not yours" if pair_id is None else "that pair is not leased to you"
                raise LabelError(f"{what}: only the pair on your screen can be labelled")
            pair_id = assignment.pair_id
            if assignment.existing_label_id is not None:
                return _resubmitted(Label.objects.get(pk=assignment.existing_label_id), side, strength, comment)
            if assignment.state == Assignment.SKIPPED:
                raise LabelError("you skipped this pair")
            if assignment.pair_route == Route.DUPLICATE:  # held back while it was on screen (annotate.selection)
                raise LabelError("that pair was held back: its two answers are nearly the same, so it is not labelled; "
                                 "here is the next one")
            if assignment.pair_route == Route.JUDGE:
                raise LabelError("that pair is decided by the automatic judge, so it is not labelled; here is the next "
                                 "one")
            if assignment.state != Assignment.LEASED:
                raise LabelError("your lease on that pair has ended; here is the next one")
            if assignment.round_closed_at is not None and assignment.leased_at < assignment.round_closed_at:
                # leased as the round closed (close_round ends the leases it finds): a lease given after the close
                # is an undone label's, leased back so its correction counts
                raise LabelError("that pair's labelling round has closed; here is the next one")
            if assignment.expires_at <= now and not _has_room(pair_id, user, now):
                raise LabelError("your lease on this pair ran out and others have labelled it; here is the next one")
            leased_for = max(0.0, (now - assignment.leased_at).total_seconds())
            seconds = leased_for if seconds is None or not math.isfinite(seconds) else min(float(seconds), leased_for)
            choice = choice_for(side, assignment.left_is_a)
            label = Label.objects.create(
                pair_id=pair_id, annotator=user, choice=choice, side=side, left_is_a=assignment.left_is_a,
                strength=strength if choice in (A, B) else "",
                preference_prob=STRENGTH_PROB.get(strength) if choice in (A, B) else None,
                comment=(comment or "").strip()[:5000], seconds=max(0.0, min(seconds, 86400.0)),
                is_automatic=assignment.by_automatic,
            )
            Assignment.objects.filter(pk=assignment.pk).update(state=Assignment.DONE)
            Pair.objects.filter(pk=pair_id).update(labels_done=F("labels_done") + 1)
    except IntegrityError:  # a double submit that raced past the check above: all of this one was rolled back
        label = Label.objects.filter(pair_id=pair_id, annotator=user).first()
        if label is None:
            raise
        return _resubmitted(label, side, strength, comment)
    return label


def _resubmitted(label: Label, side: str, strength: str, comment: str) -> Label:
    """The label stored when the same one is submitted again (a double click, a retried request); another answer
    for a pair this person has labelled is refused, so it is never reported saved while the first one stays."""
    same = (label.side == side and label.strength == (strength if side in ("left", "right") else "")
            and label.comment == (comment or "").strip()[:5000])
    if not same:
        raise LabelError(f"you labelled that pair already ({saved_line(label.side, label.strength)[7:]}): "
                         "undo that label (u, within a minute of it) to answer again")
    return label


def undo_last_label(user, lease: int | None = None) -> Assignment | None:
    """Take back this person's last label if it is under a minute old (None otherwise); its pair is leased to them
    again. `lease` (the API's): the label given through that lease, and an undo sent again once it was done answers
    the same lease, leased again, rather than taking back the label before it as well (a retry after a lost reply
    undid two labels, and the second took away the lease the first had given back). A gold pair's label is taken back like any other. Refusing it, which kept the first answer for gold
    accuracy when the counters told a gold pair after it was answered, became the tell itself: "u" pressed at once
    answered "nothing to undo" for a gold pair alone. Nothing tells a gold pair after answering now, so an undo of
    one is as likely a correction as any other."""
    now = timezone.now()
    # Only a label given through a lease (so on a pair this person was shown) comes back to them.
    leased = Assignment.objects.filter(pair_id=OuterRef("pair_id"), annotator=user, state=Assignment.DONE)
    with _write_transaction():
        labels = Label.objects.filter(annotator=user, created__gte=now - timedelta(seconds=UNDO_SECONDS))
        if lease is not None:
            named = Assignment.objects.filter(pk=lease, annotator=user).values_list("pair_id", "state").first()
            if named is None:
                return None
            if named[1] == Assignment.LEASED:  # undone already (this request sent again): on screen, as it was
                return Assignment.objects.select_related(*_SHOWN).get(pk=lease)
            labels = labels.filter(pair_id=named[0])
        # not on a pair withdrawn since (held back, or the judge's): it came back on screen, where no label is taken,
        # and the label was gone for good
        label = (labels.filter(Exists(leased)).exclude(pair__route__in=NOT_SERVED)
                 .order_by("-created", "-pk").first())
        if label is None:
            return None
        pair_id = label.pair_id
        # Its round first, locked as closing locks it: an undo and a closing at the same moment come one after the
        # other, so the closing either sees the label undone or is seen closed here.
        round_id = Pair.objects.filter(pk=pair_id).values_list("round_id", flat=True).first()
        closed = round_id is not None and any(
            in_lock_order(LabellingRound.objects.filter(pk=round_id)).values_list("closed_at", flat=True))
        if not Label.objects.filter(pk=label.pk).delete()[0]:  # undone meanwhile ("u" pressed twice at once)
            # a named lease's undo sent twice at once: the other request undid it, and this one answers as a retry
            # does (it answered "nothing to undo")
            return None if lease is None else Assignment.objects.select_related(*_SHOWN).filter(
                pk=lease, state=Assignment.LEASED).first()
        Pair.objects.filter(pk=pair_id, labels_done__gt=0).update(labels_done=F("labels_done") - 1)
        if closed:  # a closed round's pairs need no labels they lack (close_round): the undone one is not asked for
            Pair.objects.filter(pk=pair_id, labels_needed__gt=F("labels_done")).update(labels_needed=F("labels_done"))
        # Other leases of this person (the pair shown after the undone label) go back to the queue, unseen.
        Assignment.objects.filter(annotator=user, state=Assignment.LEASED).exclude(pair_id=pair_id).delete()
        Assignment.objects.filter(pair_id=pair_id, annotator=user).update(
            state=Assignment.LEASED, leased_at=now, expires_at=_lease_expiry(now)
        )
    return Assignment.objects.select_related(*_SHOWN).get(pair_id=pair_id, annotator=user)


def skip(user, target: Lease | Pair | int) -> Assignment:
    """Give the pair leased to this person (named by its lease, or by the pair: see named) back to the queue; they
    will not be shown it again."""
    this = _this(target)
    with _write_transaction():
        updated = Assignment.objects.filter(this, annotator=user, state=Assignment.LEASED).update(
            state=Assignment.SKIPPED
        )
        if not updated and not Assignment.objects.filter(this, annotator=user, state=Assignment.SKIPPED).exists():
            mine = Assignment.objects.filter(this, annotator=user).select_related("pair__round").first()
            why = _not_served(mine.pair, user, given=True) if mine is not None else None
            if why:  # taken from their screen meanwhile (held back, its round closed): said, not "not yours"
                raise LabelError(f"that pair {why}: nothing to skip; here is the next one")
            what = f"lease {target.pk} is not yours" if _foreign_lease(user, target) else "that pair is not leased to you"
            raise LabelError(f"{what}: only the pair on your screen can be skipped")
    return Assignment.objects.get(this, annotator=user)


def skipped_pairs(user) -> list[Assignment]:
    """The pairs this person skipped in rounds still open, oldest skip first: their list to return to. Every such pair
    stays listed, one others have given all its labels too (returned to, its label is one more): a gold pair wants
    every person's label, so a list that dropped filled pairs kept gold ones alone, and what stayed on it was gold,
    before it was answered."""
    return list(Assignment.objects.filter(_shown_round_open(), annotator=user, state=Assignment.SKIPPED)
                .exclude(pair__route__in=NOT_SERVED)  # held back since: not anyone's to label
                .select_related("pair__prompt").order_by("leased_at", "pk"))


def _shown_round_open() -> Q:
    """Assignments whose pair was served in a round still open (or in none): its own round, or, for a gold pair of
    none, the round it was drawn into (served_in), which a skipped list kept after that round closed, and only gold."""
    own = Q(served_in__isnull=True) & (Q(pair__round__isnull=True) | Q(pair__round__closed_at__isnull=True))
    return own | Q(served_in__isnull=False, served_in__closed_at__isnull=True)


def return_to_skipped(user, target: Lease | Pair | int) -> Assignment:
    """Lease a pair this person skipped (named by its lease, or by the pair: see named) to them again (the pair on
    their screen goes back to the queue); it is the next pair the label page shows them, on the sides they saw
    before."""
    now = timezone.now()
    with _write_transaction():
        skipped = Assignment.objects.filter(_this(target), annotator=user, state=Assignment.SKIPPED).first()
        if skipped is None:
            if _foreign_lease(user, target):
                raise LabelError(f"lease {target.pk} is not yours: only your own skipped pairs can be returned to")
            raise LabelError("that pair is not on your skipped list")
        pair_id = skipped.pair_id
        if not Assignment.objects.filter(_shown_round_open(), pk=skipped.pk).exists():
            raise LabelError("that pair is in a labelling round that has closed: nothing to return to")
        # held back since it was skipped (a near-duplicate, the judge's): the queue no longer serves it, and a
        # return was a way round that, its label counted in training and agreement
        why = _not_served(Pair.objects.select_related("round").get(pk=pair_id), user, given=True)
        if why:
            raise LabelError(f"that pair {why}: nothing to return to")
        Assignment.objects.filter(annotator=user, state=Assignment.LEASED).delete()
        # leased now: a label's time without the page's own timer is counted from leased_at, and the first serving's
        # gave a pair returned to hours after its skip hours of labelling (the round is open: checked above)
        skipped.state, skipped.leased_at, skipped.expires_at = Assignment.LEASED, now, _lease_expiry(now)
        skipped.save(update_fields=["state", "leased_at", "expires_at"])
    return skipped


@functools.cache
def _progress_sql() -> str:
    """One statement for the five counters, counted from this person's side (few rows) and the open-queue index,
    never by scanning every pair. (The ORM took longer to build it than the database to answer it.)"""
    q = connection.ops.quote_name
    pair, assignment, label, round_ = (q(model._meta.db_table) for model in (Pair, Assignment, Label, LabellingRound))
    # the condition of the pair_open_queue index, less the pairs the queue never serves people: held back as
    # near-duplicate answers, the judge's, a closed round's, or a routing round's not (yet) sent to people. Counted,
    # they kept "remaining" above zero while the queue had nothing to give.
    is_open = (f"NOT p.is_gold AND p.labels_done < (p.labels_needed) AND p.route NOT IN "
               f"('{Route.DUPLICATE.value}', '{Route.JUDGE.value}') AND NOT EXISTS (SELECT 1 FROM {round_} r WHERE "
               f"r.id = p.round_id AND (r.closed_at IS NOT NULL OR (r.route_judge <> '' AND "
               f"p.route <> '{Route.PEOPLE.value}')))")
    return (
        f"SELECT (SELECT COUNT(*) FROM {label} WHERE annotator_id = %s),"
        f" (SELECT COUNT(*) FROM {label} WHERE annotator_id = %s AND created >= %s),"
        f" (SELECT COUNT(*) FROM {pair} p WHERE {is_open}),"
        f" (SELECT COUNT(*) FROM {pair} p WHERE (p.id IN (SELECT pair_id FROM {assignment} WHERE annotator_id = %s"
        f" AND state NOT IN (%s, %s)) OR p.id IN (SELECT pair_id FROM {label} WHERE annotator_id = %s)) AND {is_open}),"
        f" (SELECT COUNT(*) FROM {label} g JOIN {pair} p ON p.id = g.pair_id WHERE g.annotator_id = %s AND p.is_gold"
        f" AND NOT EXISTS (SELECT 1 FROM {round_} r WHERE r.id = p.round_id AND r.closed_at IS NOT NULL)"
        # nor a gold pair of no round served in a round since closed: the round's own pairs left the count with it
        f" AND NOT EXISTS (SELECT 1 FROM {assignment} a JOIN {round_} r ON r.id = a.served_in_id WHERE"
        f" a.pair_id = p.id AND a.annotator_id = g.annotator_id AND r.closed_at IS NOT NULL))"
    )


def open_pair_count() -> int:
    """Pairs in the queue that still want labels (gold pairs are shown among them, not counted): the same condition
    as progress_for's "remaining" before this person's own are taken off."""
    return Pair.objects.filter(is_gold=False, labels_done__lt=F("labels_needed")).exclude(
        route__in=NOT_SERVED).exclude(round__closed_at__isnull=False).exclude(
        Q(round__route_judge__gt="") & ~Q(route=Route.PEOPLE)).count()


def progress_for(user) -> Progress:
    """How many labels this person has given (in all and today) and how many open pairs they have not done yet
    (open pairs less those they labelled or let expire). A pair they skipped stays counted (it is on their skipped
    list, to return to): skipping a pair changes no counter, so the counters cannot tell a gold pair (never
    counted) from a regular one before it is answered, which an annotator could then return to and answer with care.
    A gold pair answered (in a round still open) is taken off "remaining" as a regular one is: it fell by one for a
    regular label and stayed for a gold one, which told the annotator which of their answers were measured. So the
    count may reach 0 a few pairs before the queue has none left for them (as many as the gold pairs they answered)."""
    start_of_day = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    params = (user.pk, user.pk, connection.ops.adapt_datetimefield_value(start_of_day), user.pk, Assignment.LEASED,
              Assignment.SKIPPED, user.pk, user.pk)
    with connection.cursor() as cursor:
        cursor.execute(_progress_sql(), params)
        done, today, open_pairs, finished, gold_answered = cursor.fetchone()
    return Progress(done=done, today=today, remaining=max(0, open_pairs - finished - gold_answered))
