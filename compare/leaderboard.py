"""The leaderboard: votes from the database aggregated into matchups, fitted by `compare.ratings`."""
from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import defaultdict
from dataclasses import astuple, dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

from django.core.cache import cache

from generation.length import VersionLength, version_lengths
from generation.models import ModelVersion

from . import blinding, ratings
from .models import Vote

LENGTH_BIN = 0.05  # votes whose length covariates round to the same bin share one matchup row
# A length coefficient fitted on a handful of votes is noise ("+5883 points per unit" on 6 votes): the
# length-controlled columns say "needs N votes" until there are this many votes per fitted parameter.
LC_VOTES_PER_PARAMETER = 20
# A cached fit is keyed by the fitting code too: a change to compare/ratings.py never serves a fit of the old code.
FIT_CODE = hashlib.sha256(Path(ratings.__file__).read_bytes()).hexdigest()
FIT_CACHE_SECONDS = 7 * 24 * 3600
FIT_WAIT_SECONDS = 60  # how long a request waits on another's fit of the same votes before fitting them itself
FIT_POLL_SECONDS = 0.05
log = logging.getLogger(__name__)


@dataclass
class Row:
    version: str
    round: int
    rating: float
    low: float
    high: float
    lc_rating: float | None  # None until the length-controlled fit has enough votes (Board.lc_needs)
    lc_low: float | None
    lc_high: float | None
    votes: int
    mean_tokens: float | None
    length: VersionLength | None = None


