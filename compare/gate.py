"""The promotion gate's rule, on plain counts: does a candidate version's blind evaluation against the current one
earn it the promotion? No Django here, so the rule is tested on a fixed vote table alone.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .ratings import wilson_interval

# A figure at its bound passes: the figures are ratios of counts, and float arithmetic left some of them a rounding
# error past it (a 50% rate from three voters' thirds read 49.99999999999999%, a cut share exactly 10 points above
# base's read 10.000000000000003 points). A real difference between two such ratios is far larger than this, and
# so is the precision of the one measured figure among them, the KL a token.
AT_BOUND = 1e-9


@dataclass(frozen=True)
class GateRule:
    """The bounds a candidate must meet (prefloop/settings.py's PREFLOOP_GATE_* give the product's)."""

    min_votes: int = 16
    min_win_rate: float = 0.5
    min_lower_bound: float = 0.4
    max_length_growth: float = 0.25
    # The drift budget: how far a round may move from what it replaces besides winning votes.
    max_cut_share_growth: float = 0.10  # the share of answers cut at the token limit may rise this much at most
    max_kl_per_token: float = 0.5  # KL to the round's reference (nats per answer token) on its own eval answers
    # and to base, the lineage's first version, on the same answers: rounds each within the budget above still add
    # up, round after round, when each takes the version before it as its reference
    max_kl_to_base_per_token: float = 1.0

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        win, low, longer = (f"{x:.{_exact(x)}%}" for x in (self.min_win_rate, self.min_lower_bound,
                                                            self.max_length_growth))
        cut = _points(self.max_cut_share_growth, _exact(self.max_cut_share_growth), sign=False)
        return (f"at least {self.min_votes} blind votes against the current version (on as many pairs of answers: "
                f"several voters on the same two answers count once, at their mean), win rate ≥ "
                f"{win} with the 95% interval's lower end ≥ {low}, answers "
                f"at most {longer} longer, the share cut at the token limit up by at most "
                f"{cut} (both against the current version's answers, or base's where "
                f"those are longer or cut more often), KL to the reference at most {self.max_kl_per_token:g} nats "
                f"a token and to base at most {self.max_kl_to_base_per_token:g}")


@dataclass
class GateEvidence:
    """Blind votes of candidate against current on the same eval prompts, and the two versions' answer lengths."""

    candidate_wins: int = 0
    current_wins: int = 0
    ties: int = 0
    both_bad: int = 0
    candidate_tokens: float | None = None  # mean answer tokens on the voted prompts
    current_tokens: float | None = None
    candidate_truncated: int = 0  # answers that stopped at the token limit
    current_truncated: int = 0
    answers: int = 0  # answers per version the lengths are measured on
    # Base's answers on the same prompts (when the current version is not base): the length and cut bounds hold a
    # round against the longer (the more often cut) of the current version and base, so a round that returns toward
    # base after a round that collapsed to short answers is not kept out for it.
    base_tokens: float | None = None
    base_truncated: int = 0
    base_answers: int = 0
    # the round's KL to its reference, nats per answer (the next-token KL over the vocabulary, summed over the answer)
    kl_to_reference: float | None = None
    kl_answer_tokens: float | None = None  # mean tokens of the answers that KL was measured on
    kl_to_base: float | None = None  # the same answers' KL to base, nats per answer (the reference's, where it is base)
    sources: list[str] = field(default_factory=list)  # who voted: judge paths, "people"
    # The pairs of answers voted on, and the candidate's score summed over them (each pair's mean over its voters, a
    # tie or both-bad half). Several voters on the same two answers are one observation of them, not several: counted
    # as independent votes, a person and a judge on 8 pairs passed a 16-vote minimum with a narrower interval. None:
    # one vote per pair (the counts above alone).
    pairs: int | None = None
    pair_score: float | None = None

    @property
    def votes(self) -> int:
        return self.candidate_wins + self.current_wins + self.ties + self.both_bad

    @property
    def n(self) -> int:
        """The independent observations the rate and its interval rest on: the pairs of answers voted on."""
        return self.votes if self.pairs is None else self.pairs

    @property
    def score(self) -> float:
        if self.pair_score is not None:
            return self.pair_score
        return self.candidate_wins + 0.5 * (self.ties + self.both_bad)

    @property
    def win_rate(self) -> float:
        return self.score / self.n if self.n else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.score, self.n)

    @property
    def counted(self) -> str:
        """What the rate is on: "16 votes", or "8 pairs of answers (16 votes)" where several voters voted on one."""
        if self.n == self.votes:
            return f"{self.votes} vote{'s' if self.votes != 1 else ''}"
        return (f"{self.n} pair{'s' if self.n != 1 else ''} of answers ({self.votes} votes; several voters on the "
                "same two answers count once, at their mean)")

    @property
    def cut_share_growth(self) -> float | None:
        """The rise in the share of cut answers over the current version's (over base's where base's is higher)."""
        if not self.answers:
            return None
        return (self.candidate_truncated - self.current_truncated) / self.answers - self.base_cut_allowance

    @property
    def base_cut_allowance(self) -> float:
        if not self.base_answers:
            return 0.0
        return max(0.0, self.base_truncated / self.base_answers - self.current_truncated / self.answers)

    @property
    def length_anchor(self) -> str:
        """Whose mean length the bound holds the candidate to: "current", or "base" where base's answers are longer."""
        if self.base_tokens is not None and self.current_tokens and self.base_tokens > self.current_tokens:
            return "base"
        return "current"

    @property
    def kl_per_token(self) -> float | None:
        if self.kl_to_reference is None or not self.kl_answer_tokens:
            return None
        return self.kl_to_reference / self.kl_answer_tokens

    @property
    def kl_to_base_per_token(self) -> float | None:
        if self.kl_to_base is None or not self.kl_answer_tokens:
            return None
        return self.kl_to_base / self.kl_answer_tokens

    @property
    def length_growth(self) -> float | None:
        if not self.current_tokens or self.candidate_tokens is None:
            return None
        return self.candidate_tokens / self.current_tokens - 1

    @property
    def bounded_length_growth(self) -> float | None:
        """The growth the length bound reads: over the current version's mean, or base's where that is longer."""
        if self.length_growth is None:
            return None
        if self.length_anchor == "base":
            return self.candidate_tokens / self.base_tokens - 1
        return self.length_growth

    def as_dict(self) -> dict:
        low, high = self.interval
        # a measured figure that is no number is stored as none (JSON has no NaN; PostgreSQL's jsonb refuses it)
        fields = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in asdict(self).items()}
        return {**fields, "votes": self.votes, "n": self.n, "win_rate": _round(self.win_rate),
                "ci95": [_round(low), _round(high)], "length_growth": _round(self.length_growth),
                "bounded_length_growth": _round(self.bounded_length_growth), "length_anchor": self.length_anchor,
                "cut_share_growth": _round(self.cut_share_growth), "kl_per_token": _round(self.kl_per_token),
                "kl_to_base_per_token": _round(self.kl_to_base_per_token)}


