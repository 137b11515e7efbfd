"""Figures of an evaluation and of a loop round, from plain counts: win rate with ties half, its interval, drift.

No Django here, so the arithmetic is tested on a fixed vote table alone.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from prefcore.outcomes import OUTCOMES

from .ratings import wilson_interval

LENGTH_DRIFT = 0.2  # a round whose answers grew by more than this share of the previous length...
WIN_GAIN = 0.05  # ...while its win rate rose by more than this gets a warning


def win_summary(outcomes: Iterable[str], *, a: str = "", b: str = "") -> dict:
    """Counts of a's wins, b's wins, ties and both-bad votes, b's win rate (ties and both bad count half) and its
    Wilson 95% interval, in the order `evaluate` prints them."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for outcome in outcomes:
        if outcome not in counts:
            raise ValueError(f"unknown outcome {outcome!r}: expected one of {', '.join(OUTCOMES)}")
        counts[outcome] += 1
    n = sum(counts.values())
    score = counts["b"] + 0.5 * (counts["tie"] + counts["both_bad"])
    low, high = wilson_interval(score, n)
    return {
        "a": a, "b": b, "n": n, "b_wins": counts["b"], "a_wins": counts["a"], "ties": counts["tie"],
        "both_bad": counts["both_bad"], "win_rate_b": _round(score / n if n else math.nan),
        "ci95": [_round(low), _round(high)],
    }


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def length_warning(win_rate: float, previous_win_rate: float, tokens: float, previous_tokens: float) -> str:
    """A warning when a round's win-rate gain came with a large increase in answer length, else ""."""
    if not previous_tokens or tokens is None or win_rate is None or previous_win_rate is None:
        return ""
    growth = tokens / previous_tokens - 1
    gain = win_rate - previous_win_rate
    if gain > WIN_GAIN and growth > LENGTH_DRIFT:
        # the rise of a rate in points, the growth of a length in per cent: both "%" read as two relative changes
        return (f"win rate rose {100 * gain:+.0f} points while answers grew {growth:+.0%} ({previous_tokens:.0f} → "
                f"{tokens:.0f} tokens): the judge may be rewarding length")
    return ""
