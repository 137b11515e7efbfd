"""How often the leaderboard's "95%" rating intervals cover a version's true rating, on simulated votes between two
versions of known strength, side by side with the draws as they were before e05c40f (the half pseudo-tie per pair
kept in every redraw, which held each interval within 400·log10((n + 0.25) / 0.25) points of the anchor).

    .venv/bin/python bench/rating_coverage.py [--trials 150] [--bootstrap 400] [--write]

Each cell: `trials` samples of `votes` votes where the stronger version wins each with chance p; the share of
samples whose interval holds the true rating 1000 + 400·log10(p / (1 - p)), and the median interval width.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.report import machine_line, write_section  # noqa: E402
from compare import ratings  # noqa: E402
from compare.ratings import Matchup, fit_ratings  # noqa: E402

CELLS = [(0.5, 16), (0.75, 16), (0.9, 8), (0.99, 16), (0.99, 32), (0.997, 16), (0.997, 64)]


def pseudo_ties_kept(draw):
    """The earlier draws: the pseudo-tie rows at their fixed counts in every replicate."""
    def drawn(problem, replicates, seed):
        draws = draw(problem, replicates, seed)
        draws[:, problem.virtual] = problem.outcome_counts[problem.virtual]
        return draws
    return drawn


def cell(p: float, votes: int, trials: int, bootstrap: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    truth = 1000 + 400 * math.log10(p / (1 - p))
    covered, widths = 0, []
    for t in range(trials):
        wins = int(rng.binomial(votes, p))
        r = fit_ratings([Matchup("new", "base", wins, votes - wins)], anchor="base", bootstrap=bootstrap,
                        seed=t).by_version()["new"]
        covered += r.low <= truth <= r.high
        widths.append(r.high - r.low)
    return covered / trials, float(np.median(widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--bootstrap", type=int, default=400)
    parser.add_argument("--write", action="store_true", help="write the table into docs/performance.md")
    args = parser.parse_args()
    if args.trials < 1 or args.bootstrap < 10:
        parser.error("--trials must be at least 1 and --bootstrap at least 10")
    now = ratings._bootstrap_counts
    lines = [f"Machine: {machine_line()}",
             "dtype: none (no model runs in this benchmark: the ratings are fitted in numpy float64)", "",
             "| true win chance | votes | true gap (points) | coverage now | coverage before | width now | width before |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for p, votes in CELLS:
        ours = cell(p, votes, args.trials, args.bootstrap)
        ratings._bootstrap_counts = pseudo_ties_kept(now)
        try:
            before = cell(p, votes, args.trials, args.bootstrap)
        finally:
            ratings._bootstrap_counts = now
        gap = 400 * math.log10(p / (1 - p))
        lines.append(f"| {p} | {votes} | {gap:.0f} | {ours[0]:.2f} | {before[0]:.2f} | {ours[1]:.0f} | {before[1]:.0f} |")
    lines.append("")
    lines.append(f"{args.trials} samples a cell, {args.bootstrap} redraws an interval; stated coverage 0.95.")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section("Rating interval coverage", table)


if __name__ == "__main__":
    main()
