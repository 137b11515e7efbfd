"""Bradley–Terry ratings on small vote tables against closed forms and a direct maximum-likelihood search."""
import math

import numpy as np
import pytest

from compare.ratings import Matchup, RatingError, fit_ratings, log_likelihood, merge_pairs, wilson_interval


def elo(odds: float) -> float:
    return 400 * math.log10(odds)


def test_two_versions_match_the_closed_form():
    fit = fit_ratings([Matchup("new", "base", wins_a=3, wins_b=1)], anchor="base", pseudo_ties=0)
    by = fit.by_version()
    assert by["base"].rating == 1000
    assert by["new"].rating == pytest.approx(1000 + elo(3), abs=1e-6)


def test_ties_count_half_and_both_bad_counts_as_a_tie_by_default():
    plain = fit_ratings([Matchup("x", "y", 3, 1)], anchor="y", pseudo_ties=0).by_version()["x"].rating
    ties = fit_ratings([Matchup("x", "y", 2, 0, ties=2)], anchor="y", pseudo_ties=0).by_version()["x"].rating
    both_bad = fit_ratings([Matchup("x", "y", 2, 0, both_bad=2)], anchor="y", pseudo_ties=0).by_version()["x"].rating
    assert ties == pytest.approx(plain) and both_bad == pytest.approx(plain)
    dropped = fit_ratings([Matchup("x", "y", 3, 1, both_bad=50)], anchor="y", pseudo_ties=0, both_bad_as_tie=False)
    assert dropped.by_version()["x"].rating == pytest.approx(plain)


def _direct_loglik(theta: dict, table: list[Matchup]) -> float:
    """Written out from the definition: ties half a win each, P(a beats b) = 1 / (1 + exp(theta_b - theta_a))."""
    total = 0.0
    for m in table:
        p = 1 / (1 + math.exp(theta[m.b] - theta[m.a]))
        wins_a = m.wins_a + (m.ties + m.both_bad) / 2
        wins_b = m.wins_b + (m.ties + m.both_bad) / 2
        total += wins_a * math.log(p) + wins_b * math.log(1 - p)
    return total


def _pattern_search(free: list[str], anchor: str, table: list[Matchup]) -> dict:
    """Maximise the log-likelihood by coordinate steps that shrink: slow, simple, independent of the Newton fit."""
    theta = dict.fromkeys([anchor, *free], 0.0)
    step = 1.0
    best = _direct_loglik(theta, table)
    while step > 1e-7:
        improved = False
        for name in free:
            for sign in (1, -1):
                trial = dict(theta, **{name: theta[name] + sign * step})
                value = _direct_loglik(trial, table)
                if value > best + 1e-15:
                    theta, best, improved = trial, value, True
        if not improved:
            step /= 2
    return theta


TABLE = [
    Matchup("base", "r1", wins_a=12, wins_b=20, ties=5, both_bad=1),
    Matchup("r1", "r2", wins_a=9, wins_b=14, ties=2),
    Matchup("base", "r2", wins_a=4, wins_b=17, ties=1, both_bad=2),
    Matchup("r3", "r2", wins_a=6, wins_b=6, ties=3),
    Matchup("r3", "base", wins_a=11, wins_b=3),
]


def test_four_versions_match_a_direct_maximum_likelihood_search():
    fit = fit_ratings(TABLE, anchor="base", pseudo_ties=0).by_version()
    theta = _pattern_search(["r1", "r2", "r3"], "base", TABLE)
    for name in ("r1", "r2", "r3"):
        expected = 1000 + 400 * theta[name] / math.log(10)
        assert fit[name].rating == pytest.approx(expected, abs=1e-3), name
    # and the fitted ratings reach at least the likelihood the search found
    fitted = {k: (r.rating - 1000) * math.log(10) / 400 for k, r in fit.items()}
    assert _direct_loglik(fitted, TABLE) >= _direct_loglik(theta, TABLE) - 1e-9


def test_pseudo_ties_are_the_mle_with_half_a_tie_added_per_pair():
    fit = fit_ratings(TABLE, anchor="base").by_version()  # default: half a virtual tie per compared pair
    padded = TABLE + [Matchup(m.a, m.b, ties=0.5) for m in merge_pairs(TABLE)]
    theta = _pattern_search(["r1", "r2", "r3"], "base", padded)
    for name in ("r1", "r2", "r3"):
        assert fit[name].rating == pytest.approx(1000 + 400 * theta[name] / math.log(10), abs=1e-3)


def test_a_version_that_won_every_vote_gets_a_finite_rating():
    fit = fit_ratings([Matchup("new", "base", wins_a=5)], anchor="base").by_version()
    assert 1000 < fit["new"].rating < 2000  # 5.25 : 0.25 odds


