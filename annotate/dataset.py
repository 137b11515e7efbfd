"""The decided pairs: each pair's labels resolved by majority into chosen and rejected responses.

Ties and "both bad" decide a pair without giving a chosen/rejected row; a tie for first place decides nothing.
Gold pairs are decided by their known answer. The training service builds a round's data set from here, and exports
read it: pairs on eval prompts are left out of both, whatever path they came in by (eval prompts measure the model;
training on them would make the measurement meaningless), and so are pairs held back as near-duplicates
(annotate.selection), whatever labels they got before they were held back (people would only tie them; one label
given before the hold-back decided the pair alone).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from django.db.models import Prefetch, Q, QuerySet

from generation.models import Prompt, Response

from .agreement import majority
from .models import MAX_NUMBER, TIE, A, B, Label, Pair, Route


class DecidedPair(NamedTuple):
    pair: Pair
    chosen: Response
    rejected: Response
    preference_prob: float


@dataclass
class Decision:
    """A decided pair with the labels that decided it, for exports and pages."""

    pair: Pair
    chosen: Response
    rejected: Response
    preference_prob: float
    vote_share: float
    labels: list[Label] = field(default_factory=list)


def _soft_prob(winner: str, labels: list[Label]) -> float:
    """Probability that the chosen response is preferred, from every a/b/tie vote and its strength."""
    probs = []
    for label in labels:
        if label.choice == TIE:
            probs.append(0.5)
        elif label.choice in (A, B):
            p = label.preference_prob if label.preference_prob is not None else 1.0
            probs.append(p if label.choice == winner else 1.0 - p)
    return sum(probs) / len(probs) if probs else 1.0


def _strength_prob(winner: str, labels: list[Label]) -> float:
    """Mean strength of the votes for the chosen response (a vote without a strength counts as 1.0)."""
    probs = [label.preference_prob if label.preference_prob is not None else 1.0
             for label in labels if label.choice == winner]
    return sum(probs) / len(probs) if probs else 1.0


def decide(pair: Pair, labels: list[Label], *, soft_labels: bool = False) -> Decision | None:
    """The pair's chosen and rejected responses, or None if its outcome is a tie, both bad, or undecided."""
    if pair.is_gold and pair.gold_choice in (A, B):
        # decided by its known answer; the share is still what its labels say: those that agree with that answer
        winner = pair.gold_choice
        share = sum(label.choice == winner for label in labels) / len(labels) if labels else 1.0
        prob = 1.0
    else:
        if pair.route == Route.PEOPLE:
            # Routed to people (annotate.routing): the judge was not trusted on the pair's tag, or the pair was drawn
            # to audit it, so only people's labels decide, and a pair no person has labelled yet is undecided. The
            # judge's label alone trained at full weight (1.0), above a trusted judge's (weighed by its agreement).
            # A round that closes before a person labels such a pair leaves it undecided for good: it is neither
            # trained on nor exported.
            labels = [label for label in labels if not label.is_automatic]
        winner, share = majority([label.choice for label in labels])
        if winner not in (A, B):
            return None
        prob = _soft_prob(winner, labels) if soft_labels else _strength_prob(winner, labels)
        if prob < 0.5:
            # Soft labels that weigh the other answer higher (two slight votes against one clear one): the row is
            # oriented by them, so preference_prob stays the chance that `chosen` is preferred, from 0.5 to 1.
            winner, prob = (B if winner == A else A), 1.0 - prob
            share = sum(label.choice == winner for label in labels) / len(labels)
    chosen, rejected = (pair.response_a, pair.response_b) if winner == A else (pair.response_b, pair.response_a)
    return Decision(pair, chosen, rejected, prob, share, labels)


