"""Label quality for staff: agreement on pairs labelled by several people, accuracy on gold pairs, time per label,
and the pairs people disagree on. Outcomes are compared as stored ('a', 'b', 'tie', 'both_bad'), never as sides."""
from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations

from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, Q

from training.dpo.config import smoothing_for_agreement

from . import routing
from .agreement import cohen_kappa, krippendorff_alpha
from .models import BY_PEOPLE, A, Assignment, B, Label, LabellingRound, Pair


@dataclass
class PairwiseKappa:
    first: str
    second: str
    shared: int
    kappa: float | None


@dataclass
class Agreement:
    annotators: int
    overlapping_pairs: int
    kappa: float | None  # when exactly two people labelled the overlapping pairs
    alpha: float | None
    pairwise: list[PairwiseKappa] = field(default_factory=list)


@dataclass
class AnnotatorStats:
    username: str
    labels: int
    gold_seen: int
    gold_correct: int
    median_seconds: float | None
    mean_seconds: float | None
    outcomes: dict[str, int]

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_seen if self.gold_seen else None


@dataclass
class Disagreement:
    pair: Pair
    votes: dict[str, int]
    labels: list[Label]


def _labels(rounds: list[int] | None, include_automatic: bool):
    """Labels of the given rounds (None: all). Without include_automatic, people's only: neither a judge's nor a
    file's (the import account records an imported preference as a label, and it is no one's judgement here: it
    had counted as one more person in κ and α, and a dataset's disagreement with the team as the team's noise)."""
    labels = Label.objects.select_related("annotator", "pair")
    if not include_automatic:
        labels = labels.filter(BY_PEOPLE)
    if rounds is not None:
        # a gold pair of no round is served as part of the round it was drawn into (Assignment.served_in): its label
        # is that round's, for the person it was served to there
        served_here = Assignment.objects.filter(pair_id=OuterRef("pair_id"), annotator_id=OuterRef("annotator_id"),
                                                served_in__number__in=rounds)
        labels = labels.filter(Q(pair__round__number__in=rounds) | Q(Exists(served_here), pair__round__isnull=True))
    return labels


def agreement(rounds: list[int] | None = None, *, include_automatic: bool = False) -> Agreement:
    """Cohen's κ (two annotators) and Krippendorff's α (any number) over pairs with two or more labels."""
    by_pair: dict[int, dict[str, str]] = defaultdict(dict)
    for pair_id, username, choice in _labels(rounds, include_automatic).values_list(
        "pair_id", "annotator__username", "choice"
    ):
        by_pair[pair_id][username] = choice
    overlapping = {pid: votes for pid, votes in by_pair.items() if len(votes) >= 2}
    people = sorted({u for votes in overlapping.values() for u in votes})
    pairwise = []
    for first, second in combinations(people, 2):
        shared = [(v[first], v[second]) for v in overlapping.values() if first in v and second in v]
        if shared:
            pairwise.append(PairwiseKappa(first, second, len(shared), cohen_kappa(shared)))
    kappa = pairwise[0].kappa if len(people) == 2 and pairwise else None
    alpha = krippendorff_alpha([list(v.values()) for v in overlapping.values()])
    return Agreement(len(people), len(overlapping), kappa, alpha, pairwise)


def judge_agreements(rounds: list[int] | None = None) -> list[routing.JudgeAgreement]:
    """Each judge's agreement with people as routing measures it (people's majority, or a gold pair's answer), per
    prompt tag and overall (the overall row first), on the pairs whose judge labels are in the given rounds only.
    None: every round, the figure routing trusts a judge by."""
    return routing.judge_agreements(None if rounds is None else _labels(rounds, include_automatic=True))


@dataclass
class LabelNoise:
    """How often people's decided labels ("a" or "b") are wrong, from the two kinds of evidence a team has: pairs two
    people both labelled (`shared` comparisons, `agreed` of them alike; a pair k people decided counts k - 1, its
    agreement the share of its k(k-1)/2 pairs of people who agree) and gold pairs (`gold` labels, `gold_wrong` of
    them against the gold answer). Automatic judges' labels are not counted: this is about people."""

    shared: int
    agreed: float
    gold: int
    gold_wrong: int

    @property
    def observations(self) -> int:
        return self.shared + self.gold

    @property
    def flip_rate(self) -> float | None:
        """The share of labels wrong, ε: from the overlap, the ε that makes two independent people agree as often
        as they did (agreement q = (1 - ε)² + ε²; agreement at or below chance reads 0.5); from gold, the share
        wrong; the two weighed by their counts. None without evidence."""
        parts = []
        if self.shared:
            agreement = self.agreed / self.shared
            parts.append((self.shared, smoothing_for_agreement(agreement) if agreement > 0.5 else 0.5))
        if self.gold:
            parts.append((self.gold, self.gold_wrong / self.gold))
        return sum(n * e for n, e in parts) / sum(n for n, _ in parts) if parts else None

    def describe(self) -> str:
        found = []
        if self.shared:
            found.append(f"two people agreed on {self.agreed:.4g} of {self.shared} comparisons on shared pairs")
        if self.gold:
            found.append(f"{self.gold - self.gold_wrong} of {self.gold} labels on gold pairs were right")
        return "; ".join(found) or "no pair labelled by two people and no gold pair labelled"