@dataclass
class GateResult:
    passed: bool
    reasons: list[str]  # why it failed, or what it passed on

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def decide(evidence: GateEvidence, rule: GateRule) -> GateResult:
    """Pass when every bound holds; the reasons name each bound missed, with the measured figure."""
    n = evidence.n
    if n < rule.min_votes:
        has = (f"has {n}" if n == evidence.votes else
               f"has {n} pairs of answers voted on ({evidence.votes} votes; several voters on the same two answers "
               "count once)")
        return GateResult(False, [f"needs {rule.min_votes} blind votes against the current version, {has}"])
    failed = []
    rate, (low, high) = evidence.win_rate, evidence.interval
    d = _digits((rate, rule.min_win_rate), (low, rule.min_lower_bound))
    measured = f"win rate {rate:.{d}%} [{low:.{d}%}, {high:.{d}%}] on {evidence.counted}"
    if rate < rule.min_win_rate - AT_BOUND:
        failed.append(f"{measured} is below {rule.min_win_rate:.{d}%}")
    elif low < rule.min_lower_bound - AT_BOUND:
        failed.append(f"{measured}: the interval's lower end is below {rule.min_lower_bound:.{d}%}")
    growth = evidence.length_growth
    length = ""
    if growth is not None:
        bounded = evidence.bounded_length_growth
        d = _digits((bounded, rule.max_length_growth))
        length = (f"answers {evidence.current_tokens:.1f} → {evidence.candidate_tokens:.1f} tokens "
                  f"({growth:+.{d}%})")
        if evidence.length_anchor == "base":
            length += f", base's {evidence.base_tokens:.1f} ({bounded:+.{d}%} on base's, the longer)"
        if bounded > rule.max_length_growth + AT_BOUND:
            failed.append(f"{length} grew more than {rule.max_length_growth:.{d}%}")
    drift = []
    cut = evidence.cut_share_growth
    if cut is not None:
        shown = (f"answers cut at the token limit {evidence.current_truncated} → {evidence.candidate_truncated} "
                 f"of {evidence.answers}")
        if evidence.base_cut_allowance:
            shown += (f" (base's {evidence.base_truncated} of {evidence.base_answers}, the higher share: "
                      f"{_points(cut, 0)} on it)")
        drift.append(shown)
        if cut > rule.max_cut_share_growth + AT_BOUND:
            d = _digits((cut, rule.max_cut_share_growth))
            failed.append(f"{shown}: the cut share rose {_points(cut, d)}, more than "
                          f"{_points(rule.max_cut_share_growth, d, sign=False)}")
    kl, to_base = evidence.kl_per_token, evidence.kl_to_base_per_token
    # not measured (its run ended before measuring it, no eval prompts, a failed measurement): said, not hidden
    if kl is None and to_base is None:
        drift.append("KL not measured: the drift budget was not checked")
    # each bound: its figures, its name, what it checks, and what its budget is measured from (said when it is over)
    for per_token, per_answer, bound, what, over, budget_from in (
            (kl, evidence.kl_to_reference, rule.max_kl_per_token, "KL to the reference", "the step from the reference",
             ""),
            (to_base, evidence.kl_to_base, rule.max_kl_to_base_per_token, "KL to base", "the drift from base",
             " from base (the rounds' drift added up)")):
        if per_token is None:
            if kl is not None or to_base is not None:
                drift.append(f"{what} not measured: {over} was not checked")
            continue
        if not math.isfinite(per_token):  # a measurement that broke is no figure a bound can pass
            shown = f"{what} measured as {per_answer} nats an answer"
            drift.append(shown)
            failed.append(f"{shown}: not a finite figure, so {over} cannot be shown within its budget")
            continue
        g = _significant(per_token, bound)
        shown = f"{what} {per_answer:.3g} nats an answer ({per_token:.{g}g} a token)"
        drift.append(shown)
        if per_token > bound + AT_BOUND:
            failed.append(f"{shown}: over the budget of {bound:g} nats a token{budget_from}")
    if failed:
        return GateResult(False, failed)
    return GateResult(True, [measured] + ([length] if length else []) + drift)


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 4)