def test_anchor_choice_only_shifts_the_scale_and_row_order_does_not_matter():
    by_base = fit_ratings(TABLE, anchor="base").by_version()
    by_r2 = fit_ratings(TABLE, anchor="r2", base=1500).by_version()
    assert by_r2["r2"].rating == 1500
    shift = by_r2["base"].rating - by_base["base"].rating
    for name in by_base:
        assert by_r2[name].rating - by_base[name].rating == pytest.approx(shift, abs=1e-6)
    flipped = [Matchup(m.b, m.a, m.wins_b, m.wins_a, m.ties, m.both_bad) for m in TABLE]
    for name, r in fit_ratings(flipped, anchor="base").by_version().items():
        assert r.rating == pytest.approx(by_base[name].rating, abs=1e-6)


def test_length_control_recovers_equal_strength_when_the_longer_answer_wins():
    # a and b are equally good, but voters prefer the longer answer: logit = 2 * length_diff, and a is usually longer.
    rows = []
    for x, n in ((0.5, 400), (0.3, 300), (0.1, 200), (-0.2, 100)):
        p = 1 / (1 + math.exp(-2 * x))
        rows.append(Matchup("a", "b", wins_a=n * p, wins_b=n * (1 - p), length_diff=x))
    raw = fit_ratings(rows, anchor="b", pseudo_ties=0)
    controlled = fit_ratings(rows, anchor="b", pseudo_ties=0, length_control=True)
    assert raw.by_version()["a"].rating > 1050  # the raw rating rewards length
    assert controlled.by_version()["a"].rating == pytest.approx(1000, abs=1e-6)
    assert controlled.length_coef == pytest.approx(400 * 2 / math.log(10), abs=1e-6)


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_more_votes():
    small = fit_ratings(TABLE, anchor="base", bootstrap=500, seed=1).by_version()
    big_table = [Matchup(m.a, m.b, m.wins_a * 10, m.wins_b * 10, m.ties * 10, m.both_bad * 10) for m in TABLE]
    big = fit_ratings(big_table, anchor="base", bootstrap=500, seed=1).by_version()
    assert small["base"].low == small["base"].high == 1000
    for name in ("r1", "r2", "r3"):
        assert small[name].low < small[name].rating < small[name].high
        assert big[name].low < big[name].rating < big[name].high
        assert (big[name].high - big[name].low) < 0.5 * (small[name].high - small[name].low)
    again = fit_ratings(TABLE, anchor="base", bootstrap=500, seed=1).by_version()
    assert again["r1"].low == small["r1"].low  # seeded: the same intervals on every page load


def test_bootstrap_of_thousands_of_votes_uses_the_aggregated_counts():
    rng = np.random.default_rng(0)
    names = [f"v{k}" for k in range(8)]
    table = [Matchup(a, b, *rng.integers(20, 80, size=4)) for i, a in enumerate(names) for b in names[i + 1:]]
    assert sum(m.total for m in table) > 4000
    fit = fit_ratings(table, anchor="v0", bootstrap=1000, length_control=False)
    assert all(r.low <= r.rating <= r.high for r in fit.ratings)


def test_versions_without_a_chain_of_votes_to_the_anchor_are_reported_not_rated():
    fit = fit_ratings([Matchup("a", "b", 2, 1), Matchup("c", "d", 1, 1)], anchor="a")
    assert {r.version for r in fit.ratings} == {"a", "b"}
    assert fit.unrated == ["c", "d"]


def test_bad_tables_give_clear_errors():
    with pytest.raises(RatingError, match="anchor version 'zz' has no votes"):
        fit_ratings(TABLE, anchor="zz")
    with pytest.raises(RatingError, match=r"matchup 1: wins_b=-1"):
        fit_ratings([Matchup("a", "b", 1, 1), Matchup("a", "b", 1, -1)], anchor="a")
    with pytest.raises(RatingError, match="compared with itself"):
        fit_ratings([Matchup("a", "a", 1, 1)], anchor="a")


def test_win_rate_matrix_counts_each_pair_of_answers_once_at_its_voters_mean():
    """The promotion gate's counting (GateEvidence.pairs): ties and both-bad half, every voter on two answers
    averaged into one observation of them."""
    from compare.leaderboard import pair_win_rates

    one, two, three = (frozenset({("a", f"x{k}"), ("b", f"y{k}")}) for k in range(3))
    rows = [("a", "b", "a", 1, 1, one), ("a", "b", "a", 1, 1, one),  # two voters agree on the first pair
            ("b", "a", "a", 1, 1, two),  # b won the second (a vote with b on side a)
            ("a", "b", "tie", 1, 1, three), ("a", "b", "b", 1, 1, three)]  # a tie and a loss: a quarter
    rates = pair_win_rates(rows)
    assert rates[("a", "b")] == (pytest.approx((1 + 0 + 0.25) / 3), 3, 5)
    assert rates[("b", "a")] == (pytest.approx((0 + 1 + 0.75) / 3), 3, 5)