def label_noise(rounds: list[int] | None = None) -> LabelNoise:
    """People's decided labels measured against each other (every two people on a pair both decided) and against
    the gold answer of gold pairs whose answer is decided."""
    by_pair: dict[int, list[str]] = defaultdict(list)
    gold = gold_wrong = 0
    labels = _labels(rounds, include_automatic=False).filter(choice__in=(A, B))
    for pair_id, choice, is_gold, gold_choice in labels.values_list("pair_id", "choice", "pair__is_gold",
                                                                    "pair__gold_choice"):
        by_pair[pair_id].append(choice)
        if is_gold and gold_choice in (A, B):
            gold += 1
            gold_wrong += choice != gold_choice
    shared, agreed = 0, 0.0
    for choices in by_pair.values():
        if len(choices) < 2:
            continue
        # k people give k - 1 independent comparisons, not the k(k-1)/2 pairs of them: weigh the pair that way
        combos = list(combinations(choices, 2))
        shared += len(choices) - 1
        agreed += (len(choices) - 1) * sum(a == b for a, b in combos) / len(combos)
    return LabelNoise(shared, agreed, gold, gold_wrong)


def annotator_stats(rounds: list[int] | None = None) -> list[AnnotatorStats]:
    """Each person's number of labels, accuracy on gold pairs and time per label."""
    rows: dict[int, list] = defaultdict(list)
    for label in _labels(rounds, include_automatic=True):
        rows[label.annotator_id].append(label)
    users = get_user_model().objects.in_bulk(list(rows))
    out = []
    for user_id, labels in rows.items():
        gold = [lb for lb in labels if lb.pair.is_gold and lb.pair.gold_choice]
        seconds = [lb.seconds for lb in labels if lb.seconds is not None]
        out.append(AnnotatorStats(
            username=users[user_id].username,
            labels=len(labels),
            gold_seen=len(gold),
            gold_correct=sum(1 for lb in gold if lb.choice == lb.pair.gold_choice),
            median_seconds=statistics.median(seconds) if seconds else None,
            mean_seconds=statistics.fmean(seconds) if seconds else None,
            outcomes=dict(Counter(lb.choice for lb in labels)),
        ))
    return sorted(out, key=lambda s: s.username)


def disagreements(rounds: list[int] | None = None, *, limit: int = 200) -> list[Disagreement]:
    """Pairs whose labels do not all give the same outcome, newest first."""
    by_pair: dict[int, list[Label]] = defaultdict(list)
    for label in _labels(rounds, include_automatic=True).order_by("created"):
        by_pair[label.pair_id].append(label)
    split = [pid for pid, labels in by_pair.items() if len({lb.choice for lb in labels}) > 1]
    split.sort(reverse=True)
    pairs = Pair.objects.select_related("prompt", "round").in_bulk(split[:limit])
    return [
        Disagreement(pairs[pid], dict(Counter(lb.choice for lb in by_pair[pid])), by_pair[pid])
        for pid in split[:limit]
    ]


def comments(rounds: list[int] | None = None, *, limit: int = 200) -> list[Label]:
    """Labels that carry a comment, newest first: what annotators wrote beside their choice."""
    return list(_labels(rounds, include_automatic=True).exclude(comment="").select_related("pair__prompt")
                .order_by("-created")[:limit])


@dataclass
class QueueChoice:
    """What a round's queue order chose: the margins of the pairs people labelled against those of every scored
    pair, and where routing and near-duplicate checks sent pairs."""

    round: LabellingRound
    scored: int
    mean_abs_margin_pool: float | None
    served: int  # pairs a person labelled
    mean_abs_margin_served: float | None
    served_disagreeing: int  # of those, pairs where a judge's label and the margin's sign disagreed
    routes: dict[str, int]


def _mean_abs(values: list[float]) -> float | None:
    return statistics.fmean(abs(v) for v in values) if values else None


def queue_choices(rounds: list[int] | None = None) -> list[QueueChoice]:
    """Per round: its order, and the mean |margin| of the pairs people labelled against the pool's."""
    found = LabellingRound.objects.order_by("number")
    if rounds is not None:
        found = found.filter(number__in=rounds)
    out = []
    for round_ in found:
        pairs = Pair.objects.filter(round=round_, is_gold=False)
        pool = list(pairs.exclude(margin=None).values_list("margin", flat=True))
        human = Label.objects.filter(BY_PEOPLE, pair__round=round_, pair__is_gold=False)
        served = list(pairs.filter(pk__in=human.values("pair_id")).values_list("pk", "margin"))
        judged = dict(Label.objects.filter(pair_id__in=[pk for pk, _ in served], is_automatic=True)
                      .values_list("pair_id", "choice"))
        clashes = sum(1 for pk, m in served if m is not None and (
            (judged.get(pk) == A and m < 0) or (judged.get(pk) == B and m > 0)))
        routes = dict(Counter(pairs.exclude(route="").values_list("route", flat=True)))
        out.append(QueueChoice(round_, len(pool), _mean_abs(pool), len(served),
                               _mean_abs([m for _, m in served if m is not None]), clashes, routes))
    return out