def _significant(value: float, bound: float) -> int:
    """Significant digits for a figure shown beside its bound: the fewest (3 to 8) at which it does not read as the
    bound while differing from it (a KL of 0.5004 a token is "0.5004", never "0.5 a token: over the budget of 0.5")."""
    for digits in range(3, 9):
        if value == bound or f"{value:.{digits}g}" != f"{bound:.{digits}g}":
            return digits
    return 9


def _points(change: float, digits: int, *, sign: bool = True) -> str:
    """A difference between two shares in percentage points ("+70 points"): written "+70%", it read as a relative
    rise (the cut share from 20% to 90% is +70 points, +350%)."""
    number = f"{100 * change:{'+' if sign else ''}.{digits}f}"
    return f"{number} point{'' if number.lstrip('+-') == '1' else 's'}"


def _exact(share: float) -> int:
    """Decimals (up to 3) that write a bound given as a share in per cent as it is: a win rate of at least 0.425 is
    "42.5%", never "42%" (a rate of 42.2% is below it)."""
    for digits in range(3):
        if abs(round(100 * share, digits) - 100 * share) < 1e-9:
            return digits
    return 3


def _digits(*pairs: tuple[float, float]) -> int:
    """Decimals for percentages shown beside their bounds: the fewest (up to 3) at which no figure reads as its bound
    while differing from it (49.75% against 50% is "49.8%", never "50% is below 50%")."""
    for digits in range(4):
        if all(value == bound or f"{value:.{digits}%}" != f"{bound:.{digits}%}" for value, bound in pairs):
            return digits
    return 3
