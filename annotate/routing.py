"""Routing a round's pairs between a judge and people by how far the judge can be trusted.

A judge's trust is its measured agreement with people on the pairs both labelled (people's majority, or a gold
pair's answer), per prompt tag, with a 95% Wilson interval. In a round with a routing judge, people are given only
the pairs routed to them: where the lower bound of the judge's agreement on the pair's tag is below the round's
threshold, or the pair was drawn for the audit share. Elsewhere the judge's label is the decision, weighed as a soft
label from that agreement (as cDPO smooths a label by its flip rate), never below 0.5. A pair people began before the
round had a routing judge stays theirs: routing sends it to people whatever the judge's agreement.
"""
from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce

from .agreement import majority
from .models import (
    BY_PEOPLE,
    A,
    AnnotatorProfile,
    Assignment,
    B,
    Label,
    LabellingRound,
    Pair,
    Route,
    in_lock_order,
    lock_pairs,
    update_pairs,
)

Z95 = 1.959963984540054
ALL_TAGS = None  # the key of the agreement over every tag


def wilson_interval(agreed: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion agreed/n; (0, 1) when nothing was measured."""
    if n <= 0:
        return 0.0, 1.0
    p = agreed / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class JudgeAgreement:
    judge: str
    tag: str | None  # None: every tag
    pairs: int  # pairs the judge labelled and people decided
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.pairs if self.pairs else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.agreed, self.pairs)

    @property
    def low(self) -> float:
        return self.interval[0]

    @property
    def preference_prob(self) -> float:
        """The soft label a label of this judge carries: its agreement with people, never below 0.5 (a judge no
        better than a coin says nothing, and below that it would prefer the other answer)."""
        return max(0.5, self.rate if self.rate is not None else 0.5)


def judge_agreement(judge_path: str, labels=None) -> dict[str | None, JudgeAgreement]:
    """The judge's agreement with people per prompt tag (and over every tag, key None), on the pairs it labelled
    that people decided: their majority outcome (a tie for first decides nothing), or a gold pair's answer.
    `labels`: the judge's labels to count, a Label queryset (a round's page: its round's); None: all of them, the
    figure routing trusts a judge by."""
    judge_labels = dict((Label.objects if labels is None else labels).filter(
        is_automatic=True, annotator__annotator_profile__judge_path=judge_path).values_list("pair_id", "choice"))
    people: dict[int, list[str]] = defaultdict(list)
    for pair_id, choice in Label.objects.filter(BY_PEOPLE, pair_id__in=list(judge_labels)).values_list(
            "pair_id", "choice"):
        people[pair_id].append(choice)
    counts: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
    for pair_id, tag, is_gold, gold_choice in Pair.objects.filter(pk__in=list(judge_labels)).values_list(
            "pk", "prompt__tag", "is_gold", "gold_choice"):
        decided = gold_choice if is_gold and gold_choice else majority(people.get(pair_id, []))[0]
        if decided is None:
            continue
        for key in (tag, ALL_TAGS):
            counts[key][0] += 1
            counts[key][1] += judge_labels[pair_id] == decided
    return {key: JudgeAgreement(judge_path, key, n, k) for key, (n, k) in counts.items()}


def judge_agreements(labels=None) -> list[JudgeAgreement]:
    """Every judge's agreement with people, per tag and overall (the overall row first), for the quality page;
    `labels` as judge_agreement's."""
    paths = sorted(set(AnnotatorProfile.objects.filter(is_automatic=True).exclude(judge_path="")
                       .values_list("judge_path", flat=True)))
    out = []
    for path in paths:
        found = judge_agreement(path, labels)
        if found:
            out.extend(sorted(found.values(), key=lambda a: (a.tag is not None, a.tag or "")))
    return out


def audited(pair_id: int, share: float) -> bool:
    """Whether a pair is drawn for the audit share: a hash of its id, so the draw is the same every time it is asked."""
    digest = hashlib.sha256(f"prefloop-audit:{pair_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def trusted(agreement: JudgeAgreement | None, threshold: float) -> bool:
    return agreement is not None and agreement.pairs > 0 and agreement.low >= threshold


@dataclass
class Routed:
    round: int
    to_judge: int = 0
    to_people: int = 0
    audited: int = 0


def route_round(round_: LabellingRound) -> Routed:
    """Route the round's pairs its judge has labelled and no person has been given: to the judge (its label stands,
    weighed by its agreement; the pair needs no more labels) where its agreement on the pair's tag is trusted and
    the pair is not drawn for audit, else to people (the round's labels_per_pair people after the judge). A pair
    sent to people that nobody has been given yet is looked at again, as agreement is measured.

    A pair still short of labels that people were given (or labelled) before the round had a routing judge is sent
    to people as it is, needing one label more for the judge's: the queue gives people only the pairs sent to them
    once a round routes, and routing passed over pairs people had, so such a pair stayed open and unserved."""
    summary = Routed(round_.number)
    if not round_.route_judge:
        return summary
    agreement = judge_agreement(round_.route_judge)
    by_judge = Label.objects.filter(pair_id=OuterRef("pk"), is_automatic=True,
                                    annotator__annotator_profile__judge_path=round_.route_judge)
    given_to_people = Assignment.objects.filter(pair_id=OuterRef("pk")).exclude(
        annotator__annotator_profile__is_automatic=True)
    by_people = Label.objects.filter(pair_id=OuterRef("pk"), is_automatic=False)
    pairs = (Pair.objects.filter(round=round_, is_gold=False, route__in=(Route.NONE, Route.PEOPLE))
             .filter(Exists(by_judge)).exclude(Exists(given_to_people)).exclude(Exists(by_people))
             .select_related("prompt"))
    with transaction.atomic():
        # the round first, as closing locks it: a round closed meanwhile is left alone (routing asked its pairs for
        # people's labels again after closing had settled them, and they stayed open in the closed round)
        if not list(in_lock_order(LabellingRound.objects.filter(pk=round_.pk, closed_at__isnull=True)).values("pk")):
            return summary
        # short of people's labels, not of labels: a pair one person skipped (or let run out) that the judge then
        # filled was passed over, and its untrusted judge's label decided it alone
        people_labels = (Label.objects.filter(pair_id=OuterRef("pk"), is_automatic=False).values("pair_id")
                         .annotate(n=Count("pk")).values("n"))
        began = Pair.objects.filter(pk__in=list(
            Pair.objects.filter(round=round_, is_gold=False, route=Route.NONE)
            .filter(Exists(by_judge)).filter(Q(Exists(given_to_people)) | Q(Exists(by_people)))
            .annotate(people=Coalesce(Subquery(people_labels), 0)).filter(people__lt=F("labels_needed"))
            .values_list("pk", flat=True)))
        # both sets locked at once, in id order, as every writer of several pairs takes them (a second ascending
        # pass could wait on a lower id than one it holds)
        lock_pairs(began | pairs.select_related(None))
        # the judge's label, counted in labels_done, comes on top of the people the pair needed, as for every pair
        # sent to people (and a pair the judge filled is open again to them)
        summary.to_people += update_pairs(began, route=Route.PEOPLE, labels_needed=F("labels_needed") + 1)
        for pair in in_lock_order(pairs):
            tag_agreement = agreement.get(pair.prompt.tag)
            if trusted(tag_agreement, round_.route_threshold) and not audited(pair.pk, round_.audit_share):
                Pair.objects.filter(pk=pair.pk).update(route=Route.JUDGE, labels_needed=pair.labels_done)
                Label.objects.filter(pair=pair, is_automatic=True, choice__in=(A, B),
                                     annotator__annotator_profile__judge_path=round_.route_judge).update(
                    preference_prob=tag_agreement.preference_prob)
                summary.to_judge += 1
            else:
                summary.audited += trusted(tag_agreement, round_.route_threshold)
                Pair.objects.filter(pk=pair.pk).update(route=Route.PEOPLE,
                                                       labels_needed=pair.labels_done + round_.labels_per_pair)
                summary.to_people += 1
    return summary


def route_pairs(judge_path: str) -> list[Routed]:
    """Route every open round whose routing judge is this one (after it labelled, see annotate.judging.label_pairs)."""
    return [route_round(r) for r in LabellingRound.objects.filter(route_judge=judge_path, closed_at__isnull=True)]
