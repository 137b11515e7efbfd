"""Agreement between annotators and the majority rule, on plain lists of outcomes (no Django).

Outcomes are nominal categories; PrefLoop uses four: 'a', 'b', 'tie' and 'both_bad', kept apart throughout.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence


def cohen_kappa(pairs: Sequence[tuple[Hashable, Hashable]]) -> float | None:
    """Cohen's κ of two annotators from their (first, second) outcomes on the same items; None if undefined."""
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(1 for x, y in pairs if x == y) / n
    first, second = Counter(x for x, _ in pairs), Counter(y for _, y in pairs)
    expected = sum(first[c] * second[c] for c in first) / (n * n)
    if expected == 1.0:
        return None  # both always gave the same single outcome: chance agreement is total
    return (observed - expected) / (1.0 - expected)


def krippendorff_alpha(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Krippendorff's α (nominal) from each item's outcomes, any number of annotators, missing values allowed.

    Items with fewer than two outcomes are not pairable and are ignored. None when undefined (one category only).
    """
    coincidences: Counter = Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                pairs = n_c * (n_c - 1) if c == k else n_c * n_k
                coincidences[c, k] += pairs / (m - 1)
    totals: Counter = Counter()
    for (c, _), value in coincidences.items():
        totals[c] += value
    n = sum(totals.values())
    if n <= 1:
        return None
    disagree_observed = sum(v for (c, k), v in coincidences.items() if c != k)
    disagree_expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if disagree_expected == 0:
        return None
    return 1.0 - (n - 1) * disagree_observed / disagree_expected


def majority(outcomes: Sequence[Hashable]) -> tuple[Hashable | None, float]:
    """The outcome with strictly the most votes and its share of all votes; (None, share) on a tie for first."""
    if not outcomes:
        return None, 0.0
    ranked = Counter(outcomes).most_common()
    top, votes = ranked[0]
    share = votes / len(outcomes)
    if len(ranked) > 1 and ranked[1][1] == votes:
        return None, share
    return top, share