@dataclass
class Cell:
    rate: float | None
    n: float = 0  # pairs of answers voted on (pair_win_rates)
    low: float = math.nan
    high: float = math.nan
    votes: int = 0

    @property
    def percent(self) -> int | None:
        # halves up, as the pages' floatformat rounds (Python's round() sends 62.5 to 62), on the rate's decimal
        # digits: 100 * 0.575 is 57.49999999999999 in floats, and floor(x + 0.5) showed 57%
        if self.rate is None:
            return None
        return int((Decimal(repr(self.rate)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass
class Board:
    rows: list[Row] = field(default_factory=list)
    anchor: str = ""
    votes: int = 0
    length_coef: float | None = None
    unrated: list[str] = field(default_factory=list)
    matrix: list[tuple[str, list[Cell]]] = field(default_factory=list)
    message: str = ""
    lc_needs: int = 0  # votes the length-controlled fit needs before it is shown; 0 when shown


def vote_rows(*, include_automatic: bool = False, with_answers: bool = False):
    """(version a, version b, outcome, tokens a, tokens b) of every vote between two versions, once per voter and
    pair of answers: sets with the same seed and settings reuse their answers, and a judge voting on two of them
    said one thing twice (people cannot: compare.blinding). An answer is its version, its prompt and its text
    (blinding.answer_of), not its row: the same words stored twice (another seed with greedy sampling, another
    token limit the answer ended before) are one answer. The voter's first verdict stands. `with_answers`: each row
    ends with the two answers it is on (the same for every voter on them)."""
    votes = Vote.objects.filter(
        comparison__response_a__version__isnull=False, comparison__response_b__version__isnull=False
    ).exclude(comparison__job__blind=False)  # a side-by-side set's votes, a judge's from before it was refused
    if not include_automatic:
        votes = votes.filter(is_automatic=False)
    found = list(votes.order_by("pk").values_list(  # a fixed order: the bootstrap draws row by row
        "voter_id", "comparison__response_a_id", "comparison__response_b_id",
        "comparison__response_a__version__name", "comparison__response_b__version__name", "outcome",
        "comparison__response_a__token_count", "comparison__response_b__token_count"))
    # the texts once per answer, not once per vote on it
    answers = blinding.answers_of({r[1] for r in found} | {r[2] for r in found})
    rows, seen = [], set()
    for voter, answer_a, answer_b, *row in found:
        # with the version: two versions' answers can be the same words, and each is a side of its own matchup
        pair = frozenset(((row[0], answers[answer_a]), (row[1], answers[answer_b])))
        if (voter, pair) not in seen:
            seen.add((voter, pair))
            rows.append((*row, pair) if with_answers else tuple(row))
    return rows


SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}


def pair_win_rates(rows) -> dict[tuple, tuple[float, int, int]]:
    """(row version, column version) -> (win rate, pairs of answers, votes) from vote_rows(with_answers=True):
    each pair of answers counts once, at its voters' mean (ties and both bad half), as the promotion gate counts
    it. Counted per vote, two people agreeing on 8 pairs and one disagreeing on 8 others read 67% with an interval
    from 47%, where the gate read the same votes as 50% from 28%: several voters on two answers are one
    observation of them, not several."""
    by_pair: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
    for a, b, outcome, _, _, answers in rows:
        if a == b:
            continue
        first, second = sorted((a, b), key=str)
        score = SCORE[outcome] if a == first else 1.0 - SCORE[outcome]
        by_pair[(first, second)][answers].append(score)
    table = {}
    for (first, second), pairs in by_pair.items():
        n, votes = len(pairs), sum(len(scores) for scores in pairs.values())
        won = float(sum((Fraction(sum(scores)) / len(scores) for scores in pairs.values()), Fraction(0)))
        table[(first, second)] = (won / n, n, votes)
        table[(second, first)] = ((n - won) / n, n, votes)
    return table


def length_diff(tokens_a: int, tokens_b: int) -> float:
    """(len a - len b) / (len a + len b): in [-1, 1], 0 for equal lengths."""
    total = tokens_a + tokens_b
    return (tokens_a - tokens_b) / total if total else 0.0


def matchups(rows) -> list[ratings.Matchup]:
    """Aggregate vote rows by (version a, version b, binned length covariate)."""
    index = {"a": 0, "b": 1, "tie": 2, "both_bad": 3}
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for a, b, outcome, tokens_a, tokens_b in rows:
        if a == b:
            continue
        binned = round(length_diff(tokens_a, tokens_b) / LENGTH_BIN) * LENGTH_BIN
        sums[(a, b, binned)][index[outcome]] += 1
    return [ratings.Matchup(a, b, *counts, length_diff=x) for (a, b, x), counts in sums.items()]


def fit(games: list[ratings.Matchup], **options) -> ratings.Fit:
    """`ratings.fit_ratings`, kept in the cache under a digest of exactly what it is given (the matchups in their
    order, and the options): a fit is a function of those alone, so it is never stale, and a page viewed again (the
    leaderboard, the rounds page, the API) reuses its 1,000 bootstrap refits instead of redoing them, seconds each
    with a few thousand votes over a dozen versions. Requests that miss the cache together fit once: the first marks
    the fit as under way (cache.add) and the others wait for its result, up to FIT_WAIT_SECONDS (then fit it
    themselves: the first may have died). Without a working cache it is simply fitted."""
    digest = hashlib.sha256(repr((FIT_CODE, [astuple(m) for m in games], sorted(options.items()))).encode())
    key = f"prefloop:bt-fit:{digest.hexdigest()}"
    cached = _cached(key)
    if cached is not None:
        return cached
    marker = key + ":fitting"
    try:
        first = cache.add(marker, True, timeout=FIT_WAIT_SECONDS)
    except Exception:
        first = True
    if not first:  # another request fits these very votes now: each one refitting was a second of a web worker each
        deadline = time.monotonic() + FIT_WAIT_SECONDS
        while time.monotonic() < deadline:
            time.sleep(FIT_POLL_SECONDS)
            cached = _cached(key)
            if cached is not None:
                return cached
            try:
                if not cache.get(marker):
                    break  # it ended without a result (it failed): fit here
            except Exception:
                break
    try:
        result = ratings.fit_ratings(games, **options)
        try:
            cache.set(key, result, timeout=FIT_CACHE_SECONDS)
        except Exception:
            log.warning("the cache could not be written", exc_info=True)
    finally:
        if first:
            try:
                cache.delete(marker)
            except Exception:
                pass
    return result


def _cached(key: str) -> ratings.Fit | None:
    try:
        cached = cache.get(key)
    except Exception:  # a cache that is down costs time, never the page
        log.warning("the cache could not be read; fitting the ratings again", exc_info=True)
        return None
    return cached if isinstance(cached, ratings.Fit) else None


def choose_anchor(names: set[str]) -> str:
    """The base version: the root of the current version's lineage if it has votes, else the earliest rated one."""
    current = ModelVersion.objects.current()
    if current is not None and current.lineage()[0].name in names:
        return current.lineage()[0].name
    for version in ModelVersion.objects.filter(name__in=names).order_by("round", "created"):
        return version.name
    return sorted(names)[0]


def build_board(*, include_automatic: bool = False, bootstrap: int = 1000, seed: int = 0) -> Board:
    voted = vote_rows(include_automatic=include_automatic, with_answers=True)
    if not voted:
        return Board(message="No votes between two versions yet.")
    rows = [row[:5] for row in voted]
    games = matchups(rows)
    names = {v for m in games for v in (m.a, m.b)}
    anchor = choose_anchor(names)
    raw = fit(games, anchor=anchor, bootstrap=bootstrap, seed=seed)
    controlled = fit(games, anchor=anchor, bootstrap=bootstrap, seed=seed, length_control=True)
    votes = defaultdict(int)
    for a, b, *_ in rows:
        votes[a] += 1
        votes[b] += 1
    # The fits use only the versions with a chain of votes to the anchor: the count shown and the votes the
    # length-controlled fit needs are theirs (votes among unrated versions fit nothing).
    rated = names - set(raw.unrated)
    fitted_votes = sum(1 for a, b, *_ in rows if a != b and a in rated and b in rated)
    lc = controlled.by_version()
    rounds = dict(ModelVersion.objects.filter(name__in=names).values_list("name", "round"))
    needed = lc_votes_needed(len(rated))
    fitted = fitted_votes >= needed
    board = Board(anchor=anchor, votes=fitted_votes, length_coef=controlled.length_coef if fitted else None,
                  unrated=raw.unrated, lc_needs=0 if fitted else needed)
    ids = dict(ModelVersion.objects.filter(name__in=names).values_list("name", "pk"))
    lengths = version_lengths(ids.values())
    for r in raw.ratings:
        c = lc[r.version]
        lc_fit = (c.rating, c.low, c.high) if fitted else (None, None, None)
        length = lengths.get(ids.get(r.version))
        board.rows.append(Row(r.version, rounds.get(r.version, 0), r.rating, r.low, r.high, *lc_fit,
                              votes[r.version], length.mean if length else None, length))
    order = [r.version for r in raw.ratings]
    rates = pair_win_rates(voted)
    for row in order:
        cells = []
        for col in order:
            rate, n, cast = rates.get((row, col), (None, 0, 0))
            low, high = ratings.wilson_interval(rate * n, n) if rate is not None else (math.nan, math.nan)
            cells.append(Cell(rate, n, low, high, cast))
        board.matrix.append((row, cells))
    return board


def lc_votes_needed(versions: int) -> int:
    """Votes the length-controlled fit needs before it is shown: LC_VOTES_PER_PARAMETER per fitted parameter (one
    rating per rated version but the anchor, plus the length coefficient)."""
    return LC_VOTES_PER_PARAMETER * max(1, versions)
