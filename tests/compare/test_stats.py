"""Evaluation figures on a fixed vote table: counts, win rate with ties and both-bad half, Wilson interval."""
import math

import pytest

from compare.stats import length_warning, win_summary


def wilson(successes, n, z=1.96):
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_counts_win_rate_and_interval_on_a_fixed_vote_table():
    votes = ["b"] * 30 + ["a"] * 10 + ["tie"] * 6 + ["both_bad"] * 4
    s = win_summary(votes, a="base", b="round-1")
    assert (s["a"], s["b"], s["n"], s["b_wins"], s["a_wins"], s["ties"], s["both_bad"]) == (
        "base", "round-1", 50, 30, 10, 6, 4)
    assert s["win_rate_b"] == pytest.approx(0.7)  # (30 + 0.5 * 10) / 50
    low, high = wilson(35, 50)
    assert s["ci95"] == [pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4)]
    assert s["ci95"][0] < 0.7 < s["ci95"][1]


def test_all_ties_is_an_even_win_rate_and_an_empty_table_has_no_rate():
    assert win_summary(["tie", "both_bad"])["win_rate_b"] == 0.5
    empty = win_summary([])
    assert empty["n"] == 0 and empty["win_rate_b"] is None and empty["ci95"] == [None, None]
    with pytest.raises(ValueError, match="unknown outcome 'left'"):
        win_summary(["left"])


def test_length_warning_only_when_the_gain_comes_with_much_longer_answers():
    assert "answers grew +50%" in length_warning(0.7, 0.5, 150, 100)
    # the win rate's rise in points, not "+20%" (a relative rise would be +40%): found by an outside review
    assert length_warning(0.7, 0.5, 150, 100).startswith("win rate rose +20 points while answers grew +50%")
    assert length_warning(0.7, 0.5, 110, 100) == ""  # longer, but not by much
    assert length_warning(0.5, 0.5, 200, 100) == ""  # longer, but no gain to explain