def test_wilson_interval_known_values():
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.3968, abs=1e-4) and high == pytest.approx(0.8922, abs=1e-4)
    assert wilson_interval(0, 5)[0] == 0.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_log_likelihood_is_maximal_at_the_newton_fit():
    from compare.ratings import newton_fit

    design = np.array([[1.0, 0.0], [1.0, -1.0], [0.0, 1.0]])
    wins, totals = np.array([[7.0, 5.0, 2.0]]), np.array([[10.0, 9.0, 8.0]])
    theta = newton_fit(design, wins, totals)[0]
    best = log_likelihood(theta, design, wins[0], totals[0])
    for delta in ((1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)):
        assert log_likelihood(theta + np.array(delta), design, wins[0], totals[0]) < best


def test_an_interval_covers_the_true_rating_when_one_version_wins_every_vote():
    """Redrawing votes from the observed shares made the interval of a version that won all of few votes a single
    point, which missed the true rating whenever that happened. Coverage over many small samples of a lopsided
    pair (true win chance 0.9, 8 votes: all won 43% of the time) must come near the stated 95%."""
    rng = np.random.default_rng(0)
    p, n, trials = 0.9, 8, 200
    truth = 1000 + elo(p / (1 - p))
    covered = swept = 0
    for t in range(trials):
        wins = int(rng.binomial(n, p))
        rating = fit_ratings([Matchup("new", "base", wins, n - wins)], anchor="base", bootstrap=400,
                             seed=t).by_version()["new"]
        covered += rating.low <= truth <= rating.high
        if wins == n:
            swept += 1
            assert rating.high - rating.low > 100, rating  # a wide interval, not a point
    assert swept > 50
    assert covered / trials >= 0.88, covered / trials


def test_the_prior_is_a_version_pairs_once_and_real_ties_are_drawn_too():
    """Length control splits a pair's votes into rows by length difference: half a win each way on every row gave
    24 straight wins over 11 rows 5.5 prior losses, and the interval left out its own rating. A pair whose real
    votes were all ties was taken for the pseudo-ties (fixed) and its interval was one point."""
    rows = [Matchup("new", "base", 2, 0, length_diff=d / 10) for d in range(-5, 6)] + [
        Matchup("new", "base", 1, 0, length_diff=0.05)] * 2
    lc = fit_ratings(rows, anchor="base", length_control=True, bootstrap=1000, seed=1).by_version()["new"]
    assert 1000 < lc.low <= lc.rating <= lc.high
    ties = fit_ratings([Matchup("new", "base", 0, 0, ties=8)], anchor="base", bootstrap=1000, seed=1).by_version()["new"]
    assert ties.rating == pytest.approx(1000) and ties.low < 1000 - 20 and ties.high > 1000 + 20


def test_length_controlled_intervals_cover_the_true_rating_with_votes_spread_over_length_bins():
    """Length control splits a pair's votes into rows by length difference, most of one to three votes. Drawn row by
    row, a one-vote row kept its vote in every replicate, and the intervals covered the true rating about three times
    in four (111 of 150 here). The pair's votes are now drawn together (_bootstrap_counts): 140 of 150."""
    from compare.leaderboard import LENGTH_BIN

    rng = np.random.default_rng(1)
    theta, beta, n, trials = 0.5, 1.0, 30, 150
    truth = 1000 + elo(math.exp(theta))
    covered, rows_seen = 0, []
    for t in range(trials):
        sums: dict[float, list[int]] = {}
        for x in rng.uniform(-0.5, 0.5, size=n):
            x = round(x / LENGTH_BIN) * LENGTH_BIN
            won = rng.random() < 1 / (1 + math.exp(-(theta + beta * x)))
            sums.setdefault(x, [0, 0])[0 if won else 1] += 1
        rows_seen.append(len(sums))
        table = [Matchup("new", "base", a, b, length_diff=x) for x, (a, b) in sums.items()]
        rating = fit_ratings(table, anchor="base", length_control=True, bootstrap=300, seed=t).by_version()["new"]
        covered += rating.low <= truth <= rating.high
    assert np.median(rows_seen) >= 15  # about two votes a row: the case the test is about
    assert covered / trials >= 0.87, covered / trials