def candidate_pairs(*, rounds: list[int] | None = None, include_eval: bool = False) -> QuerySet[Pair]:
    """The pairs `decisions` reads (of the given round numbers): those with a label or a gold answer, less those
    held back; none of them may be decided (a tie), but with none there is certainly nothing to export."""
    pairs = (Pair.objects.filter(Q(labels_done__gt=0) | Q(is_gold=True, gold_choice__in=[A, B]))
             .exclude(route=Route.DUPLICATE))  # held back: its labels (given before the hold-back) decide nothing
    if rounds is not None:  # a number no round can have matches nothing (and SQLite could not even look it up)
        pairs = pairs.filter(round__number__in=[r for r in rounds if 0 <= r <= MAX_NUMBER])
    if not include_eval:
        pairs = pairs.exclude(prompt__split=Prompt.EVAL)
    return pairs


READ_PAGE = 500  # pairs read a query at a time (with their labels, responses and prompts)


def _pages(pairs: QuerySet[Pair]) -> Iterator[Pair]:
    """`pairs` (ordered by pk) a page of READ_PAGE at a time, each page one query read whole. QuerySet.iterator held
    one cursor open from the first pair to the last, and with it SQLite's read snapshot: a write from this connection
    between two pairs (an export job's progress report) was refused at once with "database is locked" once another
    process had written meanwhile (a Cancel, another job's progress, a label), and the export failed."""
    after = None
    while True:
        page = list((pairs if after is None else pairs.filter(pk__gt=after))[:READ_PAGE])
        yield from page
        if len(page) < READ_PAGE:
            return
        after = page[-1].pk


def decisions(
    *,
    rounds: list[int] | None = None,
    min_agreement: float | None = None,
    include_automatic: bool = True,
    soft_labels: bool = False,
    include_eval: bool = False,
    same_answers: bool = True,
    progress: Callable[[int], None] | None = None,
    counted: Callable[[int], None] | None = None,
) -> list[Decision]:
    """Every decided pair (of the given round numbers), oldest first, with its labels; pairs on eval prompts only
    when asked for (pages that show labels, never training data). `same_answers=False` leaves out pairs whose two
    answers are one text, as exports do: such a row teaches nothing (training leaves them out too, and counts them).
    Pairs held back as near-duplicates (route "duplicate") are never among them, for training, exports and pages
    alike, whatever labels they got before the hold-back; nor are pairs routed to people that no person has labelled
    (decide). `progress(n)` is told of each n pairs read (decided or not): reading them is most of an export's time;
    `counted(n)`, before the reading, how many pairs it will read (one COUNT query, made only when asked)."""
    labels = Label.objects.select_related("annotator").order_by("created", "pk")
    if not include_automatic:
        labels = labels.filter(is_automatic=False)
    pairs = (
        candidate_pairs(rounds=rounds, include_eval=include_eval)
        .select_related("prompt", "response_a", "response_b", "round")
        .prefetch_related(Prefetch("labels", queryset=labels, to_attr="counted_labels"))
        .order_by("pk")
    )
    if counted is not None:
        counted(pairs.count())
    out = []
    for pair in _pages(pairs):
        if progress is not None:
            progress(1)
        if not same_answers and pair.response_a.text == pair.response_b.text:
            continue
        decision = decide(pair, pair.counted_labels, soft_labels=soft_labels)
        if decision is None:
            continue
        # a gold pair is decided by its known answer, whoever missed it: the agreement filter leaves it in
        if min_agreement is not None and not pair.is_gold and decision.vote_share < min_agreement:
            continue
        out.append(decision)
    return out


def decided_pairs(
    *,
    rounds: list[int] | None = None,
    min_agreement: float | None = None,
    include_automatic: bool = True,
    soft_labels: bool = False,
) -> list[DecidedPair]:
    """(pair, chosen, rejected, preference_prob) for every decided pair, the shape the trainer reads."""
    return [
        DecidedPair(d.pair, d.chosen, d.rejected, d.preference_prob)
        for d in decisions(
            rounds=rounds, min_agreement=min_agreement, include_automatic=include_automatic, soft_labels=soft_labels
        )
    ]
