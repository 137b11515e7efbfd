"""The one vocabulary of a pairwise decision, shared by labels, judges, votes and statistics.

An outcome names the stored responses: "a", "b", "tie", "both_bad". A side names where a response was shown to a
person: "left", "right" (or "tie", "both_bad", which need no side). Pages show responses in a random order per
viewer (`left_is_a`), so a key press is a side, and what is stored is an outcome; the two functions below are the
only place that turns one into the other.
"""
from __future__ import annotations

A, B, TIE, BOTH_BAD = "a", "b", "tie", "both_bad"
OUTCOMES = (A, B, TIE, BOTH_BAD)
OUTCOME_LABELS = {A: "response A", B: "response B", TIE: "tie", BOTH_BAD: "both bad"}
LEFT, RIGHT = "left", "right"
SIDES = (LEFT, RIGHT, TIE, BOTH_BAD)
SIDE_LABELS = {LEFT: "left", RIGHT: "right", TIE: "tie", BOTH_BAD: "both bad"}


def outcome_for_side(side: str, left_is_a: bool) -> str:
    """The outcome a key press means: "left" is response A when A was shown on the left. A ValueError names an
    unknown side."""
    if side == LEFT:
        return A if left_is_a else B
    if side == RIGHT:
        return B if left_is_a else A
    if side in (TIE, BOTH_BAD):
        return side
    raise ValueError(f"unknown side {side!r}: expected one of {', '.join(SIDES)}")


def side_for_outcome(outcome: str, left_is_a: bool) -> str:
    """Where the chosen response was shown ("left", "right"), or the outcome itself for a tie or both bad."""
    if outcome in (A, B):
        return LEFT if (outcome == A) == left_is_a else RIGHT
    if outcome in (TIE, BOTH_BAD):
        return outcome
    raise ValueError(f"unknown outcome {outcome!r}: expected one of {', '.join(OUTCOMES)}")


def cut_rule(a_cut: bool, b_cut: bool, judged: str) -> str:
    """The judge's outcome `judged` on two responses, with the rule for answers cut at the token limit: when exactly
    one was cut, the finished one wins whatever the judge preferred (a judge that likes long or list-heavy answers
    would pick the cut one, and each round would teach the model to run into the limit), unless the judge found both
    bad: an empty or looping finished answer is not made the chosen one by the rule (it was, decided before the judge
    was asked, and trained on). Both or neither cut: the judge's outcome."""
    if a_cut == b_cut or judged == BOTH_BAD:
        return judged
    return B if a_cut else A