def test_requests_that_miss_the_cache_together_fit_the_same_votes_once(monkeypatch):
    """Each vote makes a new fit (a digest of the votes); requests for the pages after it each refitted it, a second
    or more of a web worker each with a few thousand votes, so one vote and a burst of page loads held every worker."""
    import threading
    import time

    from django.core.cache import cache

    from compare import leaderboard, ratings
    from tests.threads import run_at_once

    cache.clear()
    fits, results, started = [], {}, threading.Event()
    real = ratings.fit_ratings

    def slow_fit(*args, **kwargs):
        fits.append(threading.current_thread().name)
        started.set()
        time.sleep(0.5)  # the first request is still fitting when the others arrive
        return real(*args, **kwargs)

    monkeypatch.setattr(ratings, "fit_ratings", slow_fit)
    games = [Matchup("new", "base", wins_a=3, wins_b=1)]

    def load(name):
        if name != "first":
            started.wait(10)
        results[name] = leaderboard.fit(games, anchor="base", bootstrap=10)

    assert run_at_once({name: (lambda name=name: load(name)) for name in ("first", "second", "third")}) == []
    assert fits == ["first"]
    assert results["second"].by_version() == results["third"].by_version() == results["first"].by_version()
    # a fit that fails leaves no one waiting on it: the next request fits at once
    other = [Matchup("x", "y", wins_a=1, wins_b=1)]

    def failing(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(ratings, "fit_ratings", failing)
    with pytest.raises(RuntimeError):
        leaderboard.fit(other, anchor="y", bootstrap=10)
    monkeypatch.setattr(ratings, "fit_ratings", real)
    began = time.monotonic()
    assert leaderboard.fit(other, anchor="y", bootstrap=10).by_version()["y"].rating == 1000
    assert time.monotonic() - began < leaderboard.FIT_WAIT_SECONDS / 4


def test_an_interval_covers_a_far_stronger_versions_true_rating():
    """The half tie added per pair stayed fixed in every redraw, so no interval reached further than
    400·log10((n + 0.25) / 0.25) points from the anchor: 16 straight wins against a version that wins 1% of the time
    (800 points) gave intervals that never covered the true rating. A collapsed round against base is this case."""
    rng = np.random.default_rng(0)
    p, n, trials = 0.99, 16, 80
    truth = 1000 + elo(p / (1 - p))
    covered = 0
    for t in range(trials):
        wins = int(rng.binomial(n, p))
        rating = fit_ratings([Matchup("new", "base", wins, n - wins)], anchor="base", bootstrap=300,
                             seed=t).by_version()["new"]
        assert rating.low <= rating.rating <= rating.high
        covered += rating.low <= truth <= rating.high
    assert covered / trials >= 0.88, covered / trials


def test_a_long_chain_of_lopsided_versions_is_fitted_to_convergence():
    """Each Newton step moves a parameter at most 2 nats, and 100 of them stopped short of a chain of 60 versions
    each beating the one before 20 to 0: the last read 35,744 against its exact 46,040, with no word of it."""
    chain = [Matchup(f"v{k + 1:02d}", f"v{k:02d}", 20, 0) for k in range(59)]
    fit = fit_ratings(chain, anchor="v00").by_version()
    link = elo(20.25 / 0.25)  # half a tie added to each pair: 20.25 to 0.25
    assert fit["v59"].rating == pytest.approx(1000 + 59 * link, rel=1e-6)


def test_each_bootstrap_replicate_stops_once_it_has_converged(monkeypatch):
    """The batch of replicates ran until its slowest converged, up to max_iter: a collapsed version that always lost
    with the shorter answer (length separates its votes: no maximum) ran all 2,000 Newton steps on every call of the
    leaderboard, and a chain of lopsided versions over a thousand, each on all 1,000 replicates."""
    from compare import ratings

    solved = []
    real = np.linalg.solve

    def counting(a, b):
        solved.append(a.shape[0])
        return real(a, b)

    monkeypatch.setattr(ratings.np.linalg, "solve", counting)
    rng = np.random.default_rng(0)
    collapsed = [Matchup("base", "bad", 1, 0, length_diff=float(x)) for x in rng.uniform(0.05, 0.9, 64)]
    fit_ratings(collapsed, anchor="base", bootstrap=200, length_control=True)
    # replicate-steps (each replicate's Newton steps, summed): the batch ran 2,000 steps on all 200
    assert sum(solved) < 200 * 100, sum(solved)
    solved.clear()
    fit_ratings([Matchup(f"v{k + 1}", f"v{k}", 16, 0) for k in range(19)], anchor="v0", bootstrap=200)
    assert sum(solved) < 200 * 100, sum(solved)  # replicate-steps: most replicates converge in a few dozen
